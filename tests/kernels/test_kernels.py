"""The Numba kernels (minigen/kernels) against their plain NumPy references, plus
float64 finite-difference gradient checks and the argument errors.

Hypothesis draws the geometry (stride, padding, dilation, groups, kernel size,
channels, odd and even image sizes); sizes stay small so the file runs in seconds.
"""
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K
from minigen.errors import DTypeError, ShapeError
from minigen.kernels import convbase
from minigen.kernels import reference as R

SETTINGS = settings(max_examples=30, deadline=None)


def close(actual, expected, tol=1e-10):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def numeric_grad(f, arr, g, eps=1e-6):
    """d(sum(f() * g))/d(arr) by central differences, perturbing arr in place."""
    grad = np.zeros_like(arr)
    flat, gflat = arr.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = np.sum(f() * g)
        flat[i] = old - eps
        down = np.sum(f() * g)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def randn(rng, *shape):
    return rng.standard_normal(shape)


# --- geometry strategies ---------------------------------------------------------------------
@st.composite
def conv_cases(draw, transposed=False):
    """A small conv: (x shape, weight shape, stride, padding, dilation, groups[, output_padding])."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = [max(1, s - 2 * p) + draw(st.integers(0, 5)) for s, p in zip(span, padding)]
    n = draw(st.integers(1, 3))
    if not transposed:
        return (n, c_in, *size), (c_out, c_in // groups, *kernel), stride, padding, dilation, groups
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    # the output (s-1)*stride - 2*padding + span + output_padding must not be empty: add rows to x
    size = [s + max(0, -((s - 1) * st_ - 2 * p + sp + op) // st_ + 1)
            for s, st_, p, sp, op in zip(size, stride, padding, span, output_padding)]
    return (n, c_in, *size), (c_in, c_out // groups, *kernel), stride, padding, output_padding, dilation, groups


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    size = tuple(k + draw(st.integers(0, 5)) for k in kernel)
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3))) + size, kernel, stride, padding


# --- convolutions --------------------------------------------------------------------------
@SETTINGS
@given(conv_cases(), st.booleans(), st.integers(0, 2**16))
def test_conv2d_matches_reference(case, use_bias, seed):
    x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x, w = randn(rng, *x_shape), randn(rng, *w_shape)
    b = randn(rng, w_shape[0]) if use_bias else None
    y = K.conv2d_forward(x, w, b, stride, padding, dilation, groups)
    close(y, R.conv2d(x, w, b, stride, padding, dilation, groups))
    g = randn(rng, *y.shape)
    for got, want in zip(K.conv2d_backward(g, x, w, stride, padding, dilation, groups),
                         R.conv2d_backward(g, x, w, stride, padding, dilation, groups)):
        close(got, want)


@SETTINGS
@given(conv_cases(transposed=True), st.booleans(), st.integers(0, 2**16))
def test_conv_transpose2d_matches_reference(case, use_bias, seed):
    x_shape, w_shape, stride, padding, output_padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x, w = randn(rng, *x_shape), randn(rng, *w_shape)
    b = randn(rng, w_shape[1] * groups) if use_bias else None
    args = stride, padding, output_padding, dilation, groups
    y = K.conv_transpose2d_forward(x, w, b, *args)
    close(y, R.conv_transpose2d(x, w, b, *args))
    g = randn(rng, *y.shape)
    for got, want in zip(K.conv_transpose2d_backward(g, x, w, *args), R.conv_transpose2d_backward(g, x, w, *args)):
        close(got, want)


def test_conv_reference_backward_is_the_adjoint():
    """The two references agree with each other: <conv(x), g> == <x, conv_transpose(g)>."""
    rng = np.random.default_rng(0)
    x, w = randn(rng, 2, 4, 7, 6), randn(rng, 6, 2, 3, 2)
    geo = (2, 1), (1, 0), (1, 2), 2
    y = R.conv2d(x, w, None, *geo)
    g = randn(rng, *y.shape)
    xt = R.conv_transpose2d(g, w, None, geo[0], geo[1], (1, 0), geo[2], geo[3])[:, :, :7, :6]
    close(np.sum(y * g), np.sum(x * xt))


def test_conv_many_chunks_and_float32(monkeypatch):
    """A tiny im2col budget forces one image per chunk; float32 stays float32."""
    monkeypatch.setattr(convbase, "COLS_BUDGET", 16)
    monkeypatch.setattr(convbase, "SERIAL_MULTIPLY_ADDS", 0)     # share even tiny work out
    rng = np.random.default_rng(1)
    x, w, b = randn(rng, 5, 4, 9, 8), randn(rng, 6, 2, 3, 3), randn(rng, 6)
    y = K.conv2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), 2, 1, 1, 2)
    assert y.dtype == np.float32
    close(y, R.conv2d(x, w, b, (2, 2), (1, 1), (1, 1), 2), tol=1e-4)
    g = randn(rng, *y.shape)
    got = K.conv2d_backward(g.astype(np.float32), x.astype(np.float32), w.astype(np.float32), 2, 1, 1, 2)
    for a, e in zip(got, R.conv2d_backward(g, x, w, (2, 2), (1, 1), (1, 1), 2)):
        assert a.dtype == np.float32
        close(a, e, tol=1e-4)


def test_conv_accepts_non_contiguous_input_and_skips_unwanted_grads():
    rng = np.random.default_rng(2)
    x = randn(rng, 6, 6, 3, 2).transpose(3, 2, 0, 1)          # (2, 3, 6, 6), not contiguous
    w = randn(rng, 4, 3, 3, 3)
    close(K.conv2d_forward(x, w, None, 1, 1), R.conv2d(x, w, None, (1, 1), (1, 1), (1, 1), 1))
    dx, dw, db = K.conv2d_backward(np.ones((2, 4, 6, 6)), x, w, 1, 1, input_grad=False)
    assert dx is None and dw.shape == w.shape and db.shape == (4,)
    dx, dw, _ = K.conv2d_backward(np.ones((2, 4, 6, 6)), x, w, 1, 1, weight_grad=False)
    assert dw is None and dx.shape == x.shape


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_conv_runs_in_a_forked_child(monkeypatch):
    """The worker threads do not survive fork(); a child (e.g. a data-loading worker) gets its own."""
    monkeypatch.setattr(convbase, "COLS_BUDGET", 64)           # several chunks: the workers are used
    monkeypatch.setattr(convbase, "SERIAL_MULTIPLY_ADDS", 0)
    rng = np.random.default_rng(9)
    x, w = randn(rng, 4, 2, 5, 5), randn(rng, 3, 2, 3, 3)
    want = K.conv2d_forward(x, w, None, 1, 1)
    pid = os.fork()
    if pid == 0:                                                   # the child: exit 0 if it got it right
        os._exit(0 if np.allclose(K.conv2d_forward(x, w, None, 1, 1), want) else 1)
    assert os.waitpid(pid, 0)[1] == 0


@pytest.mark.parametrize("forward, backward, seed, x_shape, w_shape, c_out, geo", [
    (K.conv2d_forward, K.conv2d_backward, 3, (2, 4, 5, 6), (4, 2, 3, 2), 4, ((2, 1), (1, 1), (1, 2), 2)),
    (K.conv_transpose2d_forward, K.conv_transpose2d_backward, 4, (2, 4, 3, 4), (4, 3, 4, 3), 6,
     ((2, 2), (1, 0), (1, 1), (1, 1), 2)),
], ids=["conv2d", "conv_transpose2d"])
def test_conv_gradients_match_finite_differences(forward, backward, seed, x_shape, w_shape, c_out, geo):
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, *x_shape), randn(rng, *w_shape), randn(rng, c_out)
    f = lambda: forward(x, w, b, *geo)  # noqa: E731
    g = randn(rng, *f().shape)
    dx, dw, db = backward(g, x, w, *geo)
    close(dx, numeric_grad(f, x, g), tol=1e-6)
    close(dw, numeric_grad(f, w, g), tol=1e-6)
    close(db, numeric_grad(f, b, g), tol=1e-6)


# --- pooling and upsampling ---------------------------------------------------------------
@SETTINGS
@given(pool_cases(), st.booleans(), st.integers(0, 2**16))
def test_max_pool_matches_reference(case, ties, seed):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = randn(rng, *shape)
    if ties:                                  # many equal values: the first maximum must win
        x = np.round(x)
    y, argmax = K.max_pool2d_forward(x, kernel, stride, padding)
    want, taken = R.max_pool2d(x, kernel, stride, padding)
    close(y, want)
    g = randn(rng, *y.shape)
    close(K.max_pool2d_backward(g, argmax, x.shape), R.max_pool2d_backward(g, taken, x.shape, kernel, stride, padding))


@SETTINGS
@given(pool_cases(), st.integers(0, 2**16))
def test_avg_pool_matches_reference(case, seed):
    shape, kernel, stride, padding = case
    rng = np.random.default_rng(seed)
    x = randn(rng, *shape)
    y = K.avg_pool2d_forward(x, kernel, stride, padding)
    close(y, R.avg_pool2d(x, kernel, stride, padding))
    g = randn(rng, *y.shape)
    close(K.avg_pool2d_backward(g, x.shape, kernel, stride, padding),
          R.avg_pool2d_backward(g, x.shape, kernel, stride, padding))


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**16))
def test_upsample_matches_reference(sh, sw, h, w, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, 2, 3, h, w)
    y = K.upsample_nearest_forward(x, (sh, sw))
    close(y, R.upsample_nearest(x, (sh, sw)))
    g = randn(rng, *y.shape)
    close(K.upsample_nearest_backward(g, (sh, sw)), R.upsample_nearest_backward(g, (sh, sw)))


def test_upsample_backward_on_every_thread_and_a_strided_float32_gradient(monkeypatch):
    """The block sums shared between the threads (above SERIAL_ELEMENTS), from a non-contiguous float32
    gradient: the reference's sums, to float32 rounding."""
    from minigen.kernels import pool
    monkeypatch.setattr(pool, "SERIAL_ELEMENTS", 100)
    g = np.random.default_rng(3).standard_normal((3, 5, 12, 8)).astype(np.float32).transpose(1, 0, 2, 3)
    got = K.upsample_nearest_backward(g, (3, 2))
    assert got.dtype == np.float32 and got.shape == (5, 3, 4, 4)
    np.testing.assert_allclose(got, R.upsample_nearest_backward(g.astype(np.float64), (3, 2)), rtol=1e-5, atol=1e-5)


