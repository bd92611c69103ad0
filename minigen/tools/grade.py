"""Grading student copies safely: the teacher's tests against only the student's `minigen/`.

    minigen assign check DIR [--topic T]            one copy, scores printed
    minigen assign grade SUBMISSIONS --out gradebook.csv [--workers N | --scheduler tcp://HOST:8786]
                         [--timeout S] [--memory-limit MB] [--topics T1,T2]

What is taken from a submission: the files of its `minigen/` folder, except conftest.py,
sitecustomize.py, usercustomize.py, *.pth, compiled files and links. Everything else (tests/,
conftest.py, pytest.ini, setup.cfg, pyproject.toml, ...) is ignored and listed as ignored. The tests,
their fixtures (tests/conftest.py) and the pytest settings come from the installed minigen's checkout
(the reference), shipped with each job, so a cluster worker needs no shared filesystem.

Each submission is one job (minigen.tools.jobs): in a scratch folder of its own it gets the student's
minigen/ and a fresh copy of the teacher's tests/, and minigen/tools/grade_runner.py runs pytest there in a
new process (`python -I`, memory limit, wall-clock timeout that kills the whole process group).
Results come back through a pipe, test phase by test phase, so a submission that hangs in one topic
keeps the scores of the topics that finished. This is confinement of the working files, not a
security sandbox: the process runs as the grading user (see docs/distributed.md).

Row status: graded | timeout | out-of-memory | crashed | malformed. A row whose submission changed the
teacher's test files on disk says so in its note (the tests ran from the teacher's copy anyway).
"""
from __future__ import annotations

import configparser
import csv
import hashlib
import importlib.util
import io
import json
import os
import secrets
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from minigen.errors import MinigenError
from minigen.tools.jobs import run_jobs, run_limited
from minigen.serialize import atomic_write_text

__all__ = ["Submission", "read_submission", "teacher_tests", "expected_tests", "grade_submission", "grade_class"]

MANIFEST = "assignment.json"
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grade_runner.py")
# files inside a submission's minigen/ that could change how pytest or Python start: never taken
NEVER_TAKEN = ("conftest.py", "sitecustomize.py", "usercustomize.py")
SKIPPED_DIRS = ("__pycache__", ".pytest_cache", ".hypothesis")
NOT_RUN = "did not run"


@dataclass
class Submission:
    """One student's copy as the grader sees it: the files taken (relpath -> bytes), the ones
    ignored, its topics (from assignment.json), a content hash, or why it cannot be graded."""
    name: str
    files: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)
    topics: list = field(default_factory=list)
    content_hash: str = ""
    malformed: str | None = None


def _walk(root: str):
    """(relpath, path) of every entry under root, sorted, skipping caches; links are reported, not followed."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            yield os.path.relpath(path, root).replace(os.sep, "/"), path


def read_submission(folder: str) -> Submission:
    """Read what grading takes from one student's folder (never raises: a bad folder is `malformed`)."""
    sub = Submission(os.path.basename(os.path.normpath(folder)))
    digest = hashlib.sha256()
    if not os.path.isdir(folder):
        sub.malformed = "not a folder"
        return sub
    for relpath, path in _walk(folder):
        regular = not os.path.islink(path) and stat.S_ISREG(os.lstat(path).st_mode)   # no links, FIFOs, devices
        taken = regular and relpath.startswith("minigen/") and os.path.basename(path) not in NEVER_TAKEN \
            and not path.endswith((".pth", ".pyc", ".pyo"))
        try:
            if regular:
                with open(path, "rb") as f:
                    data = f.read()
            else:
                data = os.readlink(path).encode() if os.path.islink(path) else b""
        except OSError:
            data = b""
        digest.update(relpath.encode() + b"\0" + hashlib.sha256(data).digest())
        if taken:
            sub.files[relpath] = data
        elif relpath != MANIFEST:
            sub.ignored.append(relpath)
    sub.content_hash = digest.hexdigest()[:16]
    if "minigen/__init__.py" not in sub.files:
        sub.malformed = "no minigen/__init__.py: not a copy made by `minigen assign make`"
        return sub
    try:
        with open(os.path.join(folder, MANIFEST)) as f:
            sub.topics = list(json.load(f)["topics"])
    except (OSError, ValueError, KeyError, TypeError):
        sub.malformed = f"no readable {MANIFEST}: not a copy made by `minigen assign make`"
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


