"""k=4, stride-2 convs and transposed convs as direct 2x2 convs on the space-to-depth image
(minigen/kernels/stride2.py): all three parts against the float64 NumPy reference over random
shapes, the float32 error bound, thread-count independence, a gradcheck through the autograd ops,
and which convs and parts conv.py's dispatch sends there.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K, ops
from minigen.gradcheck import gradcheck
from minigen.kernels import reference as R, stride2 as S
from minigen.tensor import Tensor
from tests.kernels.conv_checks import assert_same_bits_on_one_and_all_threads, backward, forward, geometry

S2, P1, D1, NO_PAD = (2, 2), (1, 1), (1, 1), (0, 0)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 3), c_in=st.integers(1, 6), c_out=st.integers(1, 40), rows=st.sampled_from([2, 8, 14, 28]),
       cols=st.sampled_from([14, 28]), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_matches_the_reference_in_float64(n, c_in, c_out, rows, cols, bias, seed):
    """Forward (+ bias), input gradient (+ a transposed conv's bias) and weight gradient equal the
    plain NumPy conv, for images of any even height and output widths of 7 and 14."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, c_in, rows, cols)), rng.standard_normal((c_out, c_in, 4, 4))
    b = rng.standard_normal(c_out) if bias else None
    g = rng.standard_normal((n, c_out, rows // 2, cols // 2))
    np.testing.assert_allclose(forward(S, x, w, b), R.conv2d(x, w, b, S2, P1, D1, 1), rtol=1e-12, atol=1e-12)
    dx, dw, db = R.conv2d_backward(g, x, w, S2, P1, D1, 1)
    np.testing.assert_allclose(S.input_grad(g, w, None, geometry(x, w)), dx, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(S.weight_grad(g, x, geometry(x, w)), dw, rtol=1e-12, atol=1e-11)
    transposed_bias = rng.standard_normal(c_in)
    np.testing.assert_allclose(S.input_grad(g, w, transposed_bias, geometry(x, w)), R.conv_transpose2d(
        g, w, transposed_bias, S2, P1, NO_PAD, D1, 1), rtol=1e-12, atol=1e-11)
    got = backward(S, g, x, w, input_grad=False)
    assert got[0] is None and np.allclose(got[1], dw) and np.allclose(got[2], db)


@pytest.mark.parametrize("c_in, c_out, size", [(64, 128, 14), (32, 64, 14), (1, 64, 28)])
def test_float32_error_bound(c_in, c_out, size):
    """Reassociated sums (fastmath): float32 is within 1e-6 relative of float64, all three parts,
    on the families' shapes (GAN discriminator, VAE encoder, a first layer)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, c_in, size, size)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 4, 4)) / np.sqrt(16 * c_in)).astype(np.float32)
    g = rng.standard_normal((4, c_out, size // 2, size // 2)).astype(np.float32)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    dx, dw, _ = R.conv2d_backward(g64, x64, w64, S2, P1, D1, 1)
    for got, want in [(forward(S, x, w), R.conv2d(x64, w64, None, S2, P1, D1, 1)),
                      (S.input_grad(g, w, None, geometry(x, w)), dx), (S.weight_grad(g, x, geometry(x, w)), dw)]:
        assert got.dtype == np.float32 and relative_error(got, want) < 1e-6


def test_results_do_not_depend_on_the_thread_count():
    """The weight gradient's partial sums (one per chunk of images) are added in chunk order."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 8, 14, 14)).astype(np.float32)
    w = rng.standard_normal((32, 8, 4, 4)).astype(np.float32)
    g = rng.standard_normal((40, 32, 7, 7)).astype(np.float32)
    assert_same_bits_on_one_and_all_threads(lambda: backward(S, g, x, w))


def spy(monkeypatch):
    """Record which stride2 functions ran."""
    calls = []
    for name in ("forward", "input_grad", "weight_grad"):
        real = getattr(S, name)
        monkeypatch.setattr(S, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls


def check_conv(x, w, stride=2, padding=1):
    g = np.random.default_rng(9).standard_normal((x.shape[0], w.shape[0]) + K.conv2d_forward(
        x, w, None, stride, padding).shape[2:]).astype(x.dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    geo = ((stride,) * 2, (padding,) * 2, D1, 1)
    np.testing.assert_allclose(K.conv2d_forward(x, w, None, stride, padding), R.conv2d(x64, w64, None, *geo),
                               rtol=1e-4, atol=1e-4)
    for got, want in zip(K.conv2d_backward(g, x, w, stride, padding),
                         R.conv2d_backward(g.astype(np.float64), x64, w64, *geo)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def check_transposed(x, w, output_padding=0):
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    geo = (S2, P1, (output_padding,) * 2, D1, 1)
    y = K.conv_transpose2d_forward(x, w, None, 2, 1, output_padding)
    np.testing.assert_allclose(y, R.conv_transpose2d(x64, w64, None, *geo), rtol=1e-4, atol=1e-4)
    g = np.random.default_rng(9).standard_normal(y.shape).astype(x.dtype)
    want = R.conv_transpose2d_backward(g.astype(np.float64), x64, w64, *geo)
    for asked in [(True, True), (True, False), (False, True)]:
        got = K.conv_transpose2d_backward(g, x, w, 2, 1, output_padding, input_grad=asked[0], weight_grad=asked[1])
        for part, on, want_part in zip(got, asked + (True,), want):
            assert (part is None) == (not on)
            if on:
                np.testing.assert_allclose(part, want_part, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("c_in, c_out, size, calls_wanted", [
    (64, 128, 14, ["forward", "input_grad", "weight_grad"]),    # GAN discriminator
    (1, 32, 28, ["forward", "weight_grad"]),      # a first layer: dx would have 1 channel
    (32, 8, 14, ["input_grad"]),                       # 8 outputs: too few to vectorize over
    (32, 64, 10, []),                                       # output width 5: not a multiple of 7
])
def test_conv_dispatch(monkeypatch, c_in, c_out, size, calls_wanted):
    calls = spy(monkeypatch)
    rng = np.random.default_rng(4)
    check_conv(rng.standard_normal((2, c_in, size, size)).astype(np.float32),
               rng.standard_normal((c_out, c_in, 4, 4)).astype(np.float32))
    assert sorted(set(calls)) == sorted(calls_wanted)


@pytest.mark.parametrize("c_in, c_out, size, output_padding, calls_wanted", [
    (128, 64, 7, 0, ["forward", "input_grad", "weight_grad"]),    # GAN generator
    (64, 1, 14, 0, ["forward", "weight_grad"]),             # to 1 channel: dx and dw are the 64-channel side
    (64, 32, 7, 1, []),                                     # output_padding: a 15x15 image
])
def test_transposed_dispatch(monkeypatch, c_in, c_out, size, output_padding, calls_wanted):
    calls = spy(monkeypatch)
    rng = np.random.default_rng(5)
    check_transposed(rng.standard_normal((2, c_in, size, size)).astype(np.float32),
                     rng.standard_normal((c_in, c_out, 4, 4)).astype(np.float32), output_padding)
    assert sorted(set(calls)) == sorted(calls_wanted)


def test_other_strided_convs_stay_where_they_were(monkeypatch):
    """k=3, s=2 (the U-Net's downsampler) and k=4, s=2 without padding are not computed here."""
    calls = spy(monkeypatch)
    rng = np.random.default_rng(6)
    check_conv(rng.standard_normal((2, 32, 28, 28)).astype(np.float32),
               rng.standard_normal((32, 32, 3, 3)).astype(np.float32))
    check_conv(rng.standard_normal((2, 32, 16, 16)).astype(np.float32),
               rng.standard_normal((32, 32, 4, 4)).astype(np.float32), padding=0)
    assert calls == []


def test_gradcheck_through_the_ops(monkeypatch):
    """float64 finite differences through ops.conv2d and ops.conv_transpose2d, every part here."""
    monkeypatch.setattr(S, "MIN_VECTOR_CHANNELS", 1)
    calls = spy(monkeypatch)
    rng = np.random.default_rng(7)
    t = lambda *shape: Tensor(rng.standard_normal(shape), requires_grad=True)
    assert gradcheck(lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1), t(2, 3, 4, 14), t(4, 3, 4, 4), t(4))
    assert gradcheck(lambda x, w, b: ops.conv_transpose2d(x, w, b, 2, 1), t(2, 3, 2, 7), t(3, 4, 4, 4), t(4))
    assert set(calls) == {"forward", "input_grad", "weight_grad"}
