"""Winograd F(2x2, 3x3) convolution (minigen/kernels/winograd.py): its matrices, the NumPy
reference of the algorithm, the fused fast path against the float64 direct conv (forward,
input gradient, weight gradient; odd sizes where tiles overhang; blocks that split tile rows),
float32 error bounds, gradchecks through ops.conv2d, and which convs the dispatch sends there.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K, ops
from minigen.gradcheck import gradcheck
from minigen.kernels import conv, reference as R, winograd as W
from minigen.kernels.convbase import pair
from minigen.tensor import Tensor
from tests.kernels.conv_checks import backward, forward

ONE = (1, 1)


def winograd_forced(monkeypatch):
    """These tests' small convs have few channels, which the plan gives planar.py; keep them here."""
    monkeypatch.setenv("MINIGEN_CONV", "winograd")


def direct(x, w, b=None):
    """The float64 direct conv (stride 1, padding 1) and nothing else: the yardstick."""
    return R.conv2d(x, w, b, ONE, ONE, ONE, 1)


def direct_backward(g, x, w):
    return R.conv2d_backward(g, x, w, ONE, ONE, ONE, 1)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("transform", [W.F2_3, W.F4_3], ids=["F(2,3)", "F(4,3)"])
def test_one_dimensional_minimal_filtering_is_a_correlation(transform):
    """A^T [(G g) * (B^T d)] == the m outputs of correlating the m + 2 inputs d with the 3 taps g."""
    rng = np.random.default_rng(0)
    m = transform.m
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ g for i in range(m)])
    np.testing.assert_allclose(transform.at @ ((transform.g @ g) * (transform.bt @ d)), want, rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**16))
def test_weight_transform_is_g_w_g_transposed(c_out, c_in, seed):
    """The fast path's U (two tensordots) against G w G^T written out per (o, c), float64."""
    w = np.random.default_rng(seed).standard_normal((c_out, c_in, 3, 3))
    g = W.F2_3.g
    want = np.stack([[g @ w[o, c] @ g.T for c in range(c_in)] for o in range(c_out)])   # (C_out, C_in, 4, 4)
    got = W._weight_transform(w)
    assert got.shape == (16, c_out, c_in) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want.transpose(2, 3, 0, 1).reshape(16, c_out, c_in), rtol=1e-12, atol=1e-12)


def test_fixed_weights_transforms_each_weight_once_and_only_inside_the_block(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    w1, w2 = (rng.standard_normal((16, 16, 3, 3)).astype(np.float32) for _ in range(2))
    winograd_forced(monkeypatch)
    calls = []
    transform = W._weight_transform
    monkeypatch.setattr(W, "_weight_transform", lambda w: calls.append(w) or transform(w))
    plain = [K.conv2d_forward(x, w, None, 1, 1) for w in (w1, w2)]
    with W.fixed_weights():
        with W.fixed_weights():                                  # nested: the same cache
            inside = [K.conv2d_forward(x, w, None, 1, 1) for w in (w1, w2, w1, w2)]
    assert len(calls) == 2 + 2                                   # twice outside, once per weight inside
    for got, want in zip(inside, plain + plain):
        np.testing.assert_array_equal(got, want)
    K.conv2d_forward(x, w1, None, 1, 1)
    assert len(calls) == 5 and W._fixed_transforms is None       # after the block: no cache
    masked = w1 * ops.causal_mask(3, 3, "B", np.float32)         # a zero tap: im2col, in the block too
    geo = conv.conv2d_geometry("test", x, w1, None, 1, 1, 1, 1)
    with W.fixed_weights():
        K.conv2d_forward(x, w1, None, 1, 1)
        assert not W.has_zero_tap(w1) and W.has_zero_tap(masked)
        assert W.takes(conv.with_zero_tap(geo, w1), "forward") and not W.takes(conv.with_zero_tap(geo, masked), "forward")


@st.composite
def shapes(draw, most_channels=5, most_size=9):
    """(x shape, w shape): odd and even sizes, down to 1x1 (every tile overhangs)."""
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, most_channels)), draw(st.integers(1, most_channels))
    h, w = draw(st.integers(1, most_size)), draw(st.integers(1, most_size))
    return (n, c_in, h, w), (c_out, c_in, 3, 3)


