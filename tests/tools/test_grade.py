"""Grading a class safely (minigen.tools.grade): the teacher's tests, not the student's; limits per
submission; a gradebook that resumes. Made-up submissions of the cheapest topic (optim: 4 tests).
The attacks of issue 25 are in tests/test_grade_cheats.py."""
import csv
import os
import shutil

import pytest

from minigen.tools import assign, grade, jobs, sandbox
from minigen.cli import main as cli_main

pytest.importorskip("dask.distributed")     # the test extra installs it; the fallback is tested below too
pytestmark = pytest.mark.skipif(not sandbox.bwrap_path(), reason=sandbox.INSTALL_HINT)

OPTIM = "minigen/optim.py"
WRONG = ("m *= beta1\n", "m *= beta2\n")                  # a plausible slip: the wrong decay for m
LOOP = "def step(self) -> None:\n"                               # every step() of every optimizer spins forever
CONFTEST_TRICK = ("import pytest\n\n@pytest.hookimpl(tryfirst=True)\n"
                  "def pytest_pyfunc_call(pyfuncitem):\n    return True\n")
TAMPER = '''
import os as _os, pathlib as _pathlib
try:                                # delete every test, rewrite one: the tests are read-only in the sandbox
    for _p in _pathlib.Path(_os.getcwd(), "tests").rglob("test_*.py"):
        _p.unlink()
    (_pathlib.Path(_os.getcwd(), "tests", "engine") / "test_nn_optim.py").write_text("def test_adam(): pass\\n")
except OSError:
    pass
'''


def reference_optim() -> str:
    with open(os.path.join(assign.source_root(), OPTIM), encoding="utf-8") as f:
        return assign.strip_solutions(f.read(), [], OPTIM)


def edit(folder, relpath, change):
    path = os.path.join(folder, relpath)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(change(text))


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    return assign.make("optim", str(tmp_path_factory.mktemp("made") / "blank"))


def student(blank, root, name, optim=None, init=None, extra=None):
    """A copy of the blank assignment with its optim.py replaced, its __init__.py changed, extra files."""
    folder = os.path.join(root, name)
    shutil.copytree(blank, folder)
    if optim is not None:
        edit(folder, OPTIM, lambda _: optim)
    if init is not None:
        edit(folder, "minigen/__init__.py", init)
    for relpath, text in (extra or {}).items():
        os.makedirs(os.path.dirname(os.path.join(folder, relpath)), exist_ok=True)
        with open(os.path.join(folder, relpath), "w") as f:
            f.write(text)
    return folder


@pytest.fixture(scope="module")
def klass(blank, tmp_path_factory):
    """The five made-up submissions of the issue."""
    root = str(tmp_path_factory.mktemp("class"))
    right = reference_optim()
    student(blank, root, "correct", optim=right)
    student(blank, root, "wrong", optim=right.replace(*WRONG))
    student(blank, root, "loops", optim=right.replace(LOOP, LOOP + "        while True:\n            pass\n"))
    student(blank, root, "raises", optim=right, init=lambda text: "raise RuntimeError('boom at import')\n" + text)
    student(blank, root, "cheats", extra={
        "conftest.py": CONFTEST_TRICK, "minigen/conftest.py": CONFTEST_TRICK,
        "pytest.ini": "[pytest]\naddopts = -p no:python\n",
        "tests/engine/test_nn_optim.py": "def test_adam_matches_hand_computation(): pass\n"})
    return root


EXPECTED = {   # student: (status, optim passed, optim total, optim score)
    "cheats": ("graded", "0", "4", "0.000"),
    "correct": ("graded", "4", "4", "1.000"),
    "loops": ("timeout", "0", "4", "0.000"),
    "raises": ("crashed", "0", "4", "0.000"),
    "wrong": ("graded", "1", "4", "0.250"),      # the state round trip does not check the formula
}


def read_rows(path):
    with open(path, newline="") as f:
        return {r["student"]: r for r in csv.DictReader(f)}


def test_a_class_on_a_local_dask_cluster_gives_exactly_the_expected_gradebook(klass, tmp_path):
    out = tmp_path / "gradebook.csv"
    assert cli_main(["assign", "grade", klass, "--out", str(out), "--workers", "2", "--timeout", "15",
                     "--topics", "optim"]) == 0
    rows = read_rows(out)
    got = {name: (r["status"], r["optim passed"], r["optim total"], r["optim score"]) for name, r in rows.items()}
    assert got == EXPECTED
    assert "RuntimeError: boom at import" in rows["raises"]["note"]
    assert "unfinished: optim" in rows["loops"]["note"]
    n_tests = sum(len(files) for _, _, files in os.walk(os.path.join(klass, "cheats", "tests")))
    assert rows["cheats"]["ignored"] == "README.md, conftest.py, minigen/conftest.py, pyproject.toml, pytest.ini, " \
                                        f"setup.cfg, tests/ ({n_tests} files)"
    feedback = (tmp_path / "feedback" / "wrong.txt").read_text()
    assert "optim: 1/4 passed" in feedback
    assert "FAILED tests/engine/test_nn_optim.py::test_adam_matches_hand_computation[Adam-0.0]: " in feedback
    assert "assert" in feedback.split("[Adam-0.0]: ")[1].splitlines()[0]        # the first error line
    assert "NotImplementedError: optim: weight decay" in (tmp_path / "feedback" / "cheats.txt").read_text()


