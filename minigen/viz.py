"""The autograd graph, drawn: Graphviz DOT text for the graph behind a tensor (and SVG/PNG with `dot`).

    loss = ops.cross_entropy(mlp(params, Tensor(x)), y)
    viz.draw(loss, "graph.svg", names=params)          # before loss.backward(): backward frees the graph

    with viz.trace_modules(model):                      # remember which module made each node
        loss = model(x)
    viz.draw(loss, "vae_graph.svg")                     # one box per Linear / Conv2d / ResBlock ...

One node per op (its name, output shape and dtype), leaves marked as parameters or inputs,
edges pointing the way the data flowed, nodes that need no gradient greyed. A graph recorded
under `trace_modules` is collapsed to one node per module call, at the deepest module level that
still fits `max_nodes` boxes (expand=True draws every op instead). Scalar constants (the 0.5 in
`t * 0.5`) are left out.

Tracing costs nothing when off: `trace_modules` puts a tagging `Module.__call__` in place only
for the duration of its block (and puts the plain one back after), and the ops are untouched (the
tags live in a weak dictionary on the side).
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import sys
import weakref

from minigen.errors import MinigenError
from minigen.nn.module import Module, Parameter
from minigen.tensor import Tensor, _topological_order

__all__ = ["graph", "render", "draw", "trace_modules"]

# tensor -> [_Call, ...] outermost first: the module calls that made it (filled only while tracing)
_TAGS: "weakref.WeakKeyDictionary[Tensor, list]" = weakref.WeakKeyDictionary()
_call_ids = itertools.count(1)


class _Call:
    """One call of a module during tracing; `id` grows with call order, so a larger id was entered later."""
    __slots__ = ("id", "module", "name")

    def __init__(self, module: Module, name: str):
        self.id, self.module, self.name = next(_call_ids), module, name


def _tensors(value) -> list:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _tag(call: _Call, outputs, inputs) -> None:
    """Mark every node made during `call`: walk back from its outputs, stopping at its inputs, at
    leaves that are not parameters, and at nodes an earlier (not nested) call already claimed."""
    stop = {id(t) for t in _tensors(inputs)}
    stack, seen = _tensors(outputs), set()
    while stack:
        node = stack.pop()
        if id(node) in seen or id(node) in stop:
            continue
        seen.add(id(node))
        if node._op == "leaf" and not isinstance(node, Parameter):
            continue
        chain = _TAGS.get(node)
        if chain is None:
            _TAGS[node] = [call]
        elif chain[0].id > call.id:         # made by a call nested in this one: this one encloses it
            chain.insert(0, call)
        else:                               # made before this call started: not ours
            continue
        stack.extend(node._parents)


@contextlib.contextmanager
def trace_modules(root: Module | None = None):
    """While active, every module call tags the graph nodes it creates (for `graph`'s collapsed view).
    root: the model, to name modules by their attribute path (e.g. "enc_hidden", "down.0")."""
    from minigen.nn.layers import Sequential
    names = {}
    if root is not None:
        stack = [("", root)]
        while stack:
            prefix, module = stack.pop()
            names[id(module)] = prefix
            stack.extend((prefix + ("." if prefix else "") + n, c) for n, c in module.named_children())
    plain_call = Module.__call__

    def tagging_call(module, *args, **kwargs):
        if isinstance(module, Sequential):     # a container only: its layers are the boxes
            return module.forward(*args, **kwargs)
        call = _Call(module, names.get(id(module), ""))
        out = module.forward(*args, **kwargs)
        _tag(call, out, (args, kwargs))
        return out

    Module.__call__ = tagging_call
    try:
        yield
    finally:
        Module.__call__ = plain_call


# --- the graph -------------------------------------------------------------------------------------
def _nodes(root: Tensor) -> list:
    """Every node behind root (through all parents, also those that need no gradient), parents first."""
    return [n for n in _topological_order(root, every_parent=True) if not _is_constant(n) or n is root]


def _is_constant(node: Tensor) -> bool:
    return node._op == "leaf" and not node.requires_grad and node.data.size == 1


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _shape(node: Tensor) -> str:
    return f"{tuple(node.shape)} {node.dtype}"


# kind -> (shape, fill colour); anything that needs no gradient is drawn grey instead
_STYLE = {"op": ("ellipse", "#dbe9f6"), "module": ("box", "#c6e2c6"), "parameter": ("box", "#fdf0c2"),
          "input": ("box", "#eeeeee")}
_GREY = 'fillcolor="#eeeeee", fontcolor="#777777", color="#999999"'


def graph(tensor: Tensor, expand: bool = False, names: dict | None = None, max_nodes: int = 40,
          rankdir: str = "LR") -> str:
    """Graphviz DOT text of the graph that computed `tensor`.

    expand: draw every op even where `trace_modules` recorded modules (default: one node per module).
    names: {name: tensor} to label leaves (e.g. a dict of Parameters); traced parameters are named
        after their module attribute. max_nodes: the collapsed view's size limit (it picks the deepest
        module level that fits). Raises MinigenError if backward() already freed the graph.
    """
    if not isinstance(tensor, Tensor):
        raise MinigenError(f"viz.graph: expected a Tensor, got {type(tensor).__name__}")
    if tensor.requires_grad and tensor._op != "leaf" and not tensor._parents:
        raise MinigenError("viz.graph: backward() already freed this graph; draw it before calling backward "
                           "(or pass retain_graph=True to backward)")
    nodes = _nodes(tensor)
    leaf_names = {id(t): name for name, t in (names or {}).items() if isinstance(t, Tensor)}
    chains = {id(n): _TAGS.get(n, []) for n in nodes}
    level = 0 if expand else _collapse_level(nodes, chains, max_nodes)

    def key(node):
        chain = chains[id(node)]
        return ("m",) + tuple(c.id for c in chain[:level]) if level and len(chain) >= level else ("n", id(node))

    groups: dict = {}
    for node in nodes:                       # in data-flow order, so a group's last node is its output
        groups.setdefault(key(node), []).append(node)
    ids = {k: f"n{i}" for i, k in enumerate(groups)}
    lines = ["digraph autograd {", f"  rankdir={rankdir};", '  node [fontname="Helvetica", fontsize=10];',
             '  edge [color="#555555"];']
    for k, members in groups.items():
        out = members[-1]
        if k[0] == "m":
            call = chains[id(out)][level - 1]
            label = f"{type(call.module).__name__} {call.name}".strip() + f"\n{_shape(out)}"
            if len(members) > 1:
                count = sum(m._op != "leaf" for m in members)
                label += f"\n{count} op{'s' if count != 1 else ''}"
            kind = "module"
        elif out._op == "leaf":
            kind = "parameter" if out.requires_grad else "input"
            name = leaf_names.get(id(out)) or _parameter_name(out, chains[id(out)])
            label = f"{kind} {name}".strip() + f"\n{_shape(out)}"
        else:
            kind, label = "op", f"{out._op}\n{_shape(out)}"
        shape, fill = _STYLE[kind]
        style = '"rounded,filled"' if kind == "module" else "filled"
        grey = not any(m.requires_grad for m in members)
        attrs = f"shape={shape}, style={style}, " + (_GREY if grey else f'fillcolor="{fill}"')
        if out is tensor:
            attrs += ", peripheries=2"
        lines.append(f"  {ids[k]} [label={_quote(label)}, {attrs}];")
    edges = {}
    for node in nodes:
        for parent in node._parents:
            if id(parent) in chains:             # not a left-out constant
                a, b = ids[key(parent)], ids[key(node)]
                if a != b:
                    edges.setdefault((a, b), None)
    lines += [f"  {a} -> {b};" for a, b in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _parameter_name(param: Tensor, chain: list) -> str:
    if not chain:
        return ""
    owner = chain[-1]
    attr = next((n for n, v in vars(owner.module).items() if v is param), "")
    return ".".join(p for p in (owner.name, attr) if p)


def _collapse_level(nodes, chains, max_nodes: int) -> int:
    """The deepest module level whose collapsed graph has at most max_nodes nodes (1 if none does;
    0 when nothing was traced)."""
    depth = max((len(c) for c in chains.values()), default=0)
    for level in range(depth, 0, -1):
        keys = {tuple(c.id for c in chains[id(n)][:level]) if len(chains[id(n)]) >= level else id(n)
                for n in nodes}
        if len(keys) <= max_nodes:
            return level
    return min(depth, 1)


# --- rendering ----------------------------------------------------------------------------------------
def render(dot: str, path) -> str:
    """Write DOT text as a picture: path ending .svg or .png is rendered by Graphviz's `dot` program;
    without `dot` (Debian: apt-get install graphviz) the DOT text goes to path with a .dot ending and
    a notice is printed. Returns the path written (atomically)."""
    from minigen.serialize import atomic_write
    path = os.fspath(path)
    fmt = os.path.splitext(path)[1].lstrip(".").lower()
    if fmt not in ("svg", "png", "dot"):
        raise MinigenError(f"viz.render: {path}: expected a .svg, .png or .dot file name")
    if fmt != "dot" and shutil.which("dot") is None:
        path = os.path.splitext(path)[0] + ".dot"
        print(f"minigen: Graphviz's `dot` program is not installed (Debian/Ubuntu: apt-get install graphviz), "
              f"so the graph was written as DOT text to {path} (paste it into any Graphviz viewer)",
              file=sys.stderr)
        fmt = "dot"
    if fmt == "dot":
        data = dot.encode()
    else:
        proc = subprocess.run(["dot", f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=120)
        if proc.returncode != 0:
            raise MinigenError(f"viz.render: dot failed on {path}: {proc.stderr.decode(errors='replace').strip()}")
        data = proc.stdout
    atomic_write(path, lambda f: f.write(data))
    return path


def draw(tensor: Tensor, path, **options) -> str:
    """render(graph(tensor, **options), path): the picture of the graph behind `tensor`."""
    return render(graph(tensor, **options), path)
