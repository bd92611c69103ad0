"""The grading process: runs the teacher's tests against a student's `minigen/`, inside the sandbox.

Run as a script, never imported: `python -I -S grade_runner.py`, started by minigen.tools.grade inside
minigen.tools.sandbox. In this process `import minigen` is the STUDENT's package, so this file imports
nothing from minigen. It reads its orders as one JSON line on stdin, before any student code exists:

    {"fd": results pipe, "root": folder holding the student's minigen/ and the teacher's tests/ (read-only),
     "path": the import path after root, "pytest_args": [...],
     "witness": {"functions": [[module, qualname], ...], "calls": K, "samples": S}}

NOTHING this process sends is trusted: the student's code runs in it and can rewrite any of it.
It sends two kinds of lines, and minigen.tools.judge decides the score outside the sandbox:
- each test phase's outcome (a pass here is necessary, never sufficient);
- each test's witnesses: what the marked functions (the ones the student wrote) returned and left
  in their arguments, for their first K calls in that test, as a few numbers per array. The judge
  compares them with the reference solution's, so a pass also needs the student's functions to
  have computed the reference's results on the teacher's inputs.
"""
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
    """Watches the marked functions (by their code's file and qualified name, so closures such as
    softmax's backward are found too) and summarizes each test's first K outermost calls of each:
    what it returned and what its arguments hold when it returns."""

    def __init__(self, functions: list, calls: int, samples: int):
        self.targets = {(path, qualname) for path, qualname in functions}
        self.calls, self.samples = calls, samples
        self.known: dict = {}           # code object -> its qualified name, or None when not a target
        self.active = 0                 # calls of targets in progress: only outermost ones are noted
        self.seen: dict = {}

    def target(self, code):
        name = self.known.get(code, 0)
        if name == 0:
            path = code.co_filename.replace(os.sep, "/")
            qualname = code.co_qualname.replace(".<locals>", "")
            name = next((q for p, q in self.targets if q == qualname and path.endswith("/" + p)), None)
            self.known[code] = name
        return name

    def profile(self, frame, event, arg):
        if event not in ("call", "return"):
            return
        name = self.target(frame.f_code)
        if name is None:
            return
        if event == "call":
            self.active += 1
            return
        self.active -= 1
        if self.active == 0:
            code = frame.f_code
            names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            arguments = [frame.f_locals.get(n) for n in names]
            if code.co_name == "__init__" and arguments:
                arguments[0] = vars(arguments[0])      # what __init__ makes is its object's attributes
            out: dict = {}
            self.arrays("return", arg, out)
            for n, value in zip(names, arguments):
                self.arrays(n, value, out)
            self.note(name, out)

    def note(self, qualname: str, call: dict) -> None:
        entry = self.seen.setdefault(qualname, {"count": 0, "calls": []})
        entry["count"] += 1
        if len(entry["calls"]) < self.calls:
            entry["calls"].append(call)

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
    witness = orders["witness"]
    witnesses = Witnesses(witness["functions"], witness["calls"], witness["samples"])
    reporter = Reporter(out, witnesses)
    found = importlib.util.find_spec("minigen")      # where `import minigen` goes, found without running it
    origin = os.path.realpath(found.origin) if found and found.origin else "nothing"
    if not origin.startswith(os.path.realpath(root) + os.sep):
        reporter.send(kind="wrong-minigen", message=f"`import minigen` finds {origin}, not the submission")
        return 3
    import hypothesis                                 # the same examples as the reference's run: comparable witnesses
    hypothesis.settings.register_profile("minigen-grading", derandomize=True, database=None)
    hypothesis.settings.load_profile("minigen-grading")
    import pytest
    sys.setprofile(witnesses.profile)
    status = pytest.main(orders["pytest_args"], plugins=[reporter])
    reporter.send(kind="end", status=int(status))
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