def test_pool_gradients_match_finite_differences():
    rng = np.random.default_rng(5)
    x = randn(rng, 2, 3, 7, 6)
    g = randn(rng, *K.avg_pool2d_forward(x, 3, 2, 1).shape)
    close(K.avg_pool2d_backward(g, x.shape, 3, 2, 1), numeric_grad(lambda: K.avg_pool2d_forward(x, 3, 2, 1), x, g),
          tol=1e-6)
    y, argmax = K.max_pool2d_forward(x, 3, 2, 1)   # random data: no ties, so max is differentiable
    close(K.max_pool2d_backward(g, argmax, x.shape),
          numeric_grad(lambda: K.max_pool2d_forward(x, 3, 2, 1)[0], x, g), tol=1e-6)
    g = randn(rng, 2, 3, 14, 18)
    close(K.upsample_nearest_backward(g, (2, 3)), numeric_grad(lambda: K.upsample_nearest_forward(x, (2, 3)), x, g),
          tol=1e-6)


def test_max_pool_propagates_nan():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = np.nan
    y, _ = K.max_pool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


# --- normalization -------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 4), st.integers(1, 4), st.sampled_from([(), (1,), (3,), (2, 5), (4, 3)]),
       st.integers(0, 2**16))
def test_batch_norm_matches_reference(n, c, spatial, seed):
    rng = np.random.default_rng(seed)
    x = randn(rng, n, c, *spatial) * 3 + 1
    if x.size // c < 2:
        x = np.concatenate([x, x + 1])
    w, b = randn(rng, c), randn(rng, c)
    y, mean, var = K.batch_norm_forward(x, w, b)
    want, want_mean, want_var = R.batch_norm(x, w, b, 1e-5)
    close(y, want)
    close(mean, want_mean)
    close(var, want_var)
    g = randn(rng, *x.shape)
    for got, want in zip(K.batch_norm_backward(g, x, w, mean, var), R.batch_norm_backward(g, x, w, 1e-5)):
        close(got, want, tol=1e-8)


