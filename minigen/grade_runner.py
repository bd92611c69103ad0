"""The grading process: runs the teacher's tests against a student's `minigen/`, inside the sandbox.

Run as a script, never imported: `python -I -S grade_runner.py`, started by minigen.grade inside
minigen.sandbox. In this process `import minigen` is the STUDENT's package, so this file imports
nothing from minigen. It reads its orders as one JSON line on stdin, before any student code exists:

    {"fd": results pipe, "root": folder holding the student's minigen/ and the teacher's tests/ (read-only),
     "path": the import path after root, "pytest_args": [...],
     "witness": {"functions": [[module, qualname], ...], "calls": K, "samples": S}}

NOTHING this process sends is trusted: the student's code runs in it and can rewrite any of it.
It sends two kinds of lines, and minigen.judge decides the score outside the sandbox:
- each test phase's outcome (a pass here is necessary, never sufficient);
- each test's witnesses: what the marked functions (the ones the student wrote) returned and left
  in their arguments, for their first K calls in that test, as a few numbers per array. The judge
  compares them with the reference solution's, so a pass also needs the student's functions to
  have computed the reference's results on the teacher's inputs.
"""
import importlib
import importlib.util
import json
import os
import sys


def first_line(report) -> str:
    """The first line of a failure: 'AssertionError: ...', 'NotImplementedError: vae: ...'."""
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if crash is None and lines:
        return lines[-1][:300]          # a plain text report ends with the exception
    return lines[0][:300] if lines else "(no message)"


class Witnesses:
    """Wraps the marked functions so that each test's first K outermost calls are summarized."""

    def __init__(self, calls: int, samples: int):
        self.calls, self.samples = calls, samples
        self.depth = 0                  # only outermost calls: a student's own call of another marked function is theirs
        self.seen: dict = {}

    def install(self, module_name: str, qualname: str) -> None:
        try:
            owner = importlib.import_module(module_name)
        except Exception:              # a submission that does not import: its tests fail on their own
            return
        *path, name = qualname.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        raw = getattr(owner, "__dict__", {}).get(name)
        if raw is None:
            return
        kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
        function = raw.__func__ if kind else raw
        wrapped = self.wrap(qualname, function)
        setattr(owner, name, kind(wrapped) if kind else wrapped)
        if not path:                    # a module's function: also where other modules imported it by name
            for module in list(sys.modules.values()):
                if getattr(module, "__name__", "").startswith("minigen") and getattr(module, name, None) is function:
                    setattr(module, name, wrapped)

    def wrap(self, qualname: str, function):
        def witnessed(*args, **kwargs):
            self.depth += 1
            try:
                result = function(*args, **kwargs)
            except BaseException as e:
                if self.depth == 1:
                    self.note(qualname, {"raised": type(e).__name__})
                raise
            finally:
                self.depth -= 1
            if self.depth == 0:
                self.note(qualname, self.summary(function.__name__, result, args, kwargs))
            return result
        witnessed.__wrapped__ = function
        return witnessed

    def note(self, qualname: str, call: dict) -> None:
        entry = self.seen.setdefault(qualname, {"count": 0, "calls": []})
        entry["count"] += 1
        if len(entry["calls"]) < self.calls:
            entry["calls"].append(call)

    def summary(self, name: str, result, args, kwargs) -> dict:
        """{where: [shape, numbers]} of the return value and of the arguments after the call
        (an __init__'s object by its attributes: it is what __init__ makes)."""
        out: dict = {}
        self.arrays("return", result, out)
        for i, arg in enumerate(args):
            self.arrays(f"arg{i}", vars(arg) if name == "__init__" and i == 0 else arg, out)
        for key, arg in kwargs.items():
            self.arrays(key, arg, out)
        return out

    def arrays(self, where: str, value, out: dict, depth: int = 0) -> None:
        import numpy as np
        if depth > 2 or len(out) > 64:
            return
        data = getattr(value, "data", None)
        if isinstance(value, (np.ndarray, np.generic, int, float, bool)) or isinstance(data, np.ndarray):
            array = np.asarray(data if isinstance(data, np.ndarray) else value)
            if array.dtype.kind in "biuf":
                flat = array.astype(np.float64).ravel()
                picks = flat[np.linspace(0, flat.size - 1, min(self.samples, flat.size)).astype(int)] if flat.size \
                    else flat
                stats = [flat.mean(), np.abs(flat).mean(), np.sqrt((flat ** 2).mean())] if flat.size else []
                out[where] = [list(array.shape), [float(x) for x in [*stats, *picks]]]
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                self.arrays(f"{where}.{key}", value[key], out, depth + 1)
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.arrays(f"{where}[{i}]", item, out, depth + 1)
        elif callable(getattr(value, "parameters", None)):
            self.arrays(f"{where}.parameters()", list(value.parameters()), out, depth + 1)

    def take(self) -> dict:
        seen, self.seen = self.seen, {}
        return seen


class Reporter:
    """The pytest plugin that sends each test phase's outcome, and each test's witnesses, to the parent."""

    def __init__(self, out, witnesses: Witnesses):
        self.out, self.witnesses = out, witnesses

    def send(self, **record) -> None:
        self.out.write(json.dumps(record) + "\n")
        self.out.flush()

    def pytest_runtest_logstart(self, nodeid, location):
        self.witnesses.take()

    def pytest_runtest_logfinish(self, nodeid, location):
        self.send(kind="witness", nodeid=nodeid, functions=self.witnesses.take())

    def pytest_collectreport(self, report):
        if report.failed:
            self.send(kind="collect", nodeid=report.nodeid, outcome="failed", message=first_line(report))

    def pytest_runtest_logreport(self, report):
        outcome = report.outcome if report.when == "call" or report.failed else "setup-ok"
        self.send(kind="test", nodeid=report.nodeid, when=report.when, outcome=outcome,
                  message=first_line(report) if report.failed else "")


def main() -> int:
    orders = json.loads(sys.stdin.readline())
    out = os.fdopen(orders["fd"], "w", encoding="utf-8")
    root = orders["root"]
    sys.path[:] = [root] + orders["path"]
    witnesses = Witnesses(orders["witness"]["calls"], orders["witness"]["samples"])
    reporter = Reporter(out, witnesses)
    found = importlib.util.find_spec("minigen")      # where `import minigen` goes, found without running it
    origin = os.path.realpath(found.origin) if found and found.origin else "nothing"
    if not origin.startswith(os.path.realpath(root) + os.sep):
        reporter.send(kind="wrong-minigen", message=f"`import minigen` finds {origin}, not the submission")
        return 3
    import hypothesis                                 # the same examples as the reference's run: comparable witnesses
    hypothesis.settings.register_profile("minigen-grading", derandomize=True, database=None)
    hypothesis.settings.load_profile("minigen-grading")
    for module_name, qualname in orders["witness"]["functions"]:
        witnesses.install(module_name, qualname)
    import pytest
    status = pytest.main(orders["pytest_args"], plugins=[reporter])
    reporter.send(kind="end", status=int(status))
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
