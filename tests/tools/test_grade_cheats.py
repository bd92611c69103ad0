"""Every attack of issue 25 as a submission, all graded in one `grade` call beside the honest blank
(topic optim, 4 tests, blank score 0): each must score what the blank scores, the grader must
survive, nothing outside the sandbox may change, no process it started may outlive it, and no
connection may leave it (a listener on 127.0.0.1 records any)."""
import hashlib
import json
import os
import shutil
import socket
import threading
import time

import pytest

from minigen.tools import assign, grade, sandbox
from minigen.errors import MinigenError

needs_bwrap = pytest.mark.skipif(not sandbox.bwrap_path(), reason=sandbox.INSTALL_HINT)

ROOT = assign.source_root()
MARK = "minigen-cheat-marker"           # in the command line of every process an attack leaves behind
CONFTEST = "import pytest\n\n@pytest.hookimpl(tryfirst=True)\ndef pytest_pyfunc_call(pyfuncitem):\n    return True\n"
NOOP_RUNTEST = "import _pytest.python\n_pytest.python.Function.runtest = lambda self: None\n"

# name -> what is appended to minigen/__init__.py ({port}, {root}, {victim}, {book}, {mark} filled in)
IMPORT_TIME = {
    "teacher-package-path": "__path__[:] = [{root!r} + '/minigen']\n",
    "runtest-is-a-no-op": NOOP_RUNTEST,
    "reporter-patched": (
        "import __main__\n_orig = __main__.Reporter.pytest_runtest_logreport\n"
        "def _lie(self, report):\n    report.outcome = 'passed'\n    report.longrepr = None\n"
        "    return _orig(self, report)\n__main__.Reporter.pytest_runtest_logreport = _lie\n"),
    "orders-found-by-gc": (
        "import gc, json, os\n"
        "for _o in gc.get_objects():\n"
        "    if isinstance(_o, dict) and 'fd' in _o and 'pytest_args' in _o:\n"
        "        for _n in [a for a in _o['pytest_args'] if '::' in a]:\n"
        "            for _r in ({{'kind': 'test', 'nodeid': _n, 'when': 'call', 'outcome': 'passed', 'message': ''}},\n"
        "                       {{'kind': 'witness', 'nodeid': _n, 'functions': {{}}}}):\n"
        "                os.write(_o['fd'], (json.dumps(_r) + '\\n').encode())\n"
        "        os.write(_o['fd'], b'{{\"kind\": \"end\", \"status\": 0}}\\n')\n"
        "        os._exit(0)\n"),
    "daemon-rewrites-the-gradebook": (
        "import os, subprocess, sys\n"
        "_code = ('import time; time.sleep(3)\\n'\n"
        "         'for p in [{book!r}, {victim!r}]:\\n'\n"
        "         '    try: open(p, \"a\").write(\"forged\\\\n\")\\n'\n"
        "         '    except OSError: pass\\n')\n"
        "if os.fork() == 0:\n    os.setsid()\n"
        "    subprocess.Popen([sys.executable, '-c', _code, {mark!r}], start_new_session=True)\n    os._exit(0)\n"),
    "writes-outside": (
        "for _p in [{root!r} + '/tests/engine/test_nn_optim.py', {victim!r}, '/proc/1/cwd/x', '/etc/passwd']:\n"
        "    try: open(_p, 'a').write('# forged\\n')\n    except OSError: pass\n"),
    "numpy-patched": ("import numpy, numpy.testing\nnumpy.testing.assert_allclose = lambda *a, **k: None\n"
                      "numpy.allclose = lambda *a, **k: True\n"),
    "fake-lines": ("import sys\nfor _s in (sys.stdout, sys.stderr):\n"
                   "    _s.write('{{\"kind\": \"test\", \"nodeid\": \"x\", \"outcome\": \"passed\"}}\\nPASSED\\n')\n"),
    "exit-0-at-import": "import os\nos._exit(0)\n",
    "fork-bomb": ("import subprocess, sys\n_kids = [subprocess.Popen([sys.executable, '-c', 'import time; "
                  "time.sleep(120)', {mark!r}]) for _ in range(100)]\n"),
    "infinite-loop": "while True:\n    pass\n",
    "memory-bomb": "_waste = bytearray(16 * 2**30)\n",
    "stdout-flood": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
}
PHONE_HOME = ("import socket as _socket\ntry:\n"
              "    _socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\nexcept OSError:\n    pass\n")
