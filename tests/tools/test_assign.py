"""Assignment mode: the markers (pure text, every topic), make's and check's errors, and two topics
end to end: the student copy fails the topic's tests and the reference copy passes them."""
import ast
import json
import os
import shutil

import pytest

from minigen.tools import assign, sandbox
from minigen.cli import main as cli_main
from minigen.errors import MinigenError

ROOT = assign.source_root()
SOLUTIONS = assign.all_solutions()


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


# --- markers: pure text ------------------------------------------------------------------------
@pytest.mark.parametrize("topic", list(assign.TOPIC_TESTS))
def test_every_topic_has_markers_and_tests(topic):
    assert [s for s in SOLUTIONS if s.topic == topic], f"no BEGIN SOLUTION {topic} marker in minigen/"
    assert assign.TOPIC_TESTS[topic]


def test_markers_change_no_code():
    """The reference copy (no topics) differs from the source by the marker comments only: same AST."""
    for path in sorted({s.path for s in SOLUTIONS}):
        text = read(path)
        stripped = assign.strip_solutions(text, [], path)
        assert "SOLUTION" not in stripped
        assert ast.dump(ast.parse(stripped)) == ast.dump(ast.parse(text)), path


def _function(tree: ast.AST, dotted: str) -> ast.AST:
    """The def named by a dotted path like "AffineCoupling.forward" or "mul.backward"."""
    node = tree
    for name in dotted.split("."):
        node = next(n for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name)
    return node


@pytest.mark.parametrize("topic", list(assign.TOPIC_TESTS))
def test_a_topic_becomes_one_raise_with_its_hint_in_each_marked_function(topic):
    for path in sorted({s.path for s in SOLUTIONS if s.topic == topic}):
        text = read(path)
        student = assign.strip_solutions(text, [topic], path)
        assert "SOLUTION" not in student
        tree = ast.parse(student)                    # still valid Python: the raise is at the right indentation
        for s in (s for s in SOLUTIONS if s.path == path and s.topic == topic):
            raises = [n for n in ast.walk(_function(tree, s.where)) if isinstance(n, ast.Raise)
                      and isinstance(n.exc, ast.Call) and getattr(n.exc.func, "id", "") == "NotImplementedError"]
            assert [r.exc.args[0].value for r in raises] == [f"{topic}: {s.hint}"], (path, s.where)
        # the other topics' code in the same file is kept
        others = [s for s in SOLUTIONS if s.path == path and s.topic != topic]
        assert student.count("NotImplementedError(") == text.count("NotImplementedError(") + sum(
            1 for s in SOLUTIONS if s.path == path and s.topic == topic)
        for s in others:
            kept = text.splitlines()[s.begin:s.end - 1]
            assert "\n".join(kept) in student


def test_strip_replaces_only_the_marked_lines():
    text = ("def f(x):\n"
            "    \"\"\"Doc.\"\"\"\n"
            "    y = 1\n"
            "    # BEGIN SOLUTION vae: add y\n"
            "    z = x + y\n"
            "    return z\n"
            "    # END SOLUTION\n"
            "\n"
            "def g():\n"
            "    # BEGIN SOLUTION gan: one\n"
            "    return 1\n"
            "    # END SOLUTION\n")
    assert assign.strip_solutions(text, ["vae"]) == (
        "def f(x):\n    \"\"\"Doc.\"\"\"\n    y = 1\n    raise NotImplementedError('vae: add y')\n\n"
        "def g():\n    return 1\n")
    (f, g) = assign.find_solutions(text, "t.py")
    assert (f.topic, f.hint, f.begin, f.end, f.where) == ("vae", "add y", 4, 7, "f")
    assert (g.topic, g.where) == ("gan", "g")


