'''Assignment mode: a student copy of minigen with the lecture's key lines left for the student to write.

The source marks those lines, sparsely, inside the functions that implement each idea:

    def reparameterize(mu, logvar, generator=None):
        """..."""
        # BEGIN SOLUTION vae: draw eps from resolve(generator), then build z from mu, logvar and eps
        eps = resolve(generator).normal(mu.shape, dtype=mu.dtype)
        return mu + (logvar * 0.5).exp() * eps
        # END SOLUTION

Two commands make and grade an assignment:

    minigen assign make --topics autograd,conv,vae --out DIR
        copies minigen/, tests/, setup.cfg and pyproject.toml to DIR; for the chosen topics the
        marked lines become `raise NotImplementedError("vae: <hint>")`, for the others only the
        marker comments go. DIR/README.md tells the student what to write; DIR/assignment.json
        records the topics.
    minigen assign check DIR [--topic vae] [--no-sandbox]
        runs each topic's subset of the teacher's tests (TOPIC_TESTS, from the installed minigen's
        checkout) against only the copy's minigen/ folder, in the bubblewrap sandbox where `import
        minigen` is the student's (checked, not assumed), and prints a score per topic: tests passed /
        tests run, judged against the reference solution where the installed checkout has it. The
        copy's tests/, conftest.py etc. are ignored (minigen.tools.grade).
    minigen assign grade SUBMISSIONS --out gradebook.csv --topics T1,T2 [--workers N | --scheduler ADDRESS]
        the same for every student's folder, in parallel, with time and memory limits (minigen.tools.grade).

A copy made with no topics is the reference solution: every topic's tests pass on it.
'''
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass

from minigen.errors import MinigenError

__all__ = ["TOPIC_TESTS", "Solution", "find_solutions", "strip_solutions", "all_solutions", "source_root", "make",
           "check", "main"]