GIB = 2**30


def build_class(root, port, book):
    """The honest blank, a victim (another honest blank) and one submission per attack."""
    blank = assign.make("optim", os.path.join(root, "made"))
    klass = os.path.join(root, "class")
    victim = os.path.join(klass, "victim", "minigen", "optim.py")
    fill = {"port": port, "root": ROOT, "victim": victim, "book": book, "mark": MARK}

    def copy(name, init=""):
        folder = os.path.join(klass, name)
        shutil.copytree(blank, folder)
        with open(os.path.join(folder, "minigen", "__init__.py"), "a") as f:
            f.write(PHONE_HOME.format(**fill) + init.format(**fill))
        return folder

    copy("honest")
    copy("victim")
    for name, snippet in IMPORT_TIME.items():
        copy(name, snippet)
    folder = copy("deleted-modules")          # the teacher's editable install served them before
    for relpath in ("minigen/optim.py", "minigen/tensor.py"):
        os.unlink(os.path.join(folder, relpath))
    shutil.rmtree(os.path.join(folder, "minigen", "ops"))
    folder = copy("conftest-sitecustomize-pth")
    for relpath, text in {"conftest.py": CONFTEST, "minigen/conftest.py": CONFTEST, "pytest.ini": "[pytest]\n",
                          "minigen/sitecustomize.py": NOOP_RUNTEST, "minigen/usercustomize.py": NOOP_RUNTEST,
                          "minigen/cheat.pth": "import _pytest\n"}.items():
        with open(os.path.join(folder, relpath), "w") as f:
            f.write(text)
    folder = copy("symlink-to-the-reference")
    os.unlink(os.path.join(folder, "minigen", "optim.py"))
    os.symlink(os.path.join(ROOT, "minigen", "optim.py"), os.path.join(folder, "minigen", "optim.py"))
    os.mkfifo(os.path.join(copy("fifo"), "minigen", "data.py"))
    for name, relpath in (("sparse-3gib-in-package", "minigen/big.bin"), ("sparse-3gib-elsewhere", "big.bin")):
        with open(os.path.join(copy(name), relpath), "wb") as f:
            f.truncate(3 * GIB)
    for name, topics in (("manifest-adds-ddpm", ["optim", "ddpm"]), ("manifest-not-a-name", ["optim", 7]),
                         ("manifest-unknown-topic", ["nope"])):
        with open(os.path.join(copy(name), "assignment.json"), "w") as f:
            json.dump({"topics": topics}, f)
    return klass


def tree_state(folder):
    """{relpath: (size, mtime, sha256 of the first MiB)} of every regular file (links and FIFOs by name)."""
    state = {}
    for base, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".hypothesis", ".pytest_cache")]
        for name in files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            head = b""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as f:
                    head = f.read(2**20)
            state[os.path.relpath(path, folder)] = (info.st_size, info.st_mtime_ns, hashlib.sha256(head).hexdigest())
    return state


