"""The layer ops (conv, pooling, normalization) through autograd: float64 gradchecks,
PixelCNN's masked-conv causality, and batch norm's running statistics.

The kernels themselves are tested against NumPy references in test_kernels.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import ops
from minigen.gradcheck import gradcheck
from minigen.tensor import Tensor

rng = np.random.default_rng(0)


def t(*shape, requires_grad=True):
    return Tensor(rng.standard_normal(shape), requires_grad=requires_grad)


def distinct(*shape):
    """Well-separated values, so max pooling has no near-ties for finite differences to straddle."""
    return Tensor(rng.permutation(np.prod(shape)).reshape(shape) * 0.1, requires_grad=True)


# name -> (function, inputs), collected by tests/engine/op_cases.py so every registered op is checked
CASES = {
    "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2),
               lambda: [t(2, 4, 5, 6), t(4, 2, 3, 2), t(4)]),
    "conv_transpose2d": (lambda x, w, b: ops.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1,
                                                              groups=2),
                         lambda: [t(2, 4, 3, 3), t(4, 1, 3, 3), t(2)]),
    "masked_conv2d": (lambda x, w, b: ops.masked_conv2d(x, w, b, "B"), lambda: [t(2, 2, 4, 5), t(3, 2, 3, 3), t(3)]),
    "max_pool2d": (lambda x: ops.max_pool2d(x, 3, 2, 1), lambda: [distinct(2, 2, 5, 6)]),
    "avg_pool2d": (lambda x: ops.avg_pool2d(x, (2, 3), 1, (1, 0)), lambda: [t(2, 2, 4, 5)]),
    "upsample_nearest": (lambda x: ops.upsample_nearest(x, 2), lambda: [t(2, 2, 3, 2)]),
    "batch_norm": (lambda x, w, b: ops.batch_norm(x, w, b), lambda: [t(4, 3, 2, 2), t(3), t(3)]),
    "group_norm": (lambda x, w, b: ops.group_norm(x, 2, w, b), lambda: [t(2, 4, 3, 2), t(4), t(4)]),
    "layer_norm": (ops.layer_norm, lambda: [t(3, 2, 4), t(2, 4), t(2, 4)]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    fn, make = CASES[name]
    assert gradcheck(fn, *make())


def test_gradcheck_without_bias_affine_or_input_grad():
    assert gradcheck(lambda x, w: ops.conv2d(x, w, padding=1), t(1, 2, 4, 4), t(3, 2, 3, 3))
    data = t(1, 2, 4, 4, requires_grad=False)          # no input gradient: the kernel skips dx
    assert gradcheck(lambda w: ops.conv2d(data, w), t(3, 2, 2, 2))
    assert gradcheck(lambda x: ops.group_norm(x, 1), t(2, 3, 2, 2))
    assert gradcheck(lambda x: ops.layer_norm(x, normalized_shape=(4,)), t(3, 4))
    mean, var = np.array([0.1, -0.2]), np.array([1.5, 0.5])
    assert gradcheck(lambda x, w: ops.batch_norm(x, w, None, mean, var, training=False), t(3, 2, 2), t(2))


# --- masked convolution ------------------------------------------------------------------------
def test_causal_mask_rule():
    np.testing.assert_array_equal(ops.causal_mask(3, 3, "A"), [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(ops.causal_mask(3, 5, "B"), [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]])


@settings(max_examples=15, deadline=None)
@given(st.sampled_from("AB"), st.sampled_from([1, 3, 5]), st.sampled_from([1, 3, 5]), st.integers(2, 6),
       st.integers(2, 6), st.integers(1, 3), st.integers(0, 2**16))
def test_masked_conv_is_causal(mask_type, kh, kw, h, w, channels, seed):
    """d out[:, :, i, j] / d x is zero at every input pixel at or after (i, j) in raster order
    (type A) or strictly after it (type B), and the masked weights get no gradient."""
    g = np.random.default_rng(seed)
    x = Tensor(g.standard_normal((1, channels, h, w)), requires_grad=True)
    weight = Tensor(g.standard_normal((2, channels, kh, kw)), requires_grad=True)
    out = ops.masked_conv2d(x, weight, None, mask_type)
    assert out.shape == (1, 2, h, w)
    order = np.arange(h * w).reshape(h, w)                 # raster position of each pixel
    for i in range(h):
        for j in range(w):
            x.grad = weight.grad = None
            upstream = np.zeros(out.shape)
            upstream[:, :, i, j] = 1
            out.backward(upstream, retain_graph=True)
            future = order >= order[i, j] if mask_type == "A" else order > order[i, j]
            assert np.all(x.grad[0][:, future] == 0)
            assert np.all(weight.grad * (1 - ops.causal_mask(kh, kw, mask_type)) == 0)


# --- batch norm state ----------------------------------------------------------------------------
def test_batch_norm_updates_running_statistics_and_eval_uses_them():
    x = Tensor(rng.standard_normal((8, 3, 4, 4)) * 2 + 5, dtype=np.float32)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    ops.batch_norm(x, None, None, running_mean, running_var, training=True, momentum=0.25)
    data = x.data.astype(np.float64)
    np.testing.assert_allclose(running_mean, 0.25 * data.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(running_var, 0.75 + 0.25 * data.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    y = ops.batch_norm(x, None, None, running_mean, running_var, training=False)
    want = (data - running_mean.reshape(1, 3, 1, 1)) / np.sqrt(running_var.reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(y.data, want, rtol=1e-4, atol=1e-4)
    assert y.dtype == np.float32


def test_conv_layer_ops_keep_float32():
    x = Tensor(rng.standard_normal((2, 3, 8, 8)), dtype=np.float32, requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3, 3)), dtype=np.float32, requires_grad=True)
    y = ops.max_pool2d(ops.group_norm(ops.conv2d(x, w, padding=1), 2), 2)
    y = ops.conv_transpose2d(ops.upsample_nearest(y, 2), Tensor(np.ones((4, 2, 2, 2), np.float32)), stride=2)
    assert y.dtype == np.float32 and y.shape == (2, 2, 16, 16)
    y.sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.shape == w.shape


# --- spectral normalization (minigen.nn.spectral_normalize; Conv2d / Linear spectral_norm=True) --------------
def test_spectral_normalize_gradcheck_on_a_conv_weight():
    """With u fixed (update=False) sigma = |W^T u| exactly, so its gradient u v^T is exact too."""
    from minigen.nn import Buffer, spectral_normalize
    u = Buffer(np.array([0.6, 0.0, -0.8]))
    assert gradcheck(lambda w: spectral_normalize(w, u, update=False), t(3, 2, 2, 2))
    np.testing.assert_array_equal(u.data, [0.6, 0.0, -0.8])          # no update: u as it was


@pytest.mark.parametrize("layer", ["conv", "linear"])
def test_spectral_norm_brings_the_largest_singular_value_to_one(layer):
    from minigen.nn import Conv2d, Linear
    from minigen.random import Generator
    m = (Conv2d(4, 6, 3, spectral_norm=True, generator=Generator(0)) if layer == "conv"
         else Linear(12, 5, spectral_norm=True, generator=Generator(0)))
    x = Tensor(np.ones((2, 4, 5, 5) if layer == "conv" else (2, 12), np.float32))
    w = m.weight.data.reshape(len(m.weight.data), -1)
    plain = np.linalg.svd(w, compute_uv=False)[0]
    assert abs(plain - 1) > 0.1                                       # the test is not trivially true
    for _ in range(30):                                               # one power-iteration step per call
        m(x)
    from minigen.nn import spectral_normalize
    m.eval()
    normalized = spectral_normalize(m.weight, m.weight_u, update=False).data.reshape(w.shape)
    assert np.linalg.svd(normalized, compute_uv=False)[0] == pytest.approx(1, abs=1e-3)
    u = m.weight_u.data.copy()
    m(x)
    np.testing.assert_array_equal(m.weight_u.data, u)                 # eval mode: no power iteration
    assert "weight_u" in m.state_dict()                               # u is saved, not trained
    assert all(p is not m.weight_u for p in m.parameters())


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.01, 100), seed=st.integers(0, 1000))
def test_spectral_normalize_ignores_the_weights_scale(scale, seed):
    from minigen.nn import Buffer, spectral_normalize
    g = np.random.default_rng(seed)
    w, u = g.standard_normal((4, 3, 2, 2)), g.standard_normal(4)
    a = spectral_normalize(Tensor(w), Buffer(u.copy()), update=True).data
    b = spectral_normalize(Tensor(w * scale), Buffer(u.copy()), update=True).data
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