# topic -> the tests of the project that exercise the marked code (pytest node ids). Each one must
# fail while the topic's lines are missing and pass with the reference solution (tests/tools/test_assign.py).
TOPIC_TESTS: dict[str, list[str]] = {
    "autograd": [
        "tests/engine/test_tensor_ops.py::test_gradcheck[add]",        # broadcast (3, 4) + (4,): unbroadcast
        "tests/engine/test_tensor_ops.py::test_gradcheck[mul]",
        "tests/engine/test_tensor_ops.py::test_gradcheck[div]",
        "tests/engine/test_tensor_ops.py::test_gradcheck[softmax]",
        "tests/engine/test_tensor_ops.py::test_gradcheck[matmul]",
        "tests/engine/test_tensor_ops.py::test_broadcast_gradients",
    ],
    # the NumPy reference against the independent im2col Numba kernel (itself checked by finite
    # differences) and against the reference transposed conv (the adjoint identity)
    "conv": [
        "tests/kernels/test_kernels.py::test_conv2d_matches_reference",
        "tests/kernels/test_kernels.py::test_conv_reference_backward_is_the_adjoint",
        "tests/kernels/test_kernels.py::test_conv_many_chunks_and_float32",
        "tests/kernels/test_kernels.py::test_conv_accepts_non_contiguous_input_and_skips_unwanted_grads",
    ],
    "vae": [
        "tests/models/test_vae.py::test_reparameterized_samples_have_the_right_mean_and_variance",
        "tests/models/test_vae.py::test_the_pathwise_gradient_of_a_quadratic_matches_the_analytic_one",
        "tests/models/test_vae.py::test_the_analytic_kl_matches_a_monte_carlo_estimate",
        "tests/models/test_vae.py::test_the_importance_weighted_estimate_matches_the_exact_likelihood_of_a_1d_latent_model",
        "tests/models/test_vae.py::test_training_a_tiny_vae_lowers_its_negative_elbo[mlp]",
    ],
    "flow": [
        *(f"tests/models/test_flow.py::test_log_det_equals_slogdet_of_the_numerical_jacobian[{seed}-{kind}]"
          for seed in (0, 1) for kind in ("checkerboard-mlp", "channel-mlp", "checkerboard-conv", "channel-conv")),
        "tests/models/test_flow.py::test_the_density_of_a_two_dimensional_flow_integrates_to_one",
        "tests/models/test_flow.py::test_the_whole_flow_inverts_both_ways[float64-mlp]",
        "tests/models/test_flow.py::test_the_whole_flow_inverts_both_ways[float64-conv]",
    ],
    "pixelcnn": [
        "tests/engine/test_nn_ops.py::test_causal_mask_rule",
        "tests/engine/test_nn_ops.py::test_masked_conv_is_causal",
        "tests/engine/test_nn_ops.py::test_gradcheck[masked_conv2d]",
        "tests/models/test_pixelcnn.py::test_each_logit_depends_only_on_earlier_pixels_end_to_end[bernoulli-False]",
    ],
    "ddpm": [
        "tests/models/test_ddpm.py::test_q_sample_matches_repeated_single_noising_steps",
        "tests/models/test_ddpm.py::test_x_T_is_standard_normal",
        "tests/models/test_ddpm.py::test_posterior_mean_and_variance_match_bayes_rule",
        "tests/models/test_ddpm.py::test_posterior_matches_simulated_pairs",
    ],
    "flowmatch": [
        "tests/models/test_flow_matching.py::test_the_path_starts_at_the_noise_ends_at_the_image_and_moves_at_the_target_velocity",
        "tests/models/test_flow_matching.py::test_the_exact_velocity_field_minimises_the_loss_on_the_toy",
        "tests/models/test_flow_matching.py::test_the_steps_use_the_velocity_as_written",
        "tests/models/test_flow_matching.py::test_euler_is_first_order_and_heun_second_order",
        "tests/models/test_flow_matching.py::test_training_regresses_the_network_on_the_velocity_target",
    ],
    "gan": [
        "tests/models/test_gan.py::test_one_discriminator_step_lowers_its_loss_on_the_same_batch",
        "tests/models/test_gan.py::test_one_generator_step_raises_the_discriminators_score_of_its_samples",
        "tests/models/test_gan.py::test_train_step_logs_both_players",
    ],
    "optim": [
        "tests/engine/test_nn_optim.py::test_adam_matches_hand_computation",
        "tests/engine/test_nn_optim.py::test_optimizer_state_round_trip",
    ],
}

COPIED = ("minigen", "tests", "setup.cfg", "pyproject.toml")   # a self-contained, installable package
MANIFEST = "assignment.json"
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<topic>[a-z_]+): (?P<hint>\S.*?)\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
DEF = re.compile(r"^(?P<indent>[ \t]*)(?:async\s+)?(?:def|class)\s+(?P<name>\w+)")


