"""Direct 3x3 convolution (minigen/kernels/direct.py): forward, input gradient and weight gradient
against the float64 NumPy reference over random shapes (widths that are and are not multiples
of the 7-pixel segment, odd and even), the float32 error bound, a gradcheck through ops.conv2d,
and which convs and which of their parts the dispatch in conv.py sends there.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K, ops
from minigen.gradcheck import gradcheck
from minigen.errors import DTypeError, ShapeError
from minigen.kernels import conv, direct as D, reference as R
from minigen.tensor import Tensor
from tests.kernels.conv_checks import (assert_conv2d_matches_the_reference, assert_conv3x3_module_float32_bound,
                         assert_conv3x3_module_matches_the_reference, assert_same_bits_on_one_and_all_threads,
                         backward, forward, geometry, parts_run_on)

ONE = (1, 1)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 9), c_out=st.integers(1, 40), h=st.integers(1, 9),
       w=st.integers(1, 16), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(n, c_in, c_out, h, w, bias, seed):
    """Forward (+ bias), input gradient and weight gradient all equal the plain NumPy conv."""
    assert_conv3x3_module_matches_the_reference(D, n, c_in, c_out, h, w, bias, seed)


def test_asked_for_parts_only():
    rng = np.random.default_rng(1)
    x, w, g = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 7, 7))
    dx, dw, db = backward(D, g, x, w, input_grad=False, weight_grad=True)
    assert dx is None and dw.shape == w.shape
    dx, dw, db = backward(D, g, x, w, input_grad=True, weight_grad=False)
    assert dw is None and dx.shape == x.shape
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("c_in, c_out, size", [(64, 64, 7), (32, 64, 14), (128, 64, 7)])
def test_float32_error_bound(c_in, c_out, size):
    """The sums are reassociated (fastmath), so float32 differs from the float64 reference by
    rounding only: relative error below 1e-6 for all three outputs, at the families' widths."""
    assert_conv3x3_module_float32_bound(D, c_in, c_out, size)


def test_results_do_not_depend_on_the_thread_count():
    """The weight gradient's per-chunk partial sums are added in chunk order: same bits with one
    thread or two."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 32, 7, 7)).astype(np.float32)   # 3 chunks of IMAGES_PER_CHUNK
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    g = rng.standard_normal((40, 32, 7, 7)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: backward(D, g, x, w))


@pytest.mark.parametrize("c_in, c_out, size, kwargs, parts", [
    (64, 64, 7, {}, ["forward", "dx", "dw"]),          # the U-Net's bottom: all three
    (64, 8, 7, {}, ["dx"]),                            # 8 outputs: too few to vectorize the forward or dw over
    (32, 64, 7, {}, ["forward", "dx", "dw"]),
    (16, 32, 7, {}, ["forward"]),                      # dx has 16 outputs, too few; dw of 32 goes to planar.py
    (4, 64, 7, {}, ["forward"]),                       # a first layer's forward (its dw: planar.py)
    (64, 64, 28, {}, []),                              # 64->64 at 28x28: Winograd measured faster
    (64, 64, 7, dict(stride=2), []),
    (64, 64, 7, dict(padding=0), []),
    (64, 64, 7, dict(dilation=2, padding=2), []),
    (64, 64, 7, dict(groups=2), []),
])
def test_dispatch_sends_each_part_where_it_measured_fastest(c_in, c_out, size, kwargs, parts):
    """conv2d_forward / conv2d_backward use the direct kernels for exactly the parts they take,
    the other paths for the rest, and the combined result is right."""
    assert parts_run_on("direct", c_in, c_out, size, kwargs) == parts
    assert_conv2d_matches_the_reference(c_in, c_out, size, kwargs)


def test_gradcheck_conv2d_through_the_direct_path():
    """float64 finite differences through the autograd op, every part on the direct kernels."""
    assert parts_run_on("planar", 3, 4, 5, {}) == ["forward", "dx", "dw"]      # unless forced
    rng = np.random.default_rng(5)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 5, 9), (4, 3, 3, 3), (4,)])
    with conv.forced("direct"):
        assert parts_run_on("direct", 3, 4, 5, {}) == ["forward", "dx", "dw"]
        assert gradcheck(lambda x, w, b: ops.conv2d(x, w, b, padding=1), x, w, b)


def test_masked_taps_stay_exact_zeros():
    """A kernel with zeroed taps (PixelCNN's causal mask B) contributes exact zeros from them: an
    output never sees a later pixel, not even by rounding."""
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((32, 32, 3, 3)) * ops.causal_mask(3, 3, "B", np.float64)).astype(np.float32)
    x = rng.standard_normal((1, 32, 7, 7)).astype(np.float32)
    later = x.copy()
    later[0, :, 4, 3:] += 1000.0          # change pixel (4, 3) and everything after it in raster order
    later[0, :, 5:] += 1000.0
    y, y_later = forward(D, x, w), forward(D, later, w)
    np.testing.assert_array_equal(y[0, :, :4], y_later[0, :, :4])
    np.testing.assert_array_equal(y[0, :, 4, :3], y_later[0, :, 4, :3])


def test_the_conv_module_still_checks_its_arguments():
    """The direct path sits behind conv.py's checks: bad input gets the same clear errors."""
    with pytest.raises(ShapeError, match="input has 64 channels but the weight expects 32"):
        K.conv2d_forward(np.zeros((2, 64, 7, 7), np.float32), np.zeros((64, 32, 3, 3), np.float32), None, 1, 1)
    with pytest.raises(DTypeError, match="float32 or float64"):
        K.conv2d_forward(np.zeros((2, 64, 7, 7), np.int32), np.zeros((64, 64, 3, 3), np.int32), None, 1, 1)


# --- masked 3x3 convs of 5 taps (PixelCNN's mask B) ---------------------------------------------
def test_five_taps_finds_mask_b_and_its_flip_only():
    b = ops.causal_mask(3, 3, "B", np.float64)
    assert D.five_taps(b) == (0, 1, 0) and D.five_taps(b[::-1, ::-1]) == (2, 1, 1)
    assert D.five_taps(ops.causal_mask(3, 3, "A", np.float64)) is None          # 4 taps
    assert D.five_taps(np.ones((3, 3))) is None and D.five_taps(ops.causal_mask(5, 5, "B", np.float64)) is None
    gapped = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0]])                       # 5 taps, not neighbours
    assert D.five_taps(gapped) is None


