"""benchmarks/breakdown.py: op names into categories, and minigen's per-op timing of a real step."""
import numpy as np
import pytest

from benchmarks import breakdown


@pytest.mark.parametrize("name, expected", [
    ("conv2d backward", "conv"), ("aten::mkldnn_convolution", "conv"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "conv"),
    ("batch_norm", "normalization"), ("aten::native_group_norm_backward", "normalization"),
    ("linear backward", "matmul"), ("aten::addmm", "matmul"), ("aten::mm", "matmul"), ("MmBackward0", "matmul"),
    ("leaky_relu", "activation"), ("aten::threshold_backward", "activation"), ("silu backward", "activation"),
    ("optimizer", "optimizer"), ("aten::add_", None), ("sum backward", None), ("aten::elu", "activation"),
    ("aten::select", None)])
def test_op_names_fall_into_categories(name, expected):
    assert breakdown.category(name) == expected


def test_minigen_ops_times_forward_backward_and_the_optimizer_and_restores_the_engine():
    import importlib

    from minigen import nn, ops, optim
    from minigen.tensor import Tensor
    tensor = importlib.import_module("minigen.tensor")      # (minigen.tensor is also a function)
    layer = nn.Linear(8, 4)
    opt = optim.Adam(layer.parameters(), lr=1e-3)
    x = Tensor(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32))

    def step():
        opt.zero_grad()
        ops.leaky_relu(layer(x), 0.2).sum().backward()
        opt.step()
    originals = (tensor._pass_to_parents, optim.Optimizer.step, importlib.import_module('minigen.ops.elementwise').make_result)
    seconds = breakdown.minigen_ops(step, 3)
    assert {"leaky_relu", "leaky_relu backward", "sum", "sum backward", "optimizer"} <= set(seconds)
    assert any(name.startswith("linear") or name.startswith("matmul") for name in seconds)
    assert all(s >= 0 for s in seconds.values())
    assert (tensor._pass_to_parents, optim.Optimizer.step, importlib.import_module('minigen.ops.elementwise').make_result) == originals
    assert breakdown.by_category({"leaky_relu": 1.0, "leaky_relu backward": 2.0, "sum": 0.5})["activation"] == 3.0


def test_summary_is_the_median_over_rounds():
    runs = [{"step_s": s, "ops": {"conv2d": c, "sum": 1.0}} for s, c in [(3.0, 2.0), (1.0, 4.0), (2.0, 3.0)]]
    summary = breakdown.summarize(runs)
    assert summary["step_s"] == 2.0 and summary["categories"] == {"conv": 3.0, "other": 1.0}
    assert summary["ops"] == {"conv2d": 3.0, "sum": 1.0}


def test_bad_arguments_fail_before_any_process_starts():
    with pytest.raises(SystemExit, match="unknown model variant 'nosuch'"):
        breakdown.main(["--models", "nosuch"])
    with pytest.raises(SystemExit):
        breakdown.main(["--models", "gan", "--rounds", "0"])
