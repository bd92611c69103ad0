"""Grading student copies: the teacher's tests against only the student's `minigen/`, in a sandbox,
judged outside it.

    minigen assign check DIR [--topic T] [--no-sandbox]           one copy, scores printed
    minigen assign grade SUBMISSIONS --out gradebook.csv (--topics T1,T2 | --assignment FILE)
                         [--workers N | --scheduler tcp://HOST:8786] [--timeout S] [--memory-limit MB]
                         [--no-sandbox]

What is taken from a submission: the files of its `minigen/` folder, except conftest.py,
sitecustomize.py, usercustomize.py, *.pth, compiled files, links, FIFOs and devices, after checking
its size and file count (MAX_BYTES, MAX_FILES) and before reading a byte. Everything else is
ignored and listed as ignored. The topics are the teacher's (--topics, or the assignment.json that
`assign make` wrote for the teacher), never a submission's. The tests, their fixtures and the pytest
settings come from the installed minigen's checkout (the reference), shipped with each job, so a
cluster worker needs no shared filesystem.

Each submission is one job (minigen.tools.jobs): the teacher's tests run on the student's package in
minigen.tools.sandbox (bubblewrap: no network, no other files, its own PIDs, rlimits), by
minigen/tools/grade_runner.py. The score is decided outside, by minigen.tools.judge: a test passes only if the
sandbox reported it passed AND the marked functions' results in it match the reference solution's
(run once per grading, in the same sandbox). A test with no verdict scores 0.

Row status: graded | timeout | out-of-memory | crashed | malformed | too-large.
"""
from __future__ import annotations

import configparser
import csv
import hashlib
import importlib.util
import io
import json
import os
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from minigen import __version__
from minigen.tools import judge
from minigen.errors import MinigenError
from minigen.tools.jobs import run_jobs, run_limited
from minigen.tools.sandbox import INSTALL_HINT, ROOT, bwrap_path, check_sandbox, python_path, sandboxed
from minigen.serialize import atomic_write_text

__all__ = ["Submission", "read_submission", "teacher_tests", "expected_tests", "grade_submission",
           "reference_records", "grade_class"]

MANIFEST = "assignment.json"
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grade_runner.py")
# files inside a submission's minigen/ that could change how pytest or Python start: never taken
NEVER_TAKEN = ("conftest.py", "sitecustomize.py", "usercustomize.py")
SKIPPED_DIRS = ("__pycache__", ".pytest_cache", ".hypothesis")
NOT_RUN = "did not run"
MAX_BYTES = 8 * 1024 * 1024         # a submission's minigen/ (the package is under 1 MB); all are held in memory
MAX_FILES = 1000                    # files in it (the package has about 60)
MAX_ENTRIES = 20_000                # entries looked at in a whole submission folder
MAX_MANIFEST = 64 * 1024
MAX_REPORT = 64 * 1024 * 1024       # bytes read back from the sandbox's results pipe
MAX_LINE = 4 * 1024 * 1024          # one record (a test's witnesses are well under 1 MB)
MAX_OUTPUT_FILE = 64 * 1024 * 1024  # RLIMIT_FSIZE inside: an output flood stops here
PRIVATE = "/runner"                 # inside the sandbox: the runner and the pytest ini (read-only)


@dataclass
class Submission:
    """One student's copy as the grader sees it: the files taken (relpath -> bytes), the ones
    ignored, its topics (from assignment.json: `check` only), a content hash, or why it is refused
    (status "malformed" or "too-large", with a note)."""
    name: str
    files: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)
    topics: list = field(default_factory=list)
    content_hash: str = ""
    refused: tuple | None = None


def _walk(root: str):
    """(relpath, path) of every entry under root, sorted, skipping caches; links are reported, not followed."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


def _read_capped(path: str, size: int) -> bytes | None:
    """A regular file's bytes, opened without following a link or blocking on a FIFO; None if it is
    not a regular file any more or holds more than `size` bytes (it changed since it was looked at)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = f.read(size + 1)
    return data if len(data) <= size else None


