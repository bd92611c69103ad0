"""The grading process: runs the teacher's tests against a student's `minigen/` in a scratch folder.

Run as a script, never imported: `python -I grade_runner.py`, started by minigen.tools.grade. In this
process `import minigen` is the STUDENT's package, so this file imports nothing from minigen.
It reads its orders as one JSON line on stdin, before any student code exists in the process:

    {"token": secret, "fd": results pipe, "scratch": folder holding the
     student's minigen/ and the teacher's tests/, "tests": {relpath: source text}, "pytest_args": [...]}

Three defences against a submission that tries to score what it did not earn:
- the test modules are compiled from the teacher's source received here (assertions rewritten as
  pytest does), not read from disk, so rewriting or deleting tests/ at import time changes nothing
  that runs; files found changed or missing on disk are put back before each collection step;
- results leave through an inherited pipe, one JSON line per test phase, each carrying the secret
  token (the parent drops lines without it), and a failed phase always wins over a passed one;
- pytest starts with only this plugin and hypothesis's (no autoloaded plugins, no conftest but the
  teacher's, a teacher-made ini file given with -c).
"""
import ast
import importlib.abc
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


class TeacherTests(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves the `tests` package from the teacher's source held in memory, with pytest's assertion
    rewriting, ahead of every other importer."""

    def __init__(self, scratch: str, sources: dict, config):
        self.scratch, self.sources, self.config = scratch, sources, config

    def _relpath(self, fullname: str):
        if fullname != "tests" and not fullname.startswith("tests."):
            return None
        base = fullname.replace(".", "/")
        for relpath in (base + ".py", base + "/__init__.py"):
            if relpath in self.sources:
                return relpath
        return None

    def find_spec(self, fullname, path=None, target=None):
        relpath = self._relpath(fullname)
        if relpath is None:
            return None
        origin = os.path.join(self.scratch, relpath)
        spec = importlib.util.spec_from_loader(fullname, self, origin=origin,
                                               is_package=relpath.endswith("__init__.py"))
        spec.has_location = True
        if relpath.endswith("__init__.py"):
            spec.submodule_search_locations = [os.path.dirname(origin)]
        return spec

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        from _pytest.assertion.rewrite import rewrite_asserts
        relpath = self._relpath(module.__name__)
        origin = os.path.join(self.scratch, relpath)
        source = self.sources[relpath].encode("utf-8")
        tree = ast.parse(source, origin)
        rewrite_asserts(tree, source, origin, self.config)
        module.__file__ = origin
        exec(compile(tree, origin, "exec", dont_inherit=True), module.__dict__)

    def restore(self) -> list:
        """Put back any teacher file that was changed or removed on disk (pytest finds tests by path);
        returns the ones put back."""
        restored = []
        for relpath, text in self.sources.items():
            path = os.path.join(self.scratch, relpath)
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() == text:
                        continue
            except (OSError, UnicodeDecodeError):
                pass
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if os.path.isdir(path) and not os.path.islink(path):
                os.rename(path, path + ".moved-by-submission")
            elif os.path.lexists(path):
                os.unlink(path)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            restored.append(relpath)
        return restored


class Reporter:
    """The pytest plugin that sends each test phase's outcome to the parent."""

    def __init__(self, out, token: str, tests: TeacherTests):
        self.out, self.token, self.tests = out, token, tests

    def send(self, **record) -> None:
        self.out.write(json.dumps({"token": self.token, **record}) + "\n")
        self.out.flush()

    def pytest_configure(self, config):
        self.tests.config = config

    def pytest_sessionstart(self, session):
        sys.meta_path.insert(0, self.tests)         # ahead of pytest's own assertion-rewriting importer

    def pytest_collectstart(self, collector):
        restored = self.tests.restore()
        if restored:
            self.send(kind="restored", paths=restored)

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
    scratch = orders["scratch"]
    sys.path[:] = [scratch] + [p for p in sys.path if p and os.path.abspath(p) != os.path.dirname(__file__)]
    tests = TeacherTests(scratch, orders["tests"], None)
    reporter = Reporter(out, orders["token"], tests)
    found = importlib.util.find_spec("minigen")      # where `import minigen` goes, found without running it
    origin = os.path.realpath(found.origin) if found and found.origin else "nothing"
    if not origin.startswith(os.path.realpath(scratch) + os.sep):   # e.g. an editable install's finder won
        reporter.send(kind="wrong-minigen", message=f"`import minigen` finds {origin}, not the submission")
        return 3
    import pytest
    status = pytest.main(orders["pytest_args"], plugins=[reporter])
    reporter.send(kind="end", status=int(status))
    return int(status)


if __name__ == "__main__":
    sys.exit(main())
