"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution (minigen/kernels/winograd.py, winograd4.py): the
matrices built from the points, the NumPy reference of the algorithm, the fused fast path of each
tile size against the float64 direct conv (forward, input gradient, weight gradient; odd sizes where
tiles overhang; blocks that split tile rows), float32 error bounds, gradchecks through ops.conv2d,
and which convs the dispatch sends there.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K, ops
from minigen.gradcheck import gradcheck
from minigen.kernels import conv, reference as R, winograd as W, winograd4
from minigen.kernels.convbase import pair
from minigen.tensor import Tensor
from tests.kernels.conv_checks import backward, forward

ONE = (1, 1)
# the two fast paths: (conv-plan row, its module, its transform)
TILES = [pytest.param("winograd", W, W.F2_3, id="F(2x2,3x3)"),
         pytest.param("winograd4", winograd4, W.F4_3, id="F(4x4,3x3)")]


def winograd_forced(monkeypatch, name="winograd"):
    """These tests' small convs have few channels, which the plan gives planar.py; keep them here."""
    monkeypatch.setenv("MINIGEN_CONV", name)


def direct(x, w, b=None):
    """The float64 direct conv (stride 1, padding 1) and nothing else: the yardstick."""
    return R.conv2d(x, w, b, ONE, ONE, ONE, 1)


def direct_backward(g, x, w):
    return R.conv2d_backward(g, x, w, ONE, ONE, ONE, 1)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5), st.lists(st.fractions(-3, 3, max_denominator=4), min_size=6, max_size=6, unique=True),
       st.integers(0, 2**16))
def test_one_dimensional_minimal_filtering_is_a_correlation(m, points, seed):
    """For any distinct points, toom_cook's A^T [(G g) * (B^T d)] == the m outputs of correlating the
    m + 2 inputs d with the 3 taps g."""
    transform = W.toom_cook(points[:m + 1], m)
    assert transform.bt.shape == (m + 2, m + 2) and transform.g.shape == (m + 2, 3) and transform.at.shape == (m, m + 2)
    rng = np.random.default_rng(seed)
    d, g = rng.standard_normal(m + 2), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ g for i in range(m)])
    np.testing.assert_allclose(transform.at @ ((transform.g @ g) * (transform.bt @ d)), want, rtol=1e-9, atol=1e-9)