def read_package(folder: str, sub: Submission, only_package: bool = False) -> None:
    """Take the files of folder/minigen/ into sub (listing the rest of folder as ignored, unless
    only_package), checking sizes and counts before reading a byte."""
    taken, total = [], 0
    entries = (("minigen/" + relpath, path) for relpath, path in _walk(os.path.join(folder, "minigen"))) \
        if only_package else _walk(folder)
    for count, (relpath, path) in enumerate(entries):
        if count >= MAX_ENTRIES:
            sub.refused = ("too-large", f"more than {MAX_ENTRIES} files and folders in the submission")
            return
        info = os.lstat(path)
        if stat.S_ISREG(info.st_mode) and relpath.startswith("minigen/") and os.path.basename(path) not in \
                NEVER_TAKEN and not path.endswith((".pth", ".pyc", ".pyo")):
            taken.append((relpath, path))
            total += info.st_size
        elif relpath != MANIFEST:
            sub.ignored.append(relpath)
    if total > MAX_BYTES or len(taken) > MAX_FILES:
        sub.refused = ("too-large", f"minigen/ holds {len(taken)} files, {total / 2**20:.1f} MB; the limit is "
                                    f"{MAX_FILES} files, {MAX_BYTES // 2**20} MB")
        return
    digest = hashlib.sha256()
    for relpath, path in taken:
        try:
            data = _read_capped(path, MAX_BYTES)
        except OSError:
            data = None
        if data is None:
            sub.refused = ("too-large", f"{relpath} changed while it was read")
            return
        digest.update(relpath.encode() + b"\0" + hashlib.sha256(data).digest())
        sub.files[relpath] = data
    digest.update(json.dumps(sub.ignored).encode())
    sub.content_hash = digest.hexdigest()[:16]
    if "minigen/__init__.py" not in sub.files:
        sub.refused = ("malformed", "no minigen/__init__.py: not a copy made by `minigen assign make`")


def read_submission(folder: str) -> Submission:
    """Read what grading takes from one student's folder (never raises: a bad folder is refused,
    `malformed` or `too-large`). Its manifest's topics are checked, and used only by `check`."""
    from minigen.tools.assign import TOPIC_TESTS
    sub = Submission(os.path.basename(os.path.normpath(folder)))
    if not os.path.isdir(folder) or os.path.islink(folder):
        sub.refused = ("malformed", "not a folder")
        return sub
    read_package(folder, sub)
    if sub.refused:
        return sub
    path = os.path.join(folder, MANIFEST)
    try:
        data = _read_capped(path, MAX_MANIFEST) if os.path.lexists(path) else None
        topics = json.loads(data)["topics"] if data is not None else None
    except (OSError, ValueError, KeyError, TypeError):
        topics = None
    if not isinstance(topics, list) or not all(isinstance(t, str) and t in TOPIC_TESTS for t in topics):
        sub.refused = ("malformed", f"{MANIFEST} is missing or its topics are not a list of topic names "
                                    f"({', '.join(TOPIC_TESTS)}): not a copy made by `minigen assign make`")
    else:
        sub.topics = topics
    return sub


def summarize_ignored(ignored: list[str]) -> str:
    """['tests/a.py', 'tests/b.py', 'conftest.py'] -> 'conftest.py, tests/ (2 files)'."""
    groups: dict[str, int] = {}
    for relpath in ignored:
        head = relpath.split("/")[0] + ("/" if "/" in relpath and not relpath.startswith("minigen/") else "")
        key = relpath if relpath.startswith("minigen/") else head
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(k + (f" ({n} files)" if k.endswith("/") else "") for k, n in sorted(groups.items()))