def test_the_gradebook_resumes_and_regrades_only_a_changed_submission(klass, tmp_path):
    sub = os.path.join(str(tmp_path), "two")
    for name in ("correct", "wrong"):
        shutil.copytree(os.path.join(klass, name), os.path.join(sub, name))
    out = str(tmp_path / "book.csv")
    graded = []
    first = grade.grade_class(sub, out, topics="optim", workers=1, timeout=60, use_dask=False, progress=graded.append)
    assert sorted(r["student"] for r in graded) == ["correct", "wrong"]
    assert first["wrong"]["optim passed"] == 1
    graded.clear()
    grade.grade_class(sub, out, topics="optim", workers=1, timeout=60, use_dask=False, progress=graded.append)
    assert graded == []                                    # unchanged: nothing regraded
    edit(os.path.join(sub, "wrong"), OPTIM, lambda text: text.replace(*reversed(WRONG)))
    rows = grade.grade_class(sub, out, topics="optim", workers=1, timeout=60, use_dask=False,
                             progress=graded.append)
    assert [r["student"] for r in graded] == ["wrong"]      # the fixed one only
    assert rows["wrong"]["optim passed"] == 4 and read_rows(out)["correct"]["optim passed"] == "4"
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_without_dask_the_same_submission_gets_the_same_row(klass, tmp_path, capfd):
    """The concurrent.futures fallback (forced, as when Dask is not installed) says so in one line."""
    sub = os.path.join(str(tmp_path), "one")
    shutil.copytree(os.path.join(klass, "wrong"), os.path.join(sub, "wrong"))
    os.environ[jobs.NO_DASK_ENV] = "1"
    try:
        rows = grade.grade_class(sub, str(tmp_path / "b.csv"), topics="optim", workers=2, timeout=60)
    finally:
        del os.environ[jobs.NO_DASK_ENV]
    assert "Dask distributed not in use" in capfd.readouterr().err
    assert (rows["wrong"]["status"], rows["wrong"]["optim passed"], rows["wrong"]["optim total"]) == ("graded", 1, 4)


@pytest.mark.parametrize("right, passed", [(True, 4), (False, 1)])
def test_deleting_and_rewriting_the_tests_at_import_changes_nothing(blank, tmp_path, right, passed):
    optim = reference_optim()
    folder = student(blank, str(tmp_path), "tamper", optim=optim if right else optim.replace(*WRONG),
                     init=lambda text: text + TAMPER)
    scores = assign.check(folder, verbose=True)
    assert (scores["optim"]["passed"], scores["optim"]["total"]) == (passed, 4)


def test_the_conftest_trick_and_an_edited_test_score_nothing_in_check(klass, capsys):
    assert assign.main(["check", os.path.join(klass, "cheats")]) == 1
    printed = capsys.readouterr().out
    assert "optim        0/4   passed" in printed
    assert "ignored (only minigen/ is graded): README.md, conftest.py, minigen/conftest.py" in printed


def test_a_malformed_submission_and_bad_options_are_clear(tmp_path, capsys):
    (tmp_path / "class" / "empty").mkdir(parents=True)
    assert cli_main(["assign", "grade", str(tmp_path / "class"), "--out", str(tmp_path / "g.csv"),
                     "--topics", "optim"]) == 0
    row = read_rows(tmp_path / "g.csv")["empty"]
    assert (row["status"], row["optim passed"], row["note"]) == (
        "malformed", "0", "no minigen/__init__.py: not a copy made by `minigen assign make`")
    assert cli_main(["assign", "grade", str(tmp_path / "nope"), "--out", str(tmp_path / "g.csv"),
                     "--topics", "optim"]) == 2
    assert "is not a folder of submissions" in capsys.readouterr().err
    with pytest.raises(SystemExit):                 # the topics are the teacher's to name, never the submissions'
        cli_main(["assign", "grade", str(tmp_path / "class"), "--out", str(tmp_path / "g.csv")])
    assert "one of the arguments --topics --assignment is required" in capsys.readouterr().err


def test_a_submission_past_the_memory_limit_is_out_of_memory(blank, tmp_path, capsys):
    """2.4 GB in every optimizer step: fine on this machine, past a 1000 MB limit."""
    optim = reference_optim().replace(LOOP, LOOP + "        waste = np.ones(3 * 10**8)\n")
    folder = student(blank, str(tmp_path), "hungry", optim=optim)
    scores = assign.check(folder, memory_mb=1000)
    assert scores["optim"]["passed"] == 0
    assert "out-of-memory: ran out of memory (limit 1000 MB)" in capsys.readouterr().out