def test_batch_norm_eval_mode_uses_given_statistics():
    rng = np.random.default_rng(6)
    x, w, b = randn(rng, 3, 2, 4, 4), randn(rng, 2), randn(rng, 2)
    mean, var = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    y, _, _ = K.batch_norm_forward(x, w, b, 1e-5, mean, var)
    scale = (w / np.sqrt(var + 1e-5)).reshape(1, 2, 1, 1)
    close(y, (x - mean.reshape(1, 2, 1, 1)) * scale + b.reshape(1, 2, 1, 1))
    g = randn(rng, *x.shape)
    dx, dw, db = K.batch_norm_backward(g, x, w, mean, var, 1e-5, batch_stats=False)
    close(dx, g * scale)
    close(db, g.sum(axis=(0, 2, 3)))


@SETTINGS
@given(st.integers(1, 3), st.sampled_from([(1, 1), (2, 1), (2, 3), (3, 2), (4, 4)]),
       st.sampled_from([(), (5,), (3, 4)]), st.integers(0, 2**16))
def test_group_norm_matches_reference(n, groups_cg, spatial, seed):
    groups, cg = groups_cg
    c = groups * cg
    rng = np.random.default_rng(seed)
    x = randn(rng, n, c, *spatial) * 2 - 1
    if x.size // (n * groups) < 2:
        x = np.concatenate([x, x + 1], axis=1)
        c *= 2
    w, b = randn(rng, c), randn(rng, c)
    y, mean, rstd = K.group_norm_forward(x, groups, w, b)
    close(y, R.group_norm(x, groups, w, b, 1e-5))
    g = randn(rng, *x.shape)
    for got, want in zip(K.group_norm_backward(g, x, groups, w, mean, rstd),
                         R.group_norm_backward(g, x, groups, w, 1e-5)):
        close(got, want, tol=1e-8)