def teacher_tests(root: str | None = None) -> tuple[dict, str]:
    """The reference's tests/*.py as {relpath: text} and its pytest ini text (markers only: never
    the project's addopts or testpaths)."""
    from minigen.tools.assign import source_root
    root = root or source_root()
    tests = os.path.join(root, "tests")
    if not os.path.isdir(tests):
        raise MinigenError(f"grading needs the teacher's tests, and {tests} does not exist: install minigen from "
                           f"its source checkout (`pip install -e .`)")
    sources = {}
    for relpath, path in _walk(tests):
        if relpath.endswith(".py"):          # the tests are Python modules (served from memory, minigen.tools.grade_runner)
            with open(path, encoding="utf-8") as f:
                sources["tests/" + relpath] = f.read()
    parser = configparser.RawConfigParser()
    parser.read(os.path.join(root, "setup.cfg"))
    markers = parser.get("tool:pytest", "markers", fallback="").strip()
    indented = markers.replace("\n", "\n    ")
    ini = "[pytest]\naddopts =\n" + (f"markers =\n    {indented}\n" if markers else "")
    return sources, ini


def expected_tests(topics: list[str], ini: str) -> dict:
    """{topic: the test ids its TOPIC_TESTS expand to (parametrized cases one by one)}, collected once
    from the reference, so a submission that breaks collection is scored out of the same total."""
    from minigen.tools.assign import TOPIC_TESTS, source_root
    node_ids = [node for t in topics for node in TOPIC_TESTS[t]]
    with tempfile.TemporaryDirectory(prefix="minigen-collect-") as tmp:
        config = os.path.join(tmp, "pytest.ini")
        with open(config, "w") as f:
            f.write(ini)
        env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"}
        done = run_limited([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                            "-c", config, "--rootdir", source_root(), *node_ids], timeout=300, cwd=source_root(),
                           env=env)
    found = [line.strip() for line in done.output.splitlines() if "::" in line and not line.startswith(" ")]
    expected = {}
    for topic in topics:
        expected[topic] = [n for requested in TOPIC_TESTS[topic]
                           for n in [n for n in found if n == requested or n.startswith(requested + "[")]]
        if not expected[topic]:
            raise MinigenError(f"the reference's tests of topic {topic} do not collect "
                               f"(pytest --collect-only: {_last_line(done.output)})")
    return expected


def _scores(expected: dict, records: list[dict], reference: dict | None) -> tuple[dict, str | None]:
    """Fold the sandbox's records into {topic: {passed, total, failed: [(test, first line)]}}. A test
    passes only if its call passed, no phase failed and (reference given) minigen.tools.judge finds its
    witnesses equal to the reference's; a test never reported, or reported in a broken form, failed."""
    outcome: dict[str, str] = {}
    message: dict[str, str] = {}
    witnesses: dict[str, list] = {}
    collect_errors = []
    for r in records:
        kind, node = r.get("kind"), r.get("nodeid")
        if not isinstance(node, str):
            continue
        if kind == "collect":
            collect_errors.append(f"{node}: {r.get('message')}")
        elif kind == "witness":
            witnesses.setdefault(node, []).append(r.get("functions"))
        elif kind == "test":
            if r.get("outcome") in ("failed", "skipped"):
                outcome[node] = "failed"
                message.setdefault(node, str(r.get("message") or r.get("outcome"))[:300])
            elif r.get("outcome") == "passed" and r.get("when") == "call" and outcome.get(node) != "failed":
                outcome[node] = "passed"
    if reference is not None:
        for node, state in outcome.items():
            if state == "passed" and node in reference:
                sent = witnesses.get(node, [])
                why = judge.mismatch(reference[node], sent[0]) if len(sent) == 1 else \
                    f"its results came back {len(sent)} times, not once"
                if why:
                    outcome[node], message[node] = "failed", f"judged outside the sandbox: {why}"
    scores = {}
    for topic, nodes in expected.items():
        failed = [(node, message.get(node) or (collect_errors[0] if collect_errors else NOT_RUN))
                  for node in nodes if outcome.get(node) != "passed"]
        scores[topic] = {"passed": len(nodes) - len(failed), "total": len(nodes), "failed": failed}
    return scores, (collect_errors[0] if collect_errors else None)


