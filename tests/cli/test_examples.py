"""Every example runs end to end at a tiny size and writes its figures; every example is also a
notebook (cell markers, converted by jupytext; the autograd one executed by nbclient); docs/tour.md
names only files, functions, examples and figures that exist (so the tour cannot rot)."""
import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# example -> (the smallest settings, the files it must write under --out)
EXAMPLES = {
    "autograd_mlp.py": (["--epochs", "1", "--max-steps", "5", "--hidden", "16"],
                        ["loss.png", "first_layer_weights.png", "mistakes.png", "graph.svg"]),
    "conv_by_hand.py": (["--batch", "8", "--loop-batch", "1", "--repeats", "1"], ["feature_maps.png"]),
    "vae.py": (["--max-steps", "2", "--eval-n", "20", "--set", "hidden_dim=16", "--set", "iw_samples=2"],
               ["interpolation.png", "reparameterization.png", "vae/samples.png", "vae/latent_manifold.png",
                "vae_graph.svg", "vae/index.html", "vae/generation.gif"]),
    "flow.py": (["--max-steps", "2", "--eval-n", "10", "--set", "hidden_dim=16", "--set", "num_couplings=2"],
                ["there_and_back.png", "temperature.png", "flow/checkpoint.npz"]),
    "pixelcnn.py": (["--max-steps", "2", "--eval-n", "10", "--set", "channels=8", "--set", "num_blocks=1"],
                    ["receptive_field.png", "pixelcnn/pixelcnn_samples.png"]),
    "ddpm.py": (["--max-steps", "1", "--eval-n", "8", "--set", "channels=[8,8,8]", "--set", "groups=4",
                 "--set", "time_dim=16", "--set", "sample_steps=3", "--set", "batch_size=8"],
                ["noising.png", "denoising.png", "ddpm/ddpm_forward.png"]),
    "flow_matching.py": (["--max-steps", "1", "--eval-n", "8", "--set", "channels=[8,8,8]", "--set", "groups=4",
                          "--set", "time_dim=16", "--set", "sample_steps=3", "--set", "batch_size=8",
                          "--set", "likelihood_examples=2", "--set", "likelihood_steps=2"],
                         ["straight_line.png", "few_steps.png", "flowmatch/flowmatch_interpolation.png"]),
    "gan.py": (["--max-steps", "1", "--eval-n", "8", "--set", "batch_size=8", "--set", "collapse_samples=10"],
               ["walk.png", "gan/gan_latent.png"]),
    "conditional.py": (["--families", "nar,vae", "--max-steps", "1", "--eval-n", "8"], ["write_me_a_7.png"]),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_runs_tiny_and_writes_its_figures(name, tmp_path):
    args, outputs = EXAMPLES[name]
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join("examples", name), "--out", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for path in map(drawn, outputs):
        assert (out / path).is_file(), f"{name} did not write {path}:\n{proc.stdout[-2000:]}"
    assert str(out) in proc.stdout                                 # it says where the figures went


def drawn(path: str) -> str:
    """A graph drawing is an .svg with Graphviz's dot, its DOT text (.dot) without."""
    return path[:-4] + ".dot" if path.endswith(".svg") and shutil.which("dot") is None else path


# --- the examples as notebooks -------------------------------------------------------------------
SCRIPTS = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_example_converts_to_a_notebook_with_markdown_and_code_cells(name):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(os.path.join(ROOT, "examples", name))
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= 2 and kinds.count("code") >= 2, kinds
    # the notebook holds the whole script: its code cells, joined, are the script without the markers
    with open(os.path.join(ROOT, "examples", name), encoding="utf-8") as f:
        code_lines = [line for line in f.read().splitlines() if line.strip() and not line.startswith("#")]
    cells = "\n".join(c.source for c in notebook.cells if c.cell_type == "code").splitlines()
    assert [line for line in cells if line.strip() and not line.startswith("#")] == code_lines


def test_the_autograd_example_runs_as_a_notebook(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    notebook = jupytext.read(os.path.join(ROOT, "examples", "autograd_mlp.py"))
    out = tmp_path / "out"
    tiny = ["autograd_mlp.py", "--out", str(out), *EXAMPLES["autograd_mlp.py"][0]]
    # a first cell chooses the options, as a reader would in Jupyter (the kernel's own argv is ignored)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"import sys\nsys.argv = {tiny!r}"))
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": os.path.join(ROOT, "examples")}})
    old_env = dict(os.environ)
    os.environ.update(env)               # the kernel inherits this process's environment
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old_env)
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "test accuracy" in outputs
    for path in map(drawn, EXAMPLES["autograd_mlp.py"][1]):
        assert (out / path).is_file(), f"the notebook did not write {path}"


def test_every_example_is_tested():
    scripts = {f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")}
    # common.py is the examples' shared helper; ar_vs_nar.py wraps minigen/tools/demos/ar_vs_nar.py (tests/models/test_nar.py)
    assert scripts - {"common.py", "ar_vs_nar.py"} == set(EXAMPLES)


# --- docs/tour.md ---------------------------------------------------------------------------------
PATH = re.compile(r"`((?:minigen|examples)/[\w/]+\.py)`")
NAME = re.compile(r"`([A-Za-z_][\w.]*)`")
FIGURE = re.compile(r"`([\w]+\.(?:png|svg|gif))`")


def definitions(path: str) -> set:
    """Names defined in a Python file: top-level functions and classes, and Class.method."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)}
    return names


def tour_references():
    """(line number, file, [names after it on that line], [figures on the line]) for every line of the
    tour that names a minigen/ or examples/ file; a name belongs to the nearest file before it."""
    with open(os.path.join(ROOT, "docs", "tour.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        paths = list(PATH.finditer(line))
        for i, m in enumerate(paths):
            end = paths[i + 1].start() if i + 1 < len(paths) else len(line)
            names = [n for n in NAME.findall(line[m.end():end]) if not n.endswith((".py", ".png", ".svg", ".gif"))]
            yield number, m.group(1), names, FIGURE.findall(line), [p.group(1) for p in paths]


def test_the_tour_names_only_files_and_functions_that_exist():
    refs = list(tour_references())
    assert len(refs) > 30
    for number, path, names, _, _ in refs:
        assert os.path.isfile(os.path.join(ROOT, path)), f"docs/tour.md:{number}: {path} does not exist"
        missing = set(names) - definitions(path)
        assert not missing, f"docs/tour.md:{number}: {path} defines no {sorted(missing)}"


def test_every_figure_in_the_tour_is_written_by_a_file_on_its_line():
    """A figure is written by the example on its line, or by the model (its `figures`) on that line."""
    for number, _, _, figures, paths in tour_references():
        sources = "".join(open(os.path.join(ROOT, p), encoding="utf-8").read() for p in paths)
        for figure in figures:
            assert figure in sources, f"docs/tour.md:{number}: no file on the line writes {figure}"


def test_the_tour_covers_every_family_and_example():
    with open(os.path.join(ROOT, "docs", "tour.md"), encoding="utf-8") as f:
        tour = f.read()
    for module in ("pixelcnn", "nar", "vae", "flow", "ddpm", "flow_matching", "gan"):
        assert f"minigen/models/{module}.py" in tour
    for script in list(EXAMPLES) + ["ar_vs_nar.py"]:
        assert f"examples/{script}" in tour