def _scores(expected: dict, records: list[dict]) -> tuple[dict, str | None]:
    """Fold the runner's per-phase records into {topic: {passed, total, failed: [(test, first line)]}}.
    A test counts as passed only if its call passed and no phase failed; a test never reported failed."""
    outcome: dict[str, str] = {}
    message: dict[str, str] = {}
    collect_errors = []
    for r in records:
        if r.get("kind") == "collect":
            collect_errors.append(f"{r['nodeid']}: {r['message']}")
        elif r.get("kind") == "test":
            node = r["nodeid"]
            if r["outcome"] in ("failed", "skipped"):
                outcome[node] = "failed"
                message.setdefault(node, r["message"] or r["outcome"])
            elif r["outcome"] == "passed" and outcome.get(node) != "failed":
                outcome[node] = "passed"
    scores = {}
    for topic, nodes in expected.items():
        failed = [(node, message.get(node) or (collect_errors[0] if collect_errors else NOT_RUN))
                  for node in nodes if outcome.get(node) != "passed"]
        scores[topic] = {"passed": len(nodes) - len(failed), "total": len(nodes), "failed": failed}
    return scores, (collect_errors[0] if collect_errors else None)


def grade_submission(job: dict) -> dict:
    """Grade one submission in a scratch folder of its own (a job for minigen.tools.jobs.run_jobs; never raises).

    job: {"submission": Submission, "tests": {relpath: text}, "ini": text,
          "expected": {topic: [test ids]} (expected_tests), "timeout": seconds or None, "memory_mb": MB or None}
    Returns {"student", "status", "note", "topics": {topic: {passed, total, failed}}, "ignored",
    "content_hash", "tampered": [relpaths], "seconds"}."""
    sub: Submission = job["submission"]
    result = {"student": sub.name, "status": "graded", "note": "", "ignored": sub.ignored,
              "content_hash": sub.content_hash, "tampered": [], "seconds": 0.0,
              "topics": {t: {"passed": 0, "total": len(nodes), "failed": [(n, NOT_RUN) for n in nodes]}
                         for t, nodes in job["expected"].items()}}
    if sub.malformed:
        result.update(status="malformed", note=sub.malformed)
        return result
    try:
        _run_in_scratch(job, result)
    except Exception as e:          # the grader's own trouble (disk full...) is this row's, not the class's
        result.update(status="crashed", note=f"grader error: {type(e).__name__}: {e}")
    return result


def _run_in_scratch(job: dict, result: dict) -> None:
    sub, tests = job["submission"], job["tests"]
    with tempfile.TemporaryDirectory(prefix="minigen-grade-") as scratch_root:
        scratch, private = os.path.join(scratch_root, "work"), os.path.join(scratch_root, "private")
        os.makedirs(private)
        for relpath, data in list(sub.files.items()) + [(k, v.encode("utf-8")) for k, v in tests.items()]:
            path = os.path.join(scratch, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        for name in ("home", "tmp"):
            os.makedirs(os.path.join(scratch, name))
        shutil.copy2(RUNNER, os.path.join(private, "runner.py"))
        ini = os.path.join(private, "pytest.ini")
        with open(ini, "w") as f:
            f.write(job["ini"])
        node_ids = [node for nodes in job["expected"].values() for node in nodes]
        args = ["-c", ini, "--rootdir", scratch, "-p", "no:cacheprovider", "-q", "-o", "addopts=",
                "--basetemp", os.path.join(scratch, "tmp", "pytest")]
        if importlib.util.find_spec("_hypothesis_pytestplugin"):
            args += ["-p", "_hypothesis_pytestplugin"]
        token = secrets.token_hex(16)
        read_end, write_end = os.pipe()
        records: list[dict] = []
        reader = threading.Thread(target=_collect, args=(read_end, token, records), daemon=True)
        reader.start()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.path.join(scratch, "home"),
               "TMPDIR": os.path.join(scratch, "tmp"), "PYTHONDONTWRITEBYTECODE": "1",
               "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "MPLBACKEND": "Agg", "LC_ALL": "C.UTF-8",
               "NUMBA_CACHE_DIR": os.path.join(scratch, "tmp", "numba")}
        for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if name in os.environ:
                env[name] = os.environ[name]
        orders = {"token": token, "fd": write_end, "scratch": scratch,
                  "tests": tests, "pytest_args": args + node_ids}
        try:
            done = run_limited([sys.executable, "-I", os.path.join(private, "runner.py")], timeout=job.get("timeout"),
                               memory_mb=job.get("memory_mb"), cwd=scratch, env=env, log=os.path.join(private, "log"),
                               stdin_text=json.dumps(orders) + "\n", pass_fds=(write_end,))
        finally:
            os.close(write_end)
            reader.join(timeout=30)
        result["seconds"] = round(done.seconds, 2)
        result["tampered"] = sorted({p for p, text in tests.items() if _read(os.path.join(scratch, p)) != text} |
                                    {p for r in records if r.get("kind") == "restored" for p in r["paths"]})
    result["topics"], collect_error = _scores(job["expected"], records)
    ended = any(r.get("kind") == "end" for r in records)
    out_of_memory = "MemoryError" in done.output or any("MemoryError" in (r.get("message") or "") for r in records)
    wrong_minigen = next((r["message"] for r in records if r.get("kind") == "wrong-minigen"), None)
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
    if result["tampered"]:
        result["note"] = (result["note"] + "; " if result["note"] else "") + \
            f"changed the teacher's test files during grading ({', '.join(result['tampered'])}); they ran unchanged"