def grade_submission(job: dict) -> dict:
    """Grade one submission in the sandbox (a job for minigen.tools.jobs.run_jobs; never raises).

    job: {"submission": Submission, "tests": {relpath: text}, "ini": text,
          "expected": {topic: [test ids]} (expected_tests), "timeout": seconds or None, "memory_mb": MB or None,
          "sandbox": bool, "witness": judge.witness_orders(...),
          "reference": {test id: witnesses} (judge.reference_witnesses), or None: pytest's word only}
    Returns {"student", "status", "note", "topics": {topic: {passed, total, failed}}, "ignored",
    "content_hash", "seconds"}."""
    sub: Submission = job["submission"]
    result = {"student": sub.name, "status": "graded", "note": "", "ignored": sub.ignored,
              "content_hash": sub.content_hash, "seconds": 0.0,
              "topics": {t: {"passed": 0, "total": len(nodes), "failed": [(n, NOT_RUN) for n in nodes]}
                         for t, nodes in job["expected"].items()}}
    if sub.refused:
        result.update(status=sub.refused[0], note=sub.refused[1])
        return result
    try:
        records, done = _run_sandboxed(job)
    except Exception as e:          # the grader's own trouble (disk full...) is this row's, not the class's
        result.update(status="crashed", note=f"grader error: {type(e).__name__}: {e}")
        return result
    result["seconds"] = round(done.seconds, 2)
    result["topics"], collect_error = _scores(job["expected"], records, job["reference"])
    ended = any(r.get("kind") == "end" for r in records)
    out_of_memory = "MemoryError" in done.output or any("MemoryError" in str(r.get("message")) for r in records)
    wrong_minigen = next((str(r.get("message")) for r in records if r.get("kind") == "wrong-minigen"), None)
    if wrong_minigen:
        result.update(status="crashed", note=f"grader error: {wrong_minigen}")
    elif done.how == "timeout":
        unfinished = [t for t, s in result["topics"].items() if any(m == NOT_RUN for _, m in s["failed"])]
        result.update(status="timeout",
                      note=f"stopped after {job['timeout']:g} s; unfinished: {', '.join(unfinished) or 'none'}")
    elif out_of_memory:
        result.update(status="out-of-memory", note=f"ran out of memory (limit {job.get('memory_mb')} MB)")
    elif not ended or done.how == "killed":
        result.update(status="crashed", note=f"the test process died ({done.how}, status {done.returncode}): "
                                             f"{_last_line(done.output)}")
    elif collect_error:
        result.update(status="crashed", note=f"the tests could not load the submission: {collect_error}")
    if result["status"] != "graded":         # only the topics whose tests did not all run are zeroed
        for score in result["topics"].values():
            if any(m == NOT_RUN for _, m in score["failed"]):
                score["passed"] = 0
    return result


def reference_records(job: dict) -> dict:
    """The reference solution's run (a job for run_jobs, on the same workers as the class's):
    {"records": [...]} or {"error": why it could not run}."""
    try:
        if job["sandbox"]:
            check_sandbox()
        records, done = _run_sandboxed(job)
    except MinigenError as e:
        return {"error": str(e)}
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    return {"records": records, "output": _last_line(done.output)}


def _thread_env() -> dict:
    return {name: os.environ[name] for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                "MKL_NUM_THREADS") if name in os.environ}


def _user_tasks() -> int:
    """Processes and threads of this user now: RLIMIT_NPROC counts them all, so the cap is on top."""
    uid, count = str(os.getuid()), 0
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        line = next((line for line in status.splitlines() if line.startswith("Uid:")), "")
        threads = next((line for line in status.splitlines() if line.startswith("Threads:")), "Threads: 1")
        count += int(threads.split()[1]) if line.split()[1:2] == [uid] else 0
    return count