@SETTINGS
@given(st.sampled_from([((3, 5), (5,)), ((2, 3, 4), (3, 4)), ((2, 2, 3, 3), (2, 3, 3)), ((4, 7), (7,))]),
       st.integers(0, 2**16))
def test_layer_norm_matches_reference(shapes, seed):
    x_shape, norm_shape = shapes
    rng = np.random.default_rng(seed)
    x, w, b = randn(rng, *x_shape), randn(rng, *norm_shape), randn(rng, *norm_shape)
    y, mean, rstd = K.layer_norm_forward(x, norm_shape, w, b)
    close(y, R.layer_norm(x, norm_shape, w, b, 1e-5))
    g = randn(rng, *x.shape)
    for got, want in zip(K.layer_norm_backward(g, x, norm_shape, w, mean, rstd),
                         R.layer_norm_backward(g, x, norm_shape, w, 1e-5)):
        close(got, want, tol=1e-8)


@pytest.mark.parametrize("norm", ["batch", "group", "layer"])
def test_norm_gradients_match_finite_differences(norm):
    rng = np.random.default_rng(7)
    x, w, b = randn(rng, 3, 4, 2, 3), randn(rng, 4), randn(rng, 4)
    if norm == "layer":
        w, b = randn(rng, 2, 3), randn(rng, 2, 3)
    # (forward with the array arguments, backward given the statistics the forward returned)
    forward, backward, extra = {
        "batch": (K.batch_norm_forward, K.batch_norm_backward, ()),
        "group": (lambda x, w, b: K.group_norm_forward(x, 2, w, b), K.group_norm_backward, (2,)),
        "layer": (lambda x, w, b: K.layer_norm_forward(x, (2, 3), w, b), K.layer_norm_backward, ((2, 3),)),
    }[norm]
    f = lambda: forward(x, w, b)[0]  # noqa: E731
    g = randn(rng, *x.shape)
    dx, dw, db = backward(g, x, *extra, w, *forward(x, w, b)[1:])
    close(dx, numeric_grad(f, x, g), tol=1e-6)
    close(dw, numeric_grad(f, w, g), tol=1e-6)
    close(db, numeric_grad(f, b, g), tol=1e-6)