def source_root() -> str:
    """The folder that holds the minigen package being run (and, in a checkout, tests/)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- the markers: pure text -------------------------------------------------------------------
@dataclass
class Solution:
    """One marked block: lines [begin, end] (1-based, marker lines included) of `path`."""
    path: str
    topic: str
    hint: str
    begin: int
    end: int
    indent: str
    where: str          # the enclosing function, e.g. "AffineCoupling.forward"


def _enclosing(lines: list[str], index: int, indent: str) -> str:
    """The dotted name of the def/class blocks around lines[index], innermost last."""
    names, width = [], len(indent)
    for line in reversed(lines[:index]):
        m = DEF.match(line)
        if m and len(m["indent"]) < width:
            names.append(m["name"])
            width = len(m["indent"])
    return ".".join(reversed(names)) or "<module>"


def find_solutions(text: str, path: str) -> list[Solution]:
    """Every marked block in one file's text. A BEGIN without its END, an END without a BEGIN,
    nested or empty blocks, and marker-like lines with no topic or hint are MinigenErrors naming path:line."""
    lines = text.splitlines()
    found, open_block = [], None
    for number, line in enumerate(lines, start=1):
        m = BEGIN.match(line)
        if m:
            if open_block is not None:
                raise MinigenError(f"{path}:{number}: BEGIN SOLUTION inside the block opened at line {open_block[0]}")
            open_block = (number, m)
        elif END.match(line):
            if open_block is None:
                raise MinigenError(f"{path}:{number}: END SOLUTION without a BEGIN SOLUTION")
            start, m = open_block
            if number == start + 1:
                raise MinigenError(f"{path}:{start}: the solution block is empty")
            found.append(Solution(path, m["topic"], m["hint"], start, number, m["indent"],
                                  _enclosing(lines, start - 1, m["indent"])))
            open_block = None
        elif "BEGIN SOLUTION" in line and line.lstrip().startswith("#"):
            raise MinigenError(f"{path}:{number}: a marker must read '# BEGIN SOLUTION <topic>: <hint>', got "
                               f"{line.strip()!r}")
    if open_block is not None:
        raise MinigenError(f"{path}:{open_block[0]}: BEGIN SOLUTION without an END SOLUTION")
    return found


def strip_solutions(text: str, topics, path: str = "<text>") -> str:
    """The student's version of one file: each block of a topic in `topics` becomes one
    `raise NotImplementedError("<topic>: <hint>")` at the block's indentation; other blocks
    keep their code and lose only the two marker lines."""
    topics = set(topics)
    lines = text.splitlines(keepends=True)
    for s in sorted(find_solutions(text, path), key=lambda s: s.begin, reverse=True):
        if s.topic in topics:
            newline = "\n" if lines[s.end - 1].endswith("\n") else ""
            body = [f"{s.indent}raise NotImplementedError({f'{s.topic}: {s.hint}'!r}){newline}"]
        else:
            body = lines[s.begin:s.end - 1]
        lines[s.begin - 1:s.end] = body
    return "".join(lines)


def _python_files(root: str):
    """The package's .py files, except this one (its docstring shows a marker as an example)."""
    for folder, dirs, files in os.walk(os.path.join(root, "minigen")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            path = os.path.join(folder, name)
            if name.endswith(".py") and os.path.relpath(path, root) != os.path.join("minigen", "tools", "assign.py"):
                yield path


def all_solutions(root: str | None = None) -> list[Solution]:
    """Every marked block in the package's source, with paths relative to the source root."""
    root = root or source_root()
    solutions = []
    for path in _python_files(root):
        with open(path, encoding="utf-8") as f:
            solutions += find_solutions(f.read(), os.path.relpath(path, root))
    return solutions


def parse_topics(topics) -> list[str]:
    """'autograd,vae' or ['autograd', 'vae'] -> checked list in TOPIC_TESTS order (duplicates dropped)."""
    if isinstance(topics, str):
        topics = [t for t in topics.split(",") if t.strip()]
    topics = [t.strip() for t in topics]
    unknown = [t for t in topics if t not in TOPIC_TESTS]
    if unknown:
        raise MinigenError(f"unknown topic(s) {', '.join(map(repr, unknown))}; expected some of: "
                           f"{', '.join(TOPIC_TESTS)}")
    return [t for t in TOPIC_TESTS if t in topics]


# --- make --------------------------------------------------------------------------------------
def make(topics, out_dir: str, root: str | None = None) -> str:
    """Write the student copy for `topics` (a list or 'a,b,c'; empty: the reference solution)
    into out_dir, which must not exist or be empty. Returns out_dir."""
    root = root or source_root()
    topics = parse_topics(topics)
    missing = [p for p in COPIED if not os.path.exists(os.path.join(root, p))]
    if missing:
        raise MinigenError(f"assign make needs the source checkout: {', '.join(missing)} not found in {root}")
    solutions = all_solutions(root)
    marked = {s.topic for s in solutions}
    unmarked = [t for t in topics if t not in marked]
    if unmarked:
        raise MinigenError(f"topic(s) {', '.join(unmarked)}: no '# BEGIN SOLUTION <topic>: ...' marker in "
                           f"{os.path.join(root, 'minigen')}")
    stray = sorted({s.topic for s in solutions} - set(TOPIC_TESTS))
    if stray:
        raise MinigenError(f"markers name unknown topic(s) {', '.join(stray)}: "
                           + "; ".join(f"{s.path}:{s.begin}" for s in solutions if s.topic in stray))
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise MinigenError(f"--out {out_dir} already exists and is not an empty folder; choose a new one")

    os.makedirs(out_dir, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache", "*.egg-info")
    for name in COPIED:
        src, dst = os.path.join(root, name), os.path.join(out_dir, name)
        if os.path.isdir(src):
            shutil.copytree(src, dst, ignore=ignore)
        else:
            shutil.copy2(src, dst)
    for path in sorted({s.path for s in solutions}):
        with open(os.path.join(root, path), encoding="utf-8") as f:
            text = f.read()
        with open(os.path.join(out_dir, path), "w", encoding="utf-8") as f:
            f.write(strip_solutions(text, topics, path))
    todo = [s for s in solutions if s.topic in topics]
    with open(os.path.join(out_dir, MANIFEST), "w") as f:
        json.dump({"topics": topics, "todo": [f"{s.path}:{s.where}" for s in todo]}, f, indent=2)
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(_student_readme(topics, todo))
    return out_dir


def _student_readme(topics: list[str], todo: list[Solution]) -> str:
    lines = ["# minigen: your assignment", ""]
    if not topics:
        return "\n".join(lines + ["This copy holds the reference solution: nothing to write.", ""])
    lines += ["This is a working copy of minigen with some lines taken out. Each place raises",
              "`NotImplementedError` with a hint; replace the `raise` with your code. Read the",
              "function's docstring and the module's docstring first: they state the idea and the shapes.", ""]
    for topic in topics:
        lines += [f"## {topic}", ""]
        lines += [f"- `{s.path}`, `{s.where}`: {s.hint}" for s in todo if s.topic == topic]
        lines += ["", f"Check it with `minigen assign check . --topic {topic}`, which runs:", ""]
        lines += [f"- `{node}`" for node in TOPIC_TESTS[topic]]
        lines.append("")
    lines += ["Run every topic: `minigen assign check .` (from this folder; it runs the tests against",
              "this copy, whatever minigen is installed). `python -m pytest tests/...` works too.", ""]
    return "\n".join(lines)


# --- check: one copy, on the safe path of minigen.tools.grade -----------------------------------------
def check(student_dir: str, topic=None, verbose: bool = False, timeout: float | None = None,
          memory_mb: int | None = None, sandbox: bool = True) -> dict:
    """Run the teacher's tests of `topic` ('a,b', a list, or None: the assignment's topics) against
    only the minigen/ folder of the copy in student_dir, in the sandbox, judged against the
    reference solution where this checkout has it (minigen.tools.grade); print and return
    {topic: {"passed", "total", "failed": [(test, first error line)]}}."""
    from minigen.tools.grade import NO_SANDBOX_WARNING, grade_submission, judged_jobs, read_submission, summarize_ignored
    from minigen.tools.sandbox import check_sandbox
    student_dir = os.path.abspath(student_dir)
    submission = read_submission(student_dir)
    if not os.path.isdir(os.path.join(student_dir, "minigen")) or \
            not os.path.exists(os.path.join(student_dir, MANIFEST)):
        raise MinigenError(f"{student_dir} is not a copy made by `minigen assign make` (no minigen/ or {MANIFEST})")
    if submission.refused:
        raise MinigenError(f"{student_dir}: {submission.refused[1]}")
    if topic is None:
        topics = submission.topics
        if not topics:
            raise MinigenError(f"{student_dir} holds the reference solution (no topics); name one with --topic")
    else:
        topics = parse_topics(topic)
    if sandbox:
        check_sandbox()
    else:
        print(NO_SANDBOX_WARNING, file=sys.stderr, flush=True)
    [job] = judged_jobs([submission], topics, timeout=timeout, memory_mb=memory_mb, sandbox=sandbox,
                        need_judge=False, use_dask=False)
    if job["reference"] is None:
        print("self-check: no reference solution here, so the scores are the tests' own word "
              "(the teacher's grading also compares your functions' results with the reference's)", flush=True)
    result = grade_submission(job)
    if submission.ignored:
        print(f"ignored (only minigen/ is graded): {summarize_ignored(submission.ignored)}", flush=True)
    if result["status"] != "graded":
        print(f"{result['status']}: {result['note']}", flush=True)
    for t, score in result["topics"].items():
        print(f"{t:<10} {score['passed']:>3}/{score['total']:<3} passed", flush=True)
        for name, message in score["failed"] if verbose else []:
            print(f"    failed: {name}: {message}")
    return result["topics"]


# --- command line: `minigen assign make|check|grade ...` ---------------------------------------
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The options of `minigen assign make|check|grade` (also `python -m minigen.tools.assign ...`)."""
    parser = argparse.ArgumentParser(prog="minigen assign", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, metavar="make|check|grade")
    p = sub.add_parser("make", help="write a student copy with the topics' marked lines removed")
    p.add_argument("--topics", required=True, help=f"comma-separated, from: {','.join(TOPIC_TESTS)}")
    p.add_argument("--out", required=True, help="a new folder for the student copy")
    p = sub.add_parser("check", help="score a student copy, topic by topic")
    p.add_argument("student_dir")
    p.add_argument("--topic", default=None, help="only this topic (or a comma-separated list)")
    p.add_argument("-v", "--verbose", action="store_true", help="list the failed tests")
    p.add_argument("--no-sandbox", action="store_true", help="run without bubblewrap (only for code you trust)")
    p = sub.add_parser("grade", help="grade a folder of student copies into a gradebook")
    p.add_argument("submissions_dir", help="one subfolder per student, each made by `minigen assign make`")
    p.add_argument("--out", required=True, help="the gradebook CSV (feedback/ is written next to it)")
    topics = p.add_mutually_exclusive_group(required=True)
    topics.add_argument("--topics", default=None, help=f"comma-separated, from: {','.join(TOPIC_TESTS)}")
    topics.add_argument("--assignment", default=None,
                        help="the assignment.json `assign make` wrote (its topics; never a submission's)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=None, help="local worker processes (default 1)")
    where.add_argument("--scheduler", default=None, help="a Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--timeout", type=_positive_float, default=300.0, help="seconds per submission (default 300)")
    p.add_argument("--memory-limit", type=_positive_int, default=4096, help="MB per submission (default 4096)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run the submissions without bubblewrap (a warning every run; recorded in the gradebook)")
    return parser


def _grade(args) -> int:
    from minigen.tools.grade import grade_class
    from minigen.tools.jobs import dask_available
    print(f"grading {args.submissions_dir} on "
          + (f"the Dask cluster at {args.scheduler}" if args.scheduler else
             f"{args.workers or 1} worker(s){' (Dask LocalCluster)' if dask_available() else ''}"), flush=True)

    def show(result):
        scores = ", ".join(f"{t} {s['passed']}/{s['total']}" for t, s in result["topics"].items())
        print(f"{result['student']:<20} {result['status']:<13} {scores}"
              + (f"  ({result['note']})" if result["note"] else ""), flush=True)
    rows = grade_class(args.submissions_dir, args.out, topics=args.topics, assignment=args.assignment,
                       workers=args.workers or 1, scheduler=args.scheduler, timeout=args.timeout,
                       memory_mb=args.memory_limit, sandbox=not args.no_sandbox, progress=show)
    print(f"wrote the gradebook of {len(rows)} submission(s) to {args.out}")
    return 0


def main(argv=None) -> int:
    """Exit status: 0 done (make, grade) or every test passed (check); 1 some test failed; 2 bad input."""
    args = build_parser().parse_args(argv)
    try:
        if args.action == "make":
            out = make(args.topics, args.out)
            print(f"wrote the student copy to {out} (instructions: {os.path.join(out, 'README.md')})")
            return 0
        if args.action == "grade":
            return _grade(args)
        scores = check(args.student_dir, args.topic, verbose=args.verbose, sandbox=not args.no_sandbox)
    except MinigenError as e:
        print(f"minigen assign: error: {e}", file=sys.stderr)
        return 2
    return 0 if all(s["passed"] == s["total"] for s in scores.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