def _run_sandboxed(job: dict):
    """Write the package and the tests to a host scratch folder, run the runner on them (in the
    sandbox, where they are read-only at ROOT), and collect its records from a pipe, capped."""
    sub, tests = job["submission"], job["tests"]
    with tempfile.TemporaryDirectory(prefix="minigen-grade-") as scratch:
        inputs, private = os.path.join(scratch, "inputs"), os.path.join(scratch, "private")
        os.makedirs(private)
        for relpath, data in list(sub.files.items()) + [(k, v.encode("utf-8")) for k, v in tests.items()]:
            path = os.path.join(inputs, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        with open(RUNNER, "rb") as f, open(os.path.join(private, "runner.py"), "wb") as g:
            g.write(f.read())
        with open(os.path.join(private, "pytest.ini"), "w") as f:
            f.write(job["ini"])
        sandbox = job["sandbox"]
        root = ROOT if sandbox else os.path.join(scratch, "work")
        here = PRIVATE if sandbox else private
        if not sandbox:                     # the same layout as inside, on the host
            os.makedirs(root)
            for name in ("minigen", "tests"):
                os.rename(os.path.join(inputs, name), os.path.join(root, name))
        args = ["-c", os.path.join(here, "pytest.ini"), "--rootdir", root, "-p", "no:cacheprovider", "-q",
                "-o", "addopts=", "--basetemp", os.path.join(root, "tmp", "pytest")]
        if importlib.util.find_spec("_hypothesis_pytestplugin"):
            args += ["-p", "_hypothesis_pytestplugin"]
        env = {"PATH": "/usr/bin:/bin", "HOME": os.path.join(root, "home"), "TMPDIR": os.path.join(root, "tmp"),
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "MPLBACKEND": "Agg", "LC_ALL": "C.UTF-8",
               "NUMBA_CACHE_DIR": os.path.join(root, "tmp", "numba"), **_thread_env()}
        argv = [os.path.realpath(sys.executable), "-I", "-S", "-B", os.path.join(here, "runner.py")]
        if sandbox:
            argv = sandboxed(argv, inputs={os.path.join(inputs, "minigen"): f"{ROOT}/minigen",
                                           os.path.join(inputs, "tests"): f"{ROOT}/tests", private: PRIVATE},
                             env=env)
        read_end, write_end = os.pipe()
        records: list[dict] = []
        reader = threading.Thread(target=_collect, args=(read_end, records), daemon=True)
        reader.start()
        node_ids = [node for nodes in job["expected"].values() for node in nodes]
        orders = {"fd": write_end, "root": root, "path": python_path(), "pytest_args": args + node_ids,
                  "witness": job["witness"]}
        timeout = job.get("timeout")
        limits = {"RLIMIT_FSIZE": MAX_OUTPUT_FILE, "RLIMIT_NOFILE": 1024, "RLIMIT_NPROC": _user_tasks() + 256}
        if timeout:
            limits["RLIMIT_CPU"] = int(timeout * (os.cpu_count() or 1)) + 10
        try:
            done = run_limited(argv, timeout=timeout, memory_mb=job.get("memory_mb"), cwd=scratch if sandbox else root,
                               env=None if sandbox else env, log=os.path.join(scratch, "log"),
                               stdin_text=json.dumps(orders) + "\n", pass_fds=(write_end,), rlimits=limits)
        finally:
            os.close(write_end)
            reader.join(timeout=30)
    return records, done


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _collect(read_end: int, records: list) -> None:
    """The pipe's reader: JSON objects, one a line, up to MAX_REPORT bytes in all (the rest is drained
    and dropped, so the writer never blocks). What they say is judged, never taken on trust."""
    received = 0
    with os.fdopen(read_end, "rb") as f:
        for line in iter(lambda: f.readline(MAX_LINE), b""):       # a longer line comes in pieces, none valid JSON
            received += len(line)
            if received > MAX_REPORT:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)


# --- a class: the gradebook ------------------------------------------------------------------------
def _gradebook_columns(topics: list[str]) -> list[str]:
    columns = ["student", "status", "score"]
    for t in topics:
        columns += [f"{t} passed", f"{t} total", f"{t} score"]
    return columns + ["note", "ignored", "content hash", "grading key", "sandbox", "seconds"]