def _read(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def _collect(read_end: int, token: str, records: list) -> None:
    """The pipe's reader: keep the runner's lines that carry this job's token."""
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("token") == token:
                records.append(record)


# --- a class: the gradebook ------------------------------------------------------------------------
def _gradebook_columns(topics: list[str]) -> list[str]:
    columns = ["student", "status", "score"]
    for t in topics:
        columns += [f"{t} passed", f"{t} total", f"{t} score"]
    return columns + ["note", "ignored", "content hash", "grading key", "seconds"]


def _row(result: dict, topics: list[str], key: str) -> dict:
    row = {"student": result["student"], "status": result["status"], "note": result["note"],
           "ignored": summarize_ignored(result["ignored"]), "content hash": result["content_hash"],
           "grading key": key, "seconds": result["seconds"]}
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


def grade_class(submissions_dir: str, out: str, *, topics=None, workers: int = 1, scheduler: str | None = None,
                timeout: float | None = 300.0, memory_mb: int | None = 4096, use_dask: bool | None = None,
                progress=None) -> dict:
    """Grade every subfolder of submissions_dir into the gradebook CSV `out` (and out's folder
    `feedback/STUDENT.txt`). Resumable: a row whose content hash and grading key match is kept.
    Returns {student: row}."""
    from minigen.tools.assign import parse_topics
    if not os.path.isdir(submissions_dir):
        raise MinigenError(f"{submissions_dir} is not a folder of submissions (one subfolder per student)")
    if timeout is not None and not timeout > 0:
        raise MinigenError(f"--timeout must be a positive number of seconds, got {timeout}")
    if memory_mb is not None and memory_mb < 64:
        raise MinigenError(f"--memory-limit must be at least 64 MB, got {memory_mb}")
    names = sorted(n for n in os.listdir(submissions_dir)
                   if os.path.isdir(os.path.join(submissions_dir, n)) and not n.startswith("."))
    if not names:
        raise MinigenError(f"{submissions_dir} holds no submission folders")
    submissions = [read_submission(os.path.join(submissions_dir, n)) for n in names]
    if topics is None:          # the class's topics: every topic some manifest names (a student cannot drop one)
        named = {t for s in submissions for t in s.topics}
        topics = parse_topics(sorted(named))
        if not topics:
            raise MinigenError("no submission's assignment.json names a topic; choose them with --topics")
    else:
        topics = parse_topics(topics)
    tests, ini = teacher_tests()
    key = hashlib.sha256(json.dumps([topics, timeout, memory_mb, sorted(tests.items()), ini]).encode()).hexdigest()[:16]
    rows = _read_gradebook(out)
    rows = {n: r for n, r in rows.items() if n in names}
    todo = [s for s in submissions
            if not (s.name in rows and rows[s.name].get("content hash") == s.content_hash
                    and rows[s.name].get("grading key") == key)]
    feedback = os.path.join(os.path.dirname(os.path.abspath(out)), "feedback")
    expected = expected_tests(topics, ini) if todo else {}
    jobs = [{"submission": s, "tests": tests, "ini": ini, "expected": expected, "timeout": timeout,
             "memory_mb": memory_mb} for s in todo]
    for _, result in run_jobs(grade_submission, jobs, workers=workers, scheduler=scheduler, use_dask=use_dask):
        rows[result["student"]] = _row(result, topics, key)
        os.makedirs(feedback, exist_ok=True)
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