@settings(max_examples=20, deadline=None)
def _masked(geo, mask):
    """geo, for a masked conv that uses only the mask's nonzero taps (as kernels/masked.py makes it)."""
    return geo._replace(taps=tuple(map(tuple, np.argwhere(np.asarray(mask) != 0).tolist())))


@given(n=st.integers(1, 3), c_in=st.integers(1, 6), c_out=st.integers(1, 20), h=st.integers(1, 9),
       w=st.integers(1, 16), flip=st.booleans(), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_masked_matches_the_reference_of_the_masked_weight(n, c_in, c_out, h, w, flip, bias, seed):
    """Forward (+ bias), input gradient and weight gradient of the 5-tap kernels equal the plain
    conv of w * mask, for mask B and its flip; the weight gradient is exactly 0 at masked taps."""
    rng = np.random.default_rng(seed)
    mask = ops.causal_mask(3, 3, "B", np.float64)
    mask = mask[::-1, ::-1] if flip else mask
    x, wt = rng.standard_normal((n, c_in, h, w)), rng.standard_normal((c_out, c_in, 3, 3))
    b = rng.standard_normal(c_out) if bias else None
    g = rng.standard_normal((n, c_out, h, w))
    geo = _masked(geometry(x, wt), mask)
    np.testing.assert_allclose(D.forward(x, wt, b, geo), R.conv2d(x, wt * mask, b, ONE, ONE, ONE, 1),
                               rtol=1e-12, atol=1e-12)
    dx, dw, db = D.input_grad(g, wt, None, geo), D.weight_grad(g, x, geo), g.sum(axis=(0, 2, 3))
    want = R.conv2d_backward(g, x, wt * mask, ONE, ONE, ONE, 1)
    np.testing.assert_allclose(dx, want[0], rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(dw, want[1] * mask, rtol=1e-12, atol=1e-11)
    assert np.all(dw[:, :, mask == 0] == 0)
    np.testing.assert_allclose(db, want[2], rtol=1e-12)


def test_masked_conv_dispatch_and_exact_causality():
    """masked_conv2d sends 3x3 mask B convs of 32+ channels here (not mask A, not 16 channels),
    and an output never sees a later pixel, not even by rounding."""
    rng = np.random.default_rng(7)
    for c, mask_type, taken in [(32, "B", True), (32, "A", False), (16, "B", False)]:
        w = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        mask = ops.causal_mask(3, 3, mask_type, np.float32)
        x = rng.standard_normal((1, c, 7, 7)).astype(np.float32)
        geo = _masked(geometry(x, w), mask)
        assert [conv.algorithm_for(geo, part) == "direct" for part in conv.PARTS] == [taken] * 3
        later = x.copy()
        later[0, :, 4, 3 if mask_type == "B" else 2:] += 1000.0   # mask B sees its own pixel (4, 2)
        later[0, :, 5:] += 1000.0
        y, y_later = K.masked_conv2d_forward(x, w, mask, None, 1, 1), K.masked_conv2d_forward(later, w, mask, None, 1, 1)
        np.testing.assert_array_equal(y[0, :, :4], y_later[0, :, :4])
        np.testing.assert_array_equal(y[0, :, 4, :3 if mask_type == "B" else 2], y_later[0, :, 4, :3 if mask_type == "B" else 2])
        np.testing.assert_allclose(y, R.conv2d(x.astype(np.float64), (w * mask).astype(np.float64), None, ONE, ONE, ONE, 1),
                                   rtol=1e-4, atol=1e-4)


def test_gradcheck_masked_conv2d_through_the_direct_path():
    rng = np.random.default_rng(8)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 4, 8), (4, 3, 3, 3), (4,)])
    geo = _masked(geometry(x.data, w.data), ops.causal_mask(3, 3, "B", np.float64))
    with conv.forced("direct"):
        assert all(conv.algorithm_for(geo, part) == "direct" for part in conv.PARTS)
        assert gradcheck(lambda x, w, b: ops.masked_conv2d(x, w, b, mask_type="B", padding=1), x, w, b)
