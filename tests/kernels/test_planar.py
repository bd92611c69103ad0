"""Stride-1 3x3 convs vectorized along the flat padded plane (minigen/kernels/planar.py): forward,
input gradient and weight gradient against the float64 NumPy reference over random shapes, the
float32 error bound at the families' few-channel shapes, thread independence, a gradcheck
through ops.conv2d, and which parts the dispatch in conv.py sends there.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import ops
from minigen.gradcheck import gradcheck
from minigen.kernels import planar as P
from minigen.tensor import Tensor
from tests.kernels.conv_checks import (assert_conv2d_matches_the_reference, assert_conv3x3_module_float32_bound,
                         assert_conv3x3_module_matches_the_reference, assert_same_bits_on_one_and_all_threads,
                         backward, forward, parts_run_on)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 7), c_out=st.integers(1, 7), h=st.integers(1, 9),
       w=st.integers(1, 12), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(n, c_in, c_out, h, w, bias, seed):
    """Forward (+ bias), input gradient and weight gradient all equal the plain NumPy conv,
    including 1-pixel images (every tap but the centre reads padding)."""
    assert_conv3x3_module_matches_the_reference(P, n, c_in, c_out, h, w, bias, seed)


def test_asked_for_parts_only():
    rng = np.random.default_rng(1)
    x, w, g = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal((2, 2, 5, 5))
    dx, dw, db = backward(P, g, x, w, input_grad=False)
    assert dx is None and dw.shape == w.shape
    dx, dw, db = backward(P, g, x, w, weight_grad=False)
    assert dw is None and dx.shape == x.shape
    np.testing.assert_allclose(db, g.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("c_in, c_out, size", [(64, 2, 28), (32, 1, 28), (64, 8, 14), (1, 32, 28)])
def test_float32_error_bound(c_in, c_out, size):
    """The sums are reassociated (fastmath) but kept in float32: float32 differs from the float64
    reference by rounding only, relative error below 1e-6 for all three outputs."""
    assert_conv3x3_module_float32_bound(P, c_in, c_out, size)


def test_results_do_not_depend_on_the_thread_count():
    """The weight gradient's per-chunk partial sums are added in chunk order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3 * P.IMAGES_PER_CHUNK + 1, 16, 14, 14)).astype(np.float32)
    w = rng.standard_normal((2, 16, 3, 3)).astype(np.float32)
    g = rng.standard_normal((len(x), 2, 14, 14)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: backward(P, g, x, w))


@pytest.mark.parametrize("c_in, c_out, kwargs, parts", [
    (64, 2, {}, ["forward", "dw"]),          # a coupling net's output: dx (64 outputs) is direct.py's
    (32, 1, {}, ["forward", "dw"]),          # the U-Net's output layer
    (1, 32, {}, ["dx", "dw"]),               # a first layer: its 32 outputs are direct.py's
    (32, 32, {}, ["dw"]),                    # dw with 32 outputs measured faster here
    (14, 64, {}, ["dx", "dw"]),
    (64, 64, {}, []),                        # many channels: direct.py / Winograd
    (4, 2, dict(stride=2), []),
    (4, 2, dict(padding=0), []),
    (4, 2, dict(dilation=2, padding=2), []),
    (4, 2, dict(groups=2), []),
])
def test_dispatch_sends_each_part_where_it_measured_fastest(c_in, c_out, kwargs, parts):
    """conv2d_forward / conv2d_backward use the planar kernels for exactly the parts they take,
    the other paths for the rest, and the combined result is right."""
    assert parts_run_on("planar", c_in, c_out, 7, kwargs) == parts
    assert_conv2d_matches_the_reference(c_in, c_out, 7, kwargs)


def test_gradcheck_conv2d_through_the_planar_path():
    """float64 finite differences through the autograd op, every part on the planar kernels."""
    assert parts_run_on("planar", 3, 2, 6, {}) == ["forward", "dx", "dw"]
    rng = np.random.default_rng(5)
    x, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 5, 6), (2, 3, 3, 3), (2,)])
    assert gradcheck(lambda x, w, b: ops.conv2d(x, w, b, padding=1), x, w, b)