@pytest.mark.parametrize("text, message", [
    ("    # BEGIN SOLUTION vae: x\n    pass\n", "t.py:1: BEGIN SOLUTION without an END"),
    ("    pass\n    # END SOLUTION\n", "t.py:2: END SOLUTION without a BEGIN"),
    ("# BEGIN SOLUTION vae: x\n# BEGIN SOLUTION vae: y\npass\n# END SOLUTION\n", "t.py:2: BEGIN SOLUTION inside"),
    ("# BEGIN SOLUTION vae: x\n# END SOLUTION\n", "t.py:1: the solution block is empty"),
    ("# BEGIN SOLUTION vae\npass\n# END SOLUTION\n", "t.py:1: a marker must read"),
])
def test_malformed_markers_are_named_by_file_and_line(text, message):
    with pytest.raises(MinigenError, match=message):
        assign.find_solutions(text, "t.py")


# --- make: errors -------------------------------------------------------------------------------
def test_unknown_topics_are_a_clear_error(tmp_path):
    with pytest.raises(MinigenError, match=r"unknown topic\(s\) 'vea'; expected some of: autograd, conv"):
        assign.make("autograd,vea", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    assert cli_main(["assign", "make", "--topics", "vea", "--out", str(tmp_path / "out")]) == 2


def test_a_topic_without_markers_is_a_clear_error(tmp_path):
    """A source tree whose vae markers were removed cannot make a vae assignment."""
    root = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "minigen"), root / "minigen", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tests").mkdir()
    (root / "setup.cfg").write_text("")
    (root / "pyproject.toml").write_text("")
    vae = root / "minigen" / "models" / "vae.py"
    vae.write_text(assign.strip_solutions(vae.read_text(), []))
    with pytest.raises(MinigenError, match="topic\\(s\\) vae: no '# BEGIN SOLUTION <topic>: ...' marker"):
        assign.make(["vae"], str(tmp_path / "out"), root=str(root))
    assign.make(["gan"], str(tmp_path / "gan-only"), root=str(root))   # the other topics still work


def test_make_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(MinigenError, match="already exists and is not an empty folder"):
        assign.make(["vae"], str(tmp_path))


def test_check_refuses_a_folder_that_is_not_a_student_copy(tmp_path):
    with pytest.raises(MinigenError, match="is not a copy made by `minigen assign make`"):
        assign.check(str(tmp_path))


def test_check_refuses_a_copy_whose_minigen_is_not_a_package(tmp_path):
    """No minigen/__init__.py: `import minigen` would find the installed package, and check says so."""
    (tmp_path / "minigen").mkdir()
    (tmp_path / assign.MANIFEST).write_text(json.dumps({"topics": ["vae"], "todo": []}))
    with pytest.raises(MinigenError, match="no minigen/__init__.py: not a copy made by `minigen assign make`"):
        assign.check(str(tmp_path))


# --- end to end: two topics -----------------------------------------------------------------------
@pytest.mark.skipif(not sandbox.bwrap_path(), reason=sandbox.INSTALL_HINT)
def test_student_copy_fails_the_topics_and_the_reference_copy_passes_them(tmp_path, capsys):
    student = assign.make("autograd,vae", str(tmp_path / "student"))
    reference = assign.make([], str(tmp_path / "reference"))
    for name in ("README.md", "assignment.json", "setup.cfg", "pyproject.toml", "tests/models/test_vae.py"):
        assert os.path.exists(os.path.join(student, name)), name
    readme = open(os.path.join(student, "README.md")).read()
    assert "`minigen/models/vae.py`, `reparameterize`" in readme and "## autograd" in readme

    scores = assign.check(student)                               # the assignment's topics
    assert set(scores) == {"autograd", "vae"}
    for topic, score in scores.items():
        assert score["total"] >= len(assign.TOPIC_TESTS[topic]) and score["passed"] == 0, (topic, score)
    assert "autograd     0/" in capsys.readouterr().out

    assert assign.main(["check", reference, "--topic", "autograd,vae"]) == 0   # exit status 0: all passed
    printed = capsys.readouterr().out
    for topic, score in scores.items():
        assert f"{topic:<10} {score['total']:>3}/{score['total']:<3} passed" in printed, printed