def _row(result: dict, topics: list[str], key: str, sandbox: str) -> dict:
    row = {"student": result["student"], "status": result["status"], "note": result["note"],
           "ignored": summarize_ignored(result["ignored"]), "content hash": result["content_hash"],
           "grading key": key, "sandbox": sandbox, "seconds": result["seconds"]}
    scores = []
    for t in topics:
        s = result["topics"][t]
        score = s["passed"] / s["total"] if s["total"] else 0.0
        row.update({f"{t} passed": s["passed"], f"{t} total": s["total"], f"{t} score": f"{score:.3f}"})
        scores.append(score)
    row["score"] = f"{sum(scores) / len(scores):.3f}" if scores else "0.000"
    return row




def _write_gradebook(path: str, rows: dict, topics: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_gradebook_columns(topics))
    writer.writeheader()
    for name in sorted(rows):
        writer.writerow(rows[name])
    atomic_write_text(path, buffer.getvalue())


def feedback_text(result: dict) -> str:
    """What one student reads: status, what was ignored, and each failing test with its first error line."""
    lines = [f"# {result['student']}: {result['status']}" + (f" ({result['note']})" if result["note"] else ""), ""]
    if result["ignored"]:
        lines += [f"Ignored (grading uses only your minigen/ folder): {summarize_ignored(result['ignored'])}", ""]
    for topic, s in result["topics"].items():
        lines.append(f"{topic}: {s['passed']}/{s['total']} passed")
        lines += [f"    FAILED {name}: {message}" for name, message in s["failed"]]
    return "\n".join(lines) + "\n"


NO_SANDBOX_WARNING = ("minigen: WARNING: grading WITHOUT a sandbox (--no-sandbox): each submission's code runs as "
                      "you, can read and write your files and can forge its score; use it only for code you trust")