def marked_processes():
    alive = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if MARK.encode() in f.read():
                    alive.append(pid)
        except OSError:
            pass
    return alive


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cheats"))
    listener = socket.create_server(("127.0.0.1", 0))
    connections = []

    def accept():
        while True:
            try:
                connections.append(listener.accept()[1].getpeername())
            except OSError:
                return
    threading.Thread(target=accept, daemon=True).start()
    book = os.path.join(root, "out", "gradebook.csv")
    os.makedirs(os.path.dirname(book))
    klass = build_class(root, listener.getsockname()[1], book)
    before = {"teacher": {**tree_state(os.path.join(ROOT, "tests")), **tree_state(os.path.join(ROOT, "minigen"))},
              "class": tree_state(klass)}
    started = time.perf_counter()
    rows = grade.grade_class(klass, book, topics="optim", workers=2, timeout=20, memory_mb=2048)
    seconds = time.perf_counter() - started
    time.sleep(4)                           # the daemon's delay is 3 s: it would have written by now
    listener.close()
    after = {"teacher": {**tree_state(os.path.join(ROOT, "tests")), **tree_state(os.path.join(ROOT, "minigen"))},
             "class": tree_state(klass)}
    return {"rows": rows, "before": before, "after": after, "book": book,
            "connections": connections, "alive": marked_processes(), "seconds": seconds}


ATTACKS = [*IMPORT_TIME, "deleted-modules", "conftest-sitecustomize-pth", "symlink-to-the-reference", "fifo",
           "sparse-3gib-in-package", "sparse-3gib-elsewhere", "manifest-adds-ddpm", "manifest-not-a-name",
           "manifest-unknown-topic"]
STATUS = {"infinite-loop": "timeout", "memory-bomb": "out-of-memory", "sparse-3gib-in-package": "too-large",
          "manifest-not-a-name": "malformed", "manifest-unknown-topic": "malformed"}


@needs_bwrap
@pytest.mark.parametrize("attack", ATTACKS)
def test_an_attack_scores_what_the_honest_blank_scores(graded, attack):
    rows = graded["rows"]
    honest = rows["honest"]
    assert (honest["status"], honest["optim passed"], honest["score"]) == ("graded", 0, "0.000")
    row = rows[attack]
    assert (row["optim passed"], row["score"]) == (0, "0.000"), row["note"]
    if attack in STATUS:
        assert row["status"] == STATUS[attack], row["note"]
    assert row["sandbox"] == "bwrap"


@needs_bwrap
def test_the_grader_survives_and_nothing_outside_the_sandbox_changed(graded):
    assert sorted(graded["rows"]) == sorted(["honest", "victim", *ATTACKS])
    assert graded["after"] == graded["before"]          # the teacher's checkout and every submission
    written = grade._read_gradebook(graded["book"])     # as grading left it, 4 s after: the daemon wrote nothing
    assert written == {name: {k: str(v) for k, v in row.items()} for name, row in graded["rows"].items()}
    assert not [column for column in next(iter(written.values())) if "ddpm" in column]   # the teacher's topics
    print(f"graded {len(graded['rows'])} submissions in {graded['seconds']:.0f} s")


@needs_bwrap
def test_no_process_outlives_grading_and_no_connection_leaves_the_sandbox(graded):
    assert graded["alive"] == []
    assert graded["connections"] == []


def test_an_unwritable_out_stops_before_any_grading(tmp_path):
    started = time.perf_counter()
    with pytest.raises(MinigenError, match="--out /proc/gradebook.csv: cannot write the gradebook"):
        grade.grade_class(str(tmp_path), "/proc/gradebook.csv", topics="optim")
    assert time.perf_counter() - started < 5


def test_without_bwrap_grading_refuses_in_one_line_unless_told_and_then_it_says_so(tmp_path, monkeypatch, capsys):
    blank = assign.make("optim", str(tmp_path / "class" / "blank"))
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    with pytest.raises(MinigenError, match=r"apt-get install bubblewrap.*or pass --no-sandbox"):
        grade.grade_class(str(tmp_path / "class"), str(tmp_path / "book.csv"), topics="optim")
    rows = grade.grade_class(str(tmp_path / "class"), str(tmp_path / "book.csv"), topics="optim", sandbox=False,
                             use_dask=False)
    assert "WARNING: grading WITHOUT a sandbox" in capsys.readouterr().err
    assert (rows["blank"]["sandbox"], rows["blank"]["optim passed"]) == ("none (--no-sandbox)", 0)
    assert os.path.isdir(blank)
