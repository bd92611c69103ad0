"""minigen.viz: the autograd graph as DOT text, collapsed by module, rendered with Graphviz's dot."""
import re
import shutil

import numpy as np
import pytest

from minigen import ops, viz
from minigen.errors import MinigenError
from minigen.models import get_family
from minigen.nn import Linear, Module, Parameter, Sequential
from minigen.tensor import Tensor, no_grad


def labels(dot: str) -> dict:
    """node id -> its label, from DOT text."""
    return {m.group(1): m.group(2).replace("\\n", "\n") for m in re.finditer(r'^\s+(n\d+) \[label="([^"]*)"', dot, re.M)}


def edges(dot: str) -> list:
    return re.findall(r"^\s+(n\d+) -> (n\d+);", dot, re.M)


def tiny_mlp_loss():
    W = Parameter(np.ones((4, 3), np.float32))
    b = Parameter(np.zeros(3, np.float32))
    x = Tensor(np.ones((2, 4), np.float32))
    return ops.relu(x @ W + b).sum() * 0.5, {"W": W, "b": b}


def test_one_node_per_op_with_shape_dtype_and_leaves_marked():
    loss, params = tiny_mlp_loss()
    dot = viz.graph(loss, names=params)
    nodes = labels(dot)
    assert sorted(v.split("\n")[0] for v in nodes.values()) == \
        ["add", "input", "matmul", "mul", "parameter W", "parameter b", "relu", "sum"]   # the 0.5 is left out
    by_name = {v.split("\n")[0]: k for k, v in nodes.items()}
    assert nodes[by_name["matmul"]].endswith("(2, 3) float32")
    assert nodes[by_name["parameter W"]].endswith("(4, 3) float32")
    # edges point the way the data flowed: x and W into matmul, ..., sum into the final mul
    flow = {(nodes[a].split("\n")[0], nodes[b].split("\n")[0]) for a, b in edges(dot)}
    assert {("input", "matmul"), ("parameter W", "matmul"), ("matmul", "add"), ("parameter b", "add"),
            ("add", "relu"), ("relu", "sum"), ("sum", "mul")} == flow
    # nodes appear parents first
    order = list(nodes)
    assert all(order.index(a) < order.index(b) for a, b in edges(dot))


def test_nodes_that_need_no_gradient_are_grey():
    x = Tensor(np.ones((2, 2), np.float32))
    W = Parameter(np.ones((2, 2), np.float32))
    dot = viz.graph((ops.exp(x) @ W).sum())
    line = next(line for line in dot.splitlines() if 'label="exp' in line)
    assert "#eeeeee" in line                             # exp of an input: no gradient needed
    line = next(line for line in dot.splitlines() if 'label="matmul' in line)
    assert "#eeeeee" not in line


def test_a_traced_model_collapses_to_one_node_per_module_and_expands_on_request():
    model = get_family("vae")({"hidden_dim": 16})
    x = Tensor((np.random.default_rng(0).random((3, 1, 28, 28)) > 0.5).astype(np.float32))
    with viz.trace_modules(model):
        recon, kl, _ = model(x)
    loss = (recon + kl).mean()
    collapsed = labels(viz.graph(loss))
    modules = sorted(v.split("\n")[0] for v in collapsed.values() if v.startswith("Linear"))
    assert modules == ["Linear dec_hidden", "Linear dec_out", "Linear enc_hidden", "Linear enc_logvar", "Linear enc_mu"]
    assert not any(v.startswith("parameter") for v in collapsed.values())   # weights live inside their module
    assert next(v for v in collapsed.values() if v.startswith("Linear dec_out")).split("\n")[1] == "(3, 784) float32"
    expanded = labels(viz.graph(loss, expand=True))
    assert len(expanded) == len(collapsed) + 2 * 5          # each box opens into its op, weight and bias
    assert sum(v.startswith("linear\n") for v in expanded.values()) == 5
    assert not any(v.startswith("Linear") for v in expanded.values())
    assert "parameter enc_hidden.weight" in {v.split("\n")[0] for v in expanded.values()}


def test_a_unet_collapses_to_its_blocks_and_sequential_is_transparent():
    model = get_family("ddpm")({"channels": [8, 8, 8], "groups": 4, "time_dim": 16})
    with viz.trace_modules(model):
        out = model.net(Tensor(np.zeros((1, 1, 28, 28), np.float32)), np.array([3]))
    names = [v.split("\n")[0] for v in labels(viz.graph(out.mean())).values()]
    assert "ResBlock net.mid" in names and "UpBlock net.upsample.0" in names
    assert not any(".mid." in n or ".down.0." in n for n in names)     # the layers inside the blocks
    seq = Sequential(Linear(2, 3), Linear(3, 1))
    with viz.trace_modules(seq):
        y = seq(Tensor(np.ones((1, 2), np.float32)))
    assert sorted(v.split("\n")[0] for v in labels(viz.graph(y)).values() if "Linear" in v) == \
        ["Linear layers.0", "Linear layers.1"]


def test_tracing_is_off_outside_its_block():
    plain = Module.__call__
    with viz.trace_modules():
        assert Module.__call__ is not plain
    assert Module.__call__ is plain
    lin = Linear(2, 2)
    y = lin(Tensor(np.ones((1, 2), np.float32)))
    assert not any(v.startswith("Linear") for v in labels(viz.graph(y)).values())


def test_a_freed_graph_and_a_bad_name_get_clear_errors(tmp_path):
    loss, _ = tiny_mlp_loss()
    loss.backward()
    with pytest.raises(MinigenError, match="backward"):
        viz.graph(loss)
    with pytest.raises(MinigenError, match="Tensor"):
        viz.graph(np.ones(3))
    with pytest.raises(MinigenError, match=".svg, .png or .dot"):
        viz.render("digraph {}", tmp_path / "g.jpg")
    with no_grad():
        assert len(labels(viz.graph(Tensor(np.ones(2)) * 2))) == 1


def test_labels_are_escaped_for_dot():
    assert viz._quote('a "b"\\c\nd') == '"a \\"b\\"\\\\c\\nd"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (apt-get install graphviz)")
def test_render_svg_with_dot(tmp_path):
    loss, params = tiny_mlp_loss()
    path = viz.draw(loss, tmp_path / "g.svg", names=params)
    text = open(path).read()
    assert path.endswith(".svg") and "<svg" in text and "matmul" in text


def test_without_dot_the_dot_text_is_written_with_a_notice(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    loss, _ = tiny_mlp_loss()
    path = viz.draw(loss, tmp_path / "g.svg")
    assert path.endswith("g.dot") and open(path).read().startswith("digraph autograd {")
    assert "apt-get install graphviz" in capsys.readouterr().err