def test_norm_float32_is_accurate_with_a_large_mean():
    """Statistics accumulate in float64, so a big offset does not wreck float32 results."""
    rng = np.random.default_rng(8)
    x = (randn(rng, 8, 4, 16, 16) + 1000).astype(np.float32)
    y, _, _ = K.batch_norm_forward(x, None, None)
    assert y.dtype == np.float32
    close(y, R.batch_norm(x.astype(np.float64), np.ones(4), np.zeros(4), 1e-5)[0], tol=2e-3)
    y, _, _ = K.group_norm_forward(x, 2)
    close(y, R.group_norm(x.astype(np.float64), 2, np.ones(4), np.zeros(4), 1e-5), tol=2e-3)


# --- argument errors -------------------------------------------------------------------------
def error(exc, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --- activations ------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.sampled_from([0.0, 0.01, 0.2, 1.0, 3.0, -0.5]),
       st.sampled_from([np.float32, np.float64]), st.booleans(), st.integers(0, 2**16))
def test_activations_match_reference_bit_for_bit(shape, slope, dtype, transposed, seed):
    """One-pass ReLU / leaky ReLU loops against where(): the same bits, zeros and NaN included, for any
    shape and memory order (a transposed view is read in its logical order)."""
    rng = np.random.default_rng(seed)
    x, g = rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:3] = [0.0, -0.0, np.nan][:x.size]
    if transposed:
        x, g = x.T, g.T
    for got, want in [(K.leaky_relu_forward(x, slope), R.leaky_relu(x, slope)),
                      (K.leaky_relu_backward(g, x, slope), R.leaky_relu_backward(g, x, slope)),
                      (K.relu_forward(x), R.relu(x)), (K.relu_backward(g, K.relu_forward(x)), R.relu_backward(g, R.relu(x)))]:
        assert got.dtype == dtype and got.shape == x.shape and got.flags.c_contiguous
        np.testing.assert_array_equal(got, want)


def test_elementwise_kernels_on_arrays_the_threads_share(monkeypatch):
    """Above SERIAL_ELEMENTS the loops run on every thread: still the references' bits."""
    monkeypatch.setattr(K.elementwise, "SERIAL_ELEMENTS", 1000)
    x = np.random.default_rng(0).standard_normal((7, 300)).astype(np.float32)
    g = np.ones_like(x)
    np.testing.assert_array_equal(K.leaky_relu_forward(x, 0.2), R.leaky_relu(x, 0.2))
    np.testing.assert_array_equal(K.leaky_relu_backward(g, x, 0.2), R.leaky_relu_backward(g, x, 0.2))
    np.testing.assert_array_equal(K.relu_backward(g, K.relu_forward(x)), R.relu_backward(g, R.relu(x)))
    y = x[:, ::-1]                                      # a strided view: read in its logical order
    np.testing.assert_array_equal(K.add(x, y), x + y)
    assert K.add(x, y).flags.c_contiguous