def teacher_topics(topics=None, assignment: str | None = None) -> list[str]:
    """The topics to grade: --topics, or the assignment.json `assign make` wrote for the teacher."""
    from minigen.tools.assign import parse_topics
    if (topics is None) == (assignment is None):
        raise MinigenError("name the topics to grade with --topics T1,T2 or --assignment FILE (the assignment.json "
                           "`minigen assign make` wrote), one of the two; a submission's own is never used")
    if assignment is not None:
        try:
            with open(assignment) as f:
                topics = json.load(f)["topics"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MinigenError(f"--assignment {assignment}: expected the assignment.json of `minigen assign make` "
                               f"({type(e).__name__}: {e})") from None
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise MinigenError(f"--assignment {assignment}: its topics are not a list of names: {topics!r}")
    topics = parse_topics(topics)
    if not topics:
        raise MinigenError("no topic to grade: --topics (or the assignment's) names none")
    return topics


def _check_writable(out: str) -> None:
    """--out's folder takes a file (tried, not guessed: as root, os.access says yes on a read-only filesystem)."""
    feedback = os.path.join(os.path.dirname(os.path.abspath(out)), "feedback")
    try:
        os.makedirs(feedback, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=feedback, prefix=".probe-"):
            pass
    except OSError as e:
        raise MinigenError(f"--out {out}: cannot write the gradebook and feedback/ there ({e.strerror or e}); "
                           f"choose a writable folder") from None


def judged_jobs(submissions: list, topics: list[str], *, timeout, memory_mb, sandbox: bool, need_judge: bool,
                workers: int = 1, scheduler: str | None = None, use_dask: bool | None = None) -> list[dict]:
    """The jobs grading these submissions: the teacher's tests, the expected test ids and the
    reference's witnesses, from one run of the reference solution in the same sandbox on the same
    workers. Without the solutions in this checkout (a student's copy installed) there is nothing to
    judge against: with need_judge that is an error, else pytest's word is taken (a self-check)."""
    from minigen.tools.assign import all_solutions, source_root
    tests, ini = teacher_tests()
    expected = expected_tests(topics, ini)
    job = {"tests": tests, "ini": ini, "expected": expected, "timeout": timeout, "memory_mb": memory_mb,
           "sandbox": sandbox, "witness": judge.witness_orders(topics), "reference": None}
    marked = {s.topic for s in all_solutions()}
    unmarked = [t for t in topics if t not in marked]
    if unmarked and need_judge:
        raise MinigenError(f"grading judges results against the reference solution, and "
                           f"{os.path.join(source_root(), 'minigen')} has no solution of {', '.join(unmarked)}: "
                           f"grade from the teacher's checkout (`pip install -e .` there)")
    if not unmarked:
        reference = Submission("reference")
        read_package(source_root(), reference, only_package=True)
        if reference.refused:
            raise MinigenError(f"the reference solution cannot be graded: {reference.refused[1]}")
        [(_, ran)] = list(run_jobs(reference_records, [dict(job, submission=reference)], workers=1,
                                   scheduler=scheduler, use_dask=use_dask, notice=lambda line: None))
        if "error" in ran:
            raise MinigenError(ran["error"])
        job["reference"] = judge.reference_witnesses(expected, ran["records"], ran["output"])
    return [dict(job, submission=s) for s in submissions]


def grade_class(submissions_dir: str, out: str, *, topics=None, assignment: str | None = None, workers: int = 1,
                scheduler: str | None = None, timeout: float | None = 300.0, memory_mb: int | None = 4096,
                sandbox: bool = True, use_dask: bool | None = None, progress=None) -> dict:
    """Grade every subfolder of submissions_dir on the teacher's topics (`topics` or the `assignment`
    file) into the gradebook CSV `out` (and out's folder `feedback/STUDENT.txt`), written by this
    process only. Resumable: a row whose content hash and grading key (the tests, the options, this
    minigen's version) match is kept. Returns {student: row}."""
    if not os.path.isdir(submissions_dir):
        raise MinigenError(f"{submissions_dir} is not a folder of submissions (one subfolder per student)")
    if timeout is not None and not timeout > 0:
        raise MinigenError(f"--timeout must be a positive number of seconds, got {timeout}")
    if memory_mb is not None and memory_mb < 64:
        raise MinigenError(f"--memory-limit must be at least 64 MB, got {memory_mb}")
    topics = teacher_topics(topics, assignment)
    _check_writable(out)
    rows = _read_gradebook(out)
    if not sandbox:
        print(NO_SANDBOX_WARNING, file=sys.stderr, flush=True)
    elif not scheduler and not bwrap_path():
        raise MinigenError(INSTALL_HINT)
    names = sorted(n for n in os.listdir(submissions_dir)
                   if os.path.isdir(os.path.join(submissions_dir, n)) and not n.startswith("."))
    if not names:
        raise MinigenError(f"{submissions_dir} holds no submission folders")
    tests, ini = teacher_tests()
    key = hashlib.sha256(json.dumps([topics, timeout, memory_mb, sorted(tests.items()), ini, __version__,
                                     sandbox]).encode()).hexdigest()[:16]
    rows = {n: r for n, r in rows.items() if n in names}
    submissions = [read_submission(os.path.join(submissions_dir, n)) for n in names]
    todo = [s for s in submissions
            if not (s.name in rows and rows[s.name].get("content hash") == s.content_hash
                    and rows[s.name].get("grading key") == key)]
    feedback = os.path.join(os.path.dirname(os.path.abspath(out)), "feedback")
    jobs = judged_jobs(todo, topics, timeout=timeout, memory_mb=memory_mb, sandbox=sandbox, need_judge=True,
                       workers=workers, scheduler=scheduler, use_dask=use_dask) if todo else []
    for _, result in run_jobs(grade_submission, jobs, workers=workers, scheduler=scheduler, use_dask=use_dask):
        rows[result["student"]] = _row(result, topics, key, "bwrap" if sandbox else "none (--no-sandbox)")
        atomic_write_text(os.path.join(feedback, result["student"] + ".txt"), feedback_text(result))
        _write_gradebook(out, rows, topics)          # after every submission: an interrupt keeps what was done
        if progress:
            progress(result)
    _write_gradebook(out, rows, topics)
    return rows


def _read_gradebook(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    try:
        with open(path, newline="") as f:
            return {row["student"]: row for row in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error) as e:
        raise MinigenError(f"--out {path} exists but is not a gradebook this command wrote ({e}); "
                           f"choose another --out") from None
