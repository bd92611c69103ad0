"""The package's layering, read from the source with the standard library's `ast`: every import
(module-level or inside a function) goes from a higher layer to the same or a lower one, the engine
never imports the tools or the CLI, and no two modules import each other round a circle.

    foundation  errors, random, config, serialize        (no engine imports of their own)
    kernels     minigen/kernels/                         (NumPy + Numba arrays, no autograd)
    autograd    tensor.py, ops/, gradcheck.py            (ops import tensor; tensor finds ops in OPS)
    nn          nn/, optim.py, the package's __init__
    data, out   data/; plots.py, animate.py, viz.py      (pictures of arrays, GIFs, graphs)
    models      models/, metrics.py                      (the yardstick is a model)
    train       train.py, rundir.py                      (the one training loop, its run directories)
    tools       minigen/tools/                           (sweep, grading, reports, tour, demos)
    cli         cli.py, __main__.py
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

LAYERS = [                                   # lowest first; a module's layer is its longest matching prefix
    ("foundation", ["minigen.errors", "minigen.random", "minigen.config", "minigen.serialize"]),
    ("kernels", ["minigen.kernels"]),
    ("autograd", ["minigen.tensor", "minigen.ops", "minigen.gradcheck"]),
    ("nn", ["minigen.nn", "minigen.optim", "minigen"]),
    ("data, out", ["minigen.data", "minigen.plots", "minigen.animate", "minigen.viz"]),
    ("models", ["minigen.models", "minigen.metrics"]),
    ("train", ["minigen.train", "minigen.rundir", "minigen.calibrate"]),   # rundir: issue 26; calibrate: 27
    ("tools", ["minigen.tools"]),
    ("cli", ["minigen.cli", "minigen.__main__"]),
]
ENGINE_MUST_NOT_IMPORT = ("minigen.tools", "minigen.cli", "minigen.__main__")

# Circles still to break, each with the issue that owns it. The test fails on any other circle; when
# one of these is broken, the test asks for its line to be removed.
KNOWN_CIRCLES = {
}
TOOLS_INTERNAL = "minigen.tools"             # circles wholly inside the tools are theirs to keep


def modules(packages=("minigen", "benchmarks")) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def import_graph(found: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the package modules it imports. `from a.b import c` counts as importing a.b.c when c
    is a module, else a.b; a parent package run implicitly by Python is not counted as an import."""
    def resolve(name):
        while name and name not in found:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in found.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(resolve(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    package = package[:len(package) - node.level + 1]
                    base = ".".join(package + ([node.module] if node.module else []))
                targets.update(resolve(f"{base}.{alias.name}") for alias in node.names)
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[frozenset]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    assert best is not None, f"{module}: in no layer of tests/engine/test_layering.py (add it to LAYERS)"
    return best


@pytest.fixture(scope="module")
def graph():
    return import_graph(modules())


def test_the_engine_never_imports_the_tools_or_the_cli(graph):
    wrong = [f"{m} imports {t}" for m, targets in graph.items() if m.startswith("minigen")
             and not m.startswith(ENGINE_MUST_NOT_IMPORT) for t in targets if t.startswith(ENGINE_MUST_NOT_IMPORT)]
    assert not wrong, "the engine imports the tools:\n" + "\n".join(sorted(wrong))


def test_imports_go_down_the_layers(graph):
    wrong = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
             for m, targets in graph.items() if m.startswith("minigen")
             for t in targets if t.startswith("minigen") and layer_of(t) > layer_of(m)]
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circles_outside_the_tools(graph):
    found = [c for c in circles(graph) if not all(m.startswith(TOOLS_INTERNAL + ".") for m in c)]
    new = [sorted(c) for c in found if c not in KNOWN_CIRCLES]
    assert not new, f"import circles: {new}"
    broken = [sorted(c) for c in KNOWN_CIRCLES if c not in found]
    assert not broken, f"these known circles are gone: remove them from KNOWN_CIRCLES: {broken}"


def test_the_graph_sees_circles_and_relative_imports():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    graph = import_graph(modules(("minigen",)))
    assert "minigen.tensor" in graph["minigen.ops.elementwise"]
    assert "minigen.models.base" in graph["minigen.models.vae"]