def test_conv_errors_name_the_op_and_the_shapes():
    x, w = np.zeros((2, 3, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32)
    msg = error(ShapeError, K.conv2d_forward, x, w)
    assert "conv2d" in msg and "(2, 3, 8, 8)" in msg and "(4, 2, 3, 3)" in msg
    msg = error(ShapeError, K.conv2d_forward, np.zeros((2, 6, 8, 8), np.float32), np.zeros((4, 2, 3, 3), np.float32),
                groups=3)
    assert "groups=3" in msg and "(4, 2, 3, 3)" in msg
    msg = error(ShapeError, K.conv2d_forward, np.zeros((1, 2, 4, 4), np.float32), np.zeros((4, 2, 7, 7), np.float32),
                padding=1)
    assert "conv2d" in msg and "larger than the padded input" in msg and "(1, 2, 4, 4)" in msg
    assert "padding" in error(ShapeError, K.conv2d_forward, np.zeros((1, 2, 8, 8)), np.zeros((1, 2, 3, 3)), padding=-1)
    msg = error(ShapeError, K.conv2d_forward, np.zeros((3, 8, 8), np.float32), w)
    assert "conv2d" in msg and "4-D" in msg and "(3, 8, 8)" in msg
    msg = error(DTypeError, K.conv2d_forward, x.astype(np.int64), np.zeros((4, 3, 3, 3), np.float32))
    assert "conv2d" in msg and "int64" in msg
    msg = error(DTypeError, K.conv2d_forward, x, np.zeros((4, 3, 3, 3), np.float64))
    assert "float32" in msg and "float64" in msg
    msg = error(ShapeError, K.conv2d_forward, x, np.zeros((4, 3, 3, 3), np.float32), np.zeros(5, np.float32))
    assert "bias" in msg and "(5,)" in msg
    msg = error(ShapeError, K.conv2d_backward, np.zeros((2, 4, 5, 5), np.float32), x,
                np.zeros((4, 3, 3, 3), np.float32))
    assert "conv2d_backward" in msg and "(2, 4, 5, 5)" in msg and "(2, 4, 6, 6)" in msg


def test_conv_transpose_errors_name_the_op_and_the_shapes():
    x = np.zeros((2, 3, 5, 5), np.float32)
    msg = error(ShapeError, K.conv_transpose2d_forward, x, np.zeros((4, 2, 3, 3), np.float32))
    assert "conv_transpose2d" in msg and "(2, 3, 5, 5)" in msg and "(4, 2, 3, 3)" in msg
    msg = error(ShapeError, K.conv_transpose2d_forward, x, np.zeros((3, 2, 3, 3), np.float32), groups=2)
    assert "groups=2" in msg
    msg = error(ShapeError, K.conv_transpose2d_forward, x, np.zeros((3, 2, 3, 3), np.float32), stride=2,
                output_padding=2)
    assert "output_padding" in msg


def test_pool_and_norm_errors():
    x = np.zeros((2, 3, 4, 4), np.float32)
    msg = error(ShapeError, K.max_pool2d_forward, x, 5)
    assert "max_pool2d" in msg and "(2, 3, 4, 4)" in msg
    assert "padding" in error(ShapeError, K.avg_pool2d_forward, x, 2, padding=2)
    assert "avg_pool2d" in error(DTypeError, K.avg_pool2d_forward, x.astype(np.int32), 2)
    assert "4-D" in error(ShapeError, K.max_pool2d_forward, x[0], 2)
    assert "scale_factor" in error(ShapeError, K.upsample_nearest_forward, x, 0)
    msg = error(ShapeError, K.group_norm_forward, x, 2)
    assert "group_norm" in msg and "groups=2" in msg and "(2, 3, 4, 4)" in msg
    msg = error(ShapeError, K.batch_norm_forward, x, np.ones(4, np.float32))
    assert "batch_norm" in msg and "(4,)" in msg
    msg = error(ShapeError, K.layer_norm_forward, x, (3, 4))
    assert "layer_norm" in msg and "(3, 4)" in msg and "(2, 3, 4, 4)" in msg
    assert "float16" in error(DTypeError, K.batch_norm_forward, x.astype(np.float16))