def test_toom_cook_reproduces_lavin_and_grays_matrices():
    """The standard points give the paper's F(4, 3) exactly (and F(2, 3) up to the sign of two of its
    rows, which cancel between B^T / A^T and G); repeated points are refused."""
    np.testing.assert_array_equal(W.F4_3_STANDARD.bt[0], [4, 0, -5, 0, 1, 0])
    np.testing.assert_array_equal(W.F4_3_STANDARD.at[3], [0, 1, -1, 8, -8, 1])
    np.testing.assert_allclose(W.F4_3_STANDARD.g[3], [1 / 24, 1 / 12, 1 / 6])
    np.testing.assert_array_equal(W.F2_3.bt, [[-1, 0, 1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
    np.testing.assert_array_equal(W.F2_3.g, [[-1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    np.testing.assert_allclose(W.F4_3.at[1], [0, 2 / 3, -2 / 3, 3 / 2, -3 / 2, 0], rtol=0, atol=1e-15)   # the points
    with pytest.raises(ValueError, match="distinct"):
        W.toom_cook((0, 1, 1), 2)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.sampled_from([W.F2_3, W.F4_3]), st.integers(0, 2**16))
def test_weight_transform_is_g_w_g_transposed(c_out, c_in, transform, seed):
    """The fast path's U (two tensordots) against G w G^T written out per (o, c), float64."""
    w = np.random.default_rng(seed).standard_normal((c_out, c_in, 3, 3))
    g, a = transform.g, transform.a
    want = np.stack([[g @ w[o, c] @ g.T for c in range(c_in)] for o in range(c_out)])   # (C_out, C_in, a, a)
    got = W._weight_transform(w, transform)
    assert got.shape == (a * a, c_out, c_in) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want.transpose(2, 3, 0, 1).reshape(a * a, c_out, c_in), rtol=1e-12, atol=1e-12)


def test_the_generated_transforms_file_is_what_the_generator_writes():
    """winograd_transforms.py is generated (so Numba can cache it): never edited by hand, never stale."""
    with open(W.GENERATED_FILE) as f:
        assert f.read() == W.generated_module_source(), \
            "stale: run python -c 'from minigen.kernels import winograd; winograd.write_generated_module()'"
    from minigen.kernels import winograd_transforms
    assert W._generated_transforms(W.F4_3)[0] is winograd_transforms.input_transform_4x4


@pytest.mark.parametrize("transform", [W.F2_3, W.F4_3, W.F4_3_STANDARD], ids=["F(2x2)", "F(4x4)", "F(4x4) standard"])
def test_generated_transforms_are_the_matrix_products(transform):
    """The straight-line transforms generated from the matrices (float64, 7x6 images: tiles overhang)
    against the products written with the matrices: V = B^T d B per input tile, the output tiles
    A^T M A (+ bias) cropped to the image, and A dY A^T per output-gradient tile (zeros outside)."""
    m, a, bt, at = transform.m, transform.a, transform.bt, transform.at
    rng = np.random.default_rng(7)
    n, c, h, w = 2, 3, 7, 6
    th, tw = -(-h // m), -(-w // m)
    nt = n * th * tw                                             # tile k = (image, tile row, tile column)
    runs = W._tile_runs(0, nt, (th, tw))
    input_transform, output_transform, grad_transform = W._generated_transforms(transform)
    source = W.transform_source(transform)
    assert all(f"def {name}(" in source for name in ("input_transform", "output_transform", "grad_transform"))

    x = rng.standard_normal((n, c, h, w))
    v = np.empty((a * a, c, nt))
    input_transform(x, runs, v)
    want = np.einsum("ai,nctsij,bj->abcnts", bt, W._tiles(x, m), bt).reshape(a * a, c, nt)
    np.testing.assert_allclose(v, want, rtol=1e-13, atol=1e-13)

    mm, bias = rng.standard_normal((a * a, c, nt)), rng.standard_normal(c)
    out = np.empty((n, c, h, w))
    output_transform(mm, runs, out, bias)
    y = np.einsum("ia,abonts,jb->notsij", at, mm.reshape(a, a, c, n, th, tw), at)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, c, th * m, tw * m)[:, :, :h, :w] + bias.reshape(-1, 1, 1)
    np.testing.assert_allclose(out, y, rtol=1e-13, atol=1e-13)

    grad = rng.standard_normal((n, c, h, w))
    padded = np.zeros((n, c, th * m, tw * m))
    padded[:, :, :h, :w] = grad
    dy = padded.reshape(n, c, th, m, tw, m).transpose(0, 1, 2, 4, 3, 5)     # (n, c, ty, tx, m, m)
    gm = np.empty((a * a, c, nt))
    grad_transform(grad, runs, gm)
    want = np.einsum("ri,nctsrq,qj->ijcnts", at, dy, at).reshape(a * a, c, nt)
    np.testing.assert_allclose(gm, want, rtol=1e-13, atol=1e-13)


def test_fixed_weights_transforms_each_weight_once_and_only_inside_the_block(monkeypatch):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 16, 6, 6)).astype(np.float32)
    w1, w2 = (rng.standard_normal((16, 16, 3, 3)).astype(np.float32) for _ in range(2))
    winograd_forced(monkeypatch)
    calls = []
    transform = W._weight_transform
    monkeypatch.setattr(W, "_weight_transform", lambda w, t: calls.append(w) or transform(w, t))
    plain = [K.conv2d_forward(x, w, None, 1, 1) for w in (w1, w2)]
    with W.fixed_weights():
        with W.fixed_weights():                                  # nested: the same cache
            inside = [K.conv2d_forward(x, w, None, 1, 1) for w in (w1, w2, w1, w2)]
        with conv.forced("winograd4"):                           # F(4x4, 3x3)'s U: its own, cached too
            inside4 = [K.conv2d_forward(x, w, None, 1, 1) for w in (w1, w1)]
    assert len(calls) == 2 + 2 + 1                               # twice outside, once per weight and tile size inside
    for got, want in zip(inside, plain + plain):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(inside4[0], plain[0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(inside4[0], inside4[1])
    K.conv2d_forward(x, w1, None, 1, 1)
    assert len(calls) == 6 and W._fixed_transforms is None       # after the block: no cache
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


@pytest.mark.parametrize("name, module, transform", TILES)
@settings(max_examples=30, deadline=None)
@given(shape=shapes(most_size=14), use_bias=st.booleans(), budget=st.sampled_from([64, 36 * 6 * 3, W.BLOCK_BUDGET]),
       seed=st.integers(0, 2**16))
def test_fast_path_matches_direct_conv(name, module, transform, shape, use_bias, budget, seed):
    """Forward and both gradients, in float64, sizes 1 to 14 (tiles overhang by 1 to m - 1). Small
    block budgets cut blocks of a few tiles that start and end inside tile rows and spread them over
    several work units and both workers."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(shape[0]), rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1][0]) if use_bias else None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(W, "BLOCK_BUDGET", budget)
        y = forward(module, x, w, b)
        g = rng.standard_normal(y.shape)
        got = backward(module, g, x, w)
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


@pytest.mark.parametrize("name, module, transform", TILES)
@pytest.mark.parametrize("c_in, c_out, size", [(16, 16, 9), (64, 64, 14), (128, 64, 7)])
def test_float32_error_is_within_the_stated_bounds(name, module, transform, c_in, c_out, size):
    """Relative error ||y32 - y64|| / ||y64|| against the float64 direct conv, for each of the
    forward, input gradient and weight gradient of each fast path (F(4x4, 3x3) at the standard points
    0, +-1, +-2 would exceed its bound: measured up to 1.8e-6)."""
    rng = np.random.default_rng(2)
    x, g = rng.standard_normal((4, c_in, size, size)), rng.standard_normal((4, c_out, size, size))
    w = rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)
    x32, w32, g32 = (a.astype(np.float32) for a in (x, w, g))
    dx, dw, _ = direct_backward(g, x, w)
    dx32, dw32, _ = backward(module, g32, x32, w32)
    errors = {"forward": relative_error(forward(module, x32, w32), direct(x, w)),
              "input_grad": relative_error(dx32, dx), "weight_grad": relative_error(dw32, dw)}
    bounds = W.FLOAT32_ERROR_BOUND[f"F({transform.m}x{transform.m},3x3)"]
    for part, err in errors.items():
        assert err <= bounds[part], (part, err)
    assert dx32.dtype == dw32.dtype == np.float32


@pytest.mark.parametrize("name, module, transform", TILES)
def test_gradcheck_conv2d_through_the_winograd_path(monkeypatch, name, module, transform):
    """float64 finite differences through the autograd op, with the dispatch forced onto the fast path
    (7x5 images: F(4x4, 3x3)'s tiles overhang by 1 and 3)."""
    winograd_forced(monkeypatch, name)
    rng = np.random.default_rng(3)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 7, 5), (2, 3, 3, 3), (2,)])
    geo = conv.conv2d_geometry("test", x.data, w.data, None, 1, 1, 1, 1)
    assert all(conv.algorithm_for(geo, part) == name for part in conv.PARTS)
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
    assert winograd4.takes(plan_geo, "forward") == W.takes(plan_geo, "forward")   # the same convs, never
    assert not winograd4.preferred(plan_geo, "forward")                           # by the estimate
    y = K.conv2d_forward(x, w, None, *geo)
    np.testing.assert_allclose(y, R.conv2d(x, w, None, *ref_geo), rtol=1e-10, atol=1e-10)
    g = rng.standard_normal(y.shape)
    for a, e in zip(K.conv2d_backward(g, x, w, *geo), R.conv2d_backward(g, x, w, *ref_geo)):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["auto", "winograd", "winograd4"])
def test_masked_convs_stay_exactly_causal(name):
    """A PixelCNN mask-B conv wide enough for Winograd: no output sees a later pixel, not even by
    rounding (the dispatch keeps masked kernels on im2col, whose zero taps contribute exact zeros,
    even with Winograd forced)."""
    rng = np.random.default_rng(5)
    c, size = 32, 6
    x = Tensor(rng.standard_normal((1, c, size, size)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((c, c, 3, 3)).astype(np.float32))
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        x.grad = None
        with conv.forced(name):
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