@settings(max_examples=25, deadline=None)
@given(shapes(), st.sampled_from([W.F2_3, W.F4_3]), st.integers(0, 2**16))
def test_numpy_reference_matches_direct_conv(shape, transform, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(shape[0]), rng.standard_normal(shape[1]), rng.standard_normal(shape[1][0])
    np.testing.assert_allclose(W.conv2d_reference(x, w, b, transform), direct(x, w, b), rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(shapes(), st.booleans(), st.sampled_from([64, 16 * 6 * 3, W.BLOCK_BUDGET]), st.integers(0, 2**16))
def test_fast_path_matches_direct_conv(shape, use_bias, budget, seed):
    """Forward and both gradients, in float64. Small block budgets cut blocks of a few tiles that
    start and end inside tile rows and spread them over several work units and both workers."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(shape[0]), rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1][0]) if use_bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(W, "BLOCK_BUDGET", budget)
        y = forward(W, x, w, b)
        g = rng.standard_normal(y.shape)
        got = backward(W, g, x, w)
    np.testing.assert_allclose(y, direct(x, w, b), rtol=1e-10, atol=1e-10)
    for a, e in zip(got, direct_backward(g, x, w)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


def test_fast_path_skips_unwanted_gradients_and_is_deterministic():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((3, 4, 6, 5)).astype(np.float32), rng.standard_normal((2, 4, 3, 3)).astype(np.float32)
    g = rng.standard_normal((3, 2, 6, 5)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(W, "BLOCK_BUDGET", 64)                 # many work units, summed in a fixed order
        dx, dw, db = backward(W, g, x, w, input_grad=False)
        assert dx is None and dw.dtype == np.float32
        assert np.array_equal(dw, backward(W, g, x, w, input_grad=False)[1])
        assert backward(W, g, x, w, weight_grad=False)[1] is None


@pytest.mark.parametrize("c_in, c_out, size", [(16, 16, 9), (64, 64, 14), (128, 64, 7)])
def test_float32_error_is_within_the_stated_bounds(c_in, c_out, size):
    """Relative error ||y32 - y64|| / ||y64|| against the float64 direct conv, for each of the
    forward, input gradient and weight gradient, and for F(4x4, 3x3) (the NumPy reference)."""
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((4, c_in, size, size)), rng.standard_normal((4, c_out, size, size))
    w = rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    dx, dw, _ = direct_backward(g, x, w)
    dx32, dw32, _ = backward(W, g32, x32, w32)
    errors = {"forward": relative_error(forward(W, x32, w32), direct(x, w)),
              "input_grad": relative_error(dx32, dx), "weight_grad": relative_error(dw32, dw),
              "F(4x4,3x3) forward": relative_error(W.conv2d_reference(x32, w32, None, W.F4_3), direct(x, w))}
    for name, err in errors.items():
        assert err <= W.FLOAT32_ERROR_BOUND[name], (name, err)
    assert dx32.dtype == dw32.dtype == np.float32


def test_gradcheck_conv2d_through_the_winograd_path(monkeypatch):
    """float64 finite differences through the autograd op, with the dispatch forced onto the fast path."""
    winograd_forced(monkeypatch)
    rng = np.random.default_rng(3)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 5, 4), (2, 3, 3, 3), (2,)])
    geo = conv.conv2d_geometry("test", x.data, w.data, None, 1, 1, 1, 1)
    assert all(conv.algorithm_for(geo, part) == "winograd" for part in conv.PARTS)
    assert gradcheck(lambda x, w, b: ops.conv2d(x, w, b, padding=1), x, w, b)


@pytest.mark.parametrize("c_in, w_shape, kwargs, taken", [
    (16, (4, 16, 3, 3), dict(padding=1), True),
    (32, (1, 32, 3, 3), dict(padding=(1, 1), stride=1, dilation=1), True),
    (1, (32, 1, 3, 3), dict(padding=1), False),                      # C_in < 16: im2col measured faster
    (16, (64, 16, 3, 3), dict(padding=1), False),                    # C_in < C_out / 2: im2col too
    (16, (16, 16, 3, 3), dict(padding=1, mask="B"), False),          # masked taps: exact zeros in im2col
    (16, (4, 16, 3, 3), dict(padding=1, stride=2), False),
    (16, (4, 16, 3, 3), dict(padding=0), False),
    (16, (4, 16, 3, 3), dict(padding=2, dilation=2), False),
    (16, (4, 8, 3, 3), dict(padding=1, groups=2), False),
    (16, (4, 16, 3, 2), dict(padding=1), False),
    (16, (4, 16, 5, 5), dict(padding=2), False),
])
def test_dispatch_takes_only_what_the_fast_path_can_do(monkeypatch, c_in, w_shape, kwargs, taken):
    """Winograd takes and (by the estimate thresholds) prefers exactly the stride-1, pad-1, 3x3,
    one-group convs with enough input channels and no masked-out tap; forced, it runs them and the
    plan sends everything else elsewhere, and all are right."""
    winograd_forced(monkeypatch)
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, c_in, 6, 7)), rng.standard_normal(w_shape)
    if "mask" in kwargs:
        w = w * ops.causal_mask(3, 3, kwargs["mask"], w.dtype)
    geo = tuple(kwargs.get(k, d) for k, d in (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1)))
    ref_geo = tuple(pair(v, "test", "geometry") for v in geo[:3]) + (geo[3],)
    plan_geo = conv.with_zero_tap(conv.conv2d_geometry("test", x, w, None, *geo), w)
    assert (W.takes(plan_geo, "forward") and W.preferred(plan_geo, "forward")) == taken
    y = K.conv2d_forward(x, w, None, *geo)
    np.testing.assert_allclose(y, R.conv2d(x, w, None, *ref_geo), rtol=1e-10, atol=1e-10)
    g = rng.standard_normal(y.shape)
    for a, e in zip(K.conv2d_backward(g, x, w, *geo), R.conv2d_backward(g, x, w, *ref_geo)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


def test_masked_convs_stay_exactly_causal():
    """A PixelCNN mask-B conv wide enough for Winograd: no output sees a later pixel, not even by
    rounding (the dispatch keeps masked kernels on im2col, whose zero taps contribute exact zeros)."""
    rng = np.random.default_rng(5)
    c, size = 32, 6
    x = Tensor(rng.standard_normal((1, c, size, size)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((c, c, 3, 3)).astype(np.float32))
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        x.grad = None
        y = ops.masked_conv2d(x, w, None, "B")
        g = np.zeros(y.shape, np.float32)
        g[0, :, i, j] = 1
        y.backward(g)
        later = (np.arange(size)[:, None] * size + np.arange(size)) > i * size + j
        assert np.all(x.grad[0][:, later] == 0)


def test_bad_input_still_gets_the_usual_errors():
    """The checks run before the dispatch: a Winograd-shaped conv with a wrong grad is refused clearly."""
    from minigen.errors import ShapeError
    x, w = np.zeros((2, 16, 5, 5), np.float32), np.zeros((4, 16, 3, 3), np.float32)
    with pytest.raises(ShapeError, match="grad_out has shape"):
        K.conv2d_backward(np.zeros((2, 4, 4, 4), np.float32), x, w, 1, 1)
