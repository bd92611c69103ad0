"""The conv fast paths (kernels/masked.py, subpixel.py, pointwise.py) against the plain NumPy
references, their dispatch from kernels/conv.py (and the fallbacks), float64 gradchecks of the
ops that use them, their float32 accuracy, and the serial path for small work.

Hypothesis draws the geometry; sizes stay small so the file runs in seconds.
"""
import warnings

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen import kernels as K, ops
from minigen.errors import ShapeError
from minigen.gradcheck import gradcheck
from minigen.kernels import convbase, im2col, pointwise, reference as R, subpixel
from minigen.tensor import Tensor

SETTINGS = settings(max_examples=25, deadline=None)


def close(actual, expected, tol=1e-10):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def pairs(draw, lo, hi):
    return draw(st.integers(lo, hi)), draw(st.integers(lo, hi))


# --- masked convs: only the mask's nonzero taps --------------------------------------------
@SETTINGS
@given(st.data(), st.sampled_from([1, 3, 5, 7]), st.sampled_from("AB"), st.integers(0, 2**16))
def test_masked_conv_matches_the_reference_of_the_masked_weight(data, k, mask_type, seed):
    stride, dilation = pairs(data.draw, 1, 2), pairs(data.draw, 1, 2)
    c_in, c_out, n = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 2))
    padding = tuple(d * (k // 2) for d in dilation)
    hw = tuple(max(1, d * (k - 1) + 1 - 2 * p) + data.draw(st.integers(0, 4)) for d, p in zip(dilation, padding))
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((n, c_in) + hw), rng.standard_normal((c_out, c_in, k, k)), rng.standard_normal(c_out)
    mask = ops.causal_mask(k, k, mask_type, np.float64)
    y = K.masked_conv2d_forward(x, w, mask, b, stride, padding, dilation)
    close(y, R.conv2d(x, w * mask, b, stride, padding, dilation, 1))
    g = rng.standard_normal(y.shape)
    dx, dw, db = K.masked_conv2d_backward(g, x, w, mask, stride, padding, dilation)
    rdx, rdw, rdb = R.conv2d_backward(g, x, w * mask, stride, padding, dilation, 1)
    close(dx, rdx)
    close(dw, rdw * mask)
    close(db, rdb)
    assert not dw[:, :, mask == 0].any()                     # masked weights: exactly zero gradient


def test_masked_conv_uses_only_the_kept_taps(monkeypatch):
    """The matrix product sees C_in * (kept taps) rows: 24 of 49 for 7x7 mask A, 5 of 9 for 3x3 B."""
    seen = []
    real = im2col._conv_chunks
    monkeypatch.setattr(im2col, "_conv_chunks", lambda x, w, geo, *rest: seen.append(geo.rows) or
                        real(x, w, geo, *rest))
    x = np.ones((1, 2, 8, 8))
    for k, mask_type, taps in ((7, "A", 24), (3, "B", 5)):
        K.masked_conv2d_forward(x, np.ones((3, 2, k, k)), ops.causal_mask(k, k, mask_type), None, 1, k // 2)
        assert seen.pop() == 2 * taps


def test_masked_conv_with_no_taps_or_all_taps():
    """A 1x1 mask A keeps nothing (the bias alone); a 1x1 mask B keeps everything (a plain conv)."""
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((4, 3, 1, 1)), rng.standard_normal(4)
    for mask_type in "AB":
        mask = ops.causal_mask(1, 1, mask_type, np.float64)
        close(K.masked_conv2d_forward(x, w, mask, b), R.conv2d(x, w * mask, b, (1, 1), (0, 0), (1, 1), 1))
        g = rng.standard_normal((2, 4, 4, 5))
        for got, want in zip(K.masked_conv2d_backward(g, x, w, mask),
                             R.conv2d_backward(g, x, w * mask, (1, 1), (0, 0), (1, 1), 1)):
            close(got, want * (mask if got.shape == w.shape else 1))


def test_masked_conv_errors():
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    with pytest.raises(ShapeError, match=r"masked_conv2d: mask has shape \(5, 5\) but the weight's kernel is \(3, 3\)"):
        K.masked_conv2d_forward(x, w, np.ones((5, 5)))
    with pytest.raises(ShapeError, match="masked_conv2d: input has 4 channels but the weight expects 2"):
        K.masked_conv2d_forward(np.ones((1, 4, 5, 5)), w, np.ones((3, 3)))
    with pytest.raises(ShapeError, match="masked_conv2d_backward: grad_out has shape"):
        K.masked_conv2d_backward(np.ones((1, 3, 4, 4)), x, w, np.ones((3, 3)), 1, 1)


# --- sub-pixel transposed convs ------------------------------------------------------------
@st.composite
def strided_cases(draw):
    """A transposed conv the sub-pixel path takes: groups 1, dilation 1, some stride > 1, C_out > C_in."""
    kernel, stride = pairs(draw, 1, 5), pairs(draw, 1, 3)
    if stride == (1, 1):
        stride = (2, draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k - 1)) for k in kernel)
    output_padding = tuple(draw(st.integers(0, s - 1)) for s in stride)
    hw = tuple(max(1, -(-(2 * p - k + 1 - o) // s) + 1) + draw(st.integers(0, 3))
               for k, s, p, o in zip(kernel, stride, padding, output_padding))
    n, c_in = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    c_out = c_in + draw(st.integers(1, 2))
    return (n, c_in) + hw, (c_in, c_out) + kernel, stride, padding, output_padding


@SETTINGS
@given(strided_cases(), st.booleans(), st.integers(0, 2**16))
def test_subpixel_conv_transpose_matches_reference(case, use_bias, seed):
    x_shape, w_shape, stride, padding, output_padding = case
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    geo = convbase.conv_transpose2d_geometry("test", x, w, None, stride, padding, output_padding, 1, 1)
    assert subpixel.takes(geo, "input_grad") and subpixel.preferred(geo, "input_grad")
    b = rng.standard_normal(w_shape[1]) if use_bias else None
    y = K.conv_transpose2d_forward(x, w, b, stride, padding, output_padding)
    close(y, R.conv_transpose2d(x, w, b, stride, padding, output_padding, (1, 1), 1))
    # the same arrays as a strided conv: its input gradient takes the sub-pixel path
    g = rng.standard_normal(x_shape)
    dy, dw, _ = K.conv2d_backward(g, y, w, stride, padding)
    rdy, rdw, _ = R.conv2d_backward(g, y, w, stride, padding, (1, 1), 1)
    close(dy, rdy)
    close(dw, rdw)


def test_subpixel_phases_as_the_docstring_teaches():
    """Per axis, k=4, s=2, p=1: two phases of 2 taps each; k=3, s=2, p=1: phases of 1 and 2 taps."""
    assert [(n, t, d) for n, t, d in subpixel._axis_phases(14, 4, 2, 1)] == [(7, [1, 3], [0, -1]), (7, [0, 2], [1, 0])]
    assert [(n, t, d) for n, t, d in subpixel._axis_phases(28, 3, 2, 1)] == [(14, [1], [0]), (14, [0, 2], [1, 0])]


# --- 1x1 convs -----------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 5), st.integers(1, 4), st.integers(1, 4), st.tuples(st.integers(1, 5), st.integers(1, 5)),
       st.booleans(), st.integers(0, 2**16))
def test_pointwise_conv_matches_reference(n, c_in, c_out, hw, use_bias, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((n, c_in) + hw), rng.standard_normal((c_out, c_in, 1, 1))
    b = rng.standard_normal(c_out) if use_bias else None
    y = K.conv2d_forward(x, w, b)
    close(y, R.conv2d(x, w, b, (1, 1), (0, 0), (1, 1), 1))
    g = rng.standard_normal(y.shape)
    for got, want in zip(K.conv2d_backward(g, x, w), R.conv2d_backward(g, x, w, (1, 1), (0, 0), (1, 1), 1)):
        close(got, want)
    dx, dw, _ = K.conv2d_backward(g, x, w, input_grad=False)
    assert dx is None and dw.shape == w.shape


# --- dispatch: which path runs, and the fallbacks --------------------------------------------
@pytest.mark.parametrize("call, fast, taken", [
    (lambda: K.conv2d_forward(np.ones((2, 3, 5, 5)), np.ones((4, 3, 1, 1))), "pointwise.forward", True),
    (lambda: K.conv2d_forward(np.ones((2, 3, 5, 5)), np.ones((4, 3, 1, 1)), padding=1), "pointwise.forward",
     False),
    (lambda: K.conv2d_forward(np.ones((2, 4, 5, 5)), np.ones((4, 2, 1, 1)), groups=2), "pointwise.forward",
     False),
    (lambda: K.conv2d_forward(np.ones((2, 3, 5, 5)), np.ones((4, 3, 1, 1)), stride=2), "pointwise.forward",
     False),
    (lambda: K.conv_transpose2d_forward(np.ones((2, 3, 5, 5)), np.ones((3, 4, 4, 4)), None, 2, 1),
     "subpixel.input_grad", True),
    (lambda: K.conv_transpose2d_forward(np.ones((2, 4, 5, 5)), np.ones((4, 2, 4, 4)), None, 2, 1, groups=2),
     "subpixel.input_grad", False),
    (lambda: K.conv_transpose2d_forward(np.ones((2, 3, 5, 5)), np.ones((3, 4, 3, 3)), None, 2, 1, dilation=2),
     "subpixel.input_grad", False),
    (lambda: K.conv_transpose2d_forward(np.ones((2, 3, 5, 5)), np.ones((3, 4, 3, 3)), None, 1, 1),
     "subpixel.input_grad", False),
    (lambda: K.conv_transpose2d_forward(np.ones((2, 4, 5, 5)), np.ones((4, 3, 4, 4)), None, 2, 1),
     "subpixel.input_grad", False),
    (lambda: K.conv2d_backward(np.ones((2, 4, 2, 2)), np.ones((2, 5, 5, 5)), np.ones((4, 5, 3, 3)), 2),
     "subpixel.input_grad", True),
    (lambda: K.conv2d_backward(np.ones((2, 4, 2, 2)), np.ones((2, 3, 5, 5)), np.ones((4, 3, 3, 3)), 2),
     "subpixel.input_grad", False),
    (lambda: K.conv2d_backward(np.ones((2, 4, 2, 2)), np.ones((2, 5, 5, 5)), np.ones((4, 5, 3, 3)), 2,
                               input_grad=False), "subpixel.input_grad", False),
], ids=["1x1", "1x1-padded", "1x1-groups", "1x1-strided", "transposed-s2", "transposed-groups",
        "transposed-dilated", "transposed-s1", "transposed-narrowing", "strided-dx", "strided-dx-narrowing",
        "strided-no-dx"])
def test_dispatch_takes_the_fast_path_only_where_it_applies(monkeypatch, call, fast, taken):
    """Each fast path is used exactly when it applies; otherwise the general kernel runs (and the
    hypothesis tests in test_kernels.py check its answers over every geometry)."""
    module, name = fast.split(".")
    module = {"pointwise": pointwise, "subpixel": subpixel}[module]
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    call()
    assert bool(calls) == taken


# --- float64 gradchecks of the ops that use the fast paths ------------------------------------
@pytest.mark.parametrize("name", ["masked-A-7x7", "masked-B-3x3", "conv1x1", "conv-k4s2", "conv-k3s2",
                                  "transposed-k4s2"])
def test_gradcheck_ops_on_fast_paths(name):
    rng = np.random.default_rng(5)
    t = lambda *shape: Tensor(rng.standard_normal(shape), requires_grad=True)   # noqa: E731
    fn, inputs = {
        "masked-A-7x7": (lambda x, w, b: ops.masked_conv2d(x, w, b, "A"), (t(2, 2, 7, 6), t(3, 2, 7, 7), t(3))),
        "masked-B-3x3": (lambda x, w, b: ops.masked_conv2d(x, w, b, "B"), (t(2, 2, 5, 4), t(3, 2, 3, 3), t(3))),
        "conv1x1": (lambda x, w, b: ops.conv2d(x, w, b), (t(2, 3, 4, 3), t(2, 3, 1, 1), t(2))),
        "conv-k4s2": (lambda x, w, b: ops.conv2d(x, w, b, 2, 1), (t(2, 3, 6, 7), t(2, 3, 4, 4), t(2))),
        "conv-k3s2": (lambda x, w, b: ops.conv2d(x, w, b, 2, 1), (t(2, 3, 6, 5), t(2, 3, 3, 3), t(2))),
        "transposed-k4s2": (lambda x, w, b: ops.conv_transpose2d(x, w, b, 2, 1), (t(2, 2, 3, 4), t(2, 3, 4, 4), t(3))),
    }[name]
    assert gradcheck(fn, *inputs)


# --- float32 accuracy -------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["masked-A", "masked-B", "conv1x1", "transposed-k4s2", "conv-k3s2-dx"])
def test_float32_error_bound_against_float64_reference(case):
    """Stated bound: each fast path's float32 result is within 1e-5 of the float64 reference,
    relative to the largest output (the sums are reordered, never approximated)."""
    rng = np.random.default_rng(7)
    x, w3 = rng.standard_normal((4, 32, 14, 14)), rng.standard_normal((32, 32, 3, 3))
    w1 = rng.standard_normal((16, 32, 1, 1))
    f32 = lambda *a: [v.astype(np.float32) for v in a]   # noqa: E731
    if case.startswith("masked"):
        k = 7 if case == "masked-A" else 3
        w, mask = rng.standard_normal((16, 32, k, k)), ops.causal_mask(k, k, case[-1], np.float64)
        got = K.masked_conv2d_forward(*f32(x, w, mask), None, 1, k // 2)
        want = R.conv2d(x, w * mask, None, (1, 1), (k // 2, k // 2), (1, 1), 1)
    elif case == "conv1x1":
        got, want = K.conv2d_forward(*f32(x, w1)), R.conv2d(x, w1, None, (1, 1), (0, 0), (1, 1), 1)
    elif case == "transposed-k4s2":
        x, w = x[:, :16], rng.standard_normal((16, 32, 4, 4))          # channels grow: the sub-pixel path
        got, want = K.conv_transpose2d_forward(*f32(x, w), None, 2, 1), R.conv_transpose2d(x, w, None, (2, 2), (1, 1),
                                                                                           (0, 0), (1, 1), 1)
    else:
        g, w = rng.standard_normal((4, 16, 7, 7)), w3[:16]               # its dx grows 16 -> 32: sub-pixel
        got = K.conv2d_backward(*f32(g, x, w), 2, 1)[0]
        want = R.conv2d_backward(g, x, w, (2, 2), (1, 1), (1, 1), 1)[0]
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


# --- small work stays on the calling thread -----------------------------------------------------
def test_serial_path_gives_the_same_numbers_and_restores_the_thread_counts(monkeypatch):
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((6, 4, 9, 9)), rng.standard_normal((5, 4, 3, 3))
    threads = numba.get_num_threads()
    monkeypatch.setattr(convbase, "COLS_BUDGET", 64)               # several chunks
    results = {}
    for label, serial_below in (("shared", 0), ("serial", 1 << 40)):
        monkeypatch.setattr(convbase, "SERIAL_MULTIPLY_ADDS", serial_below)
        monkeypatch.setattr(convbase, "SERIAL_ELEMENTS", serial_below)
        results[label] = (K.conv2d_forward(x, w, None, 1, 1), K.conv2d_backward(np.ones((6, 5, 9, 9)), x, w, 1, 1)[:2])
        assert numba.get_num_threads() == threads
    close(results["serial"][0], results["shared"][0])
    for a, b in zip(results["serial"][1], results["shared"][1]):
        close(a, b)


def test_serial_below_switches_only_small_work_and_restores_on_error():
    threads = numba.get_num_threads()
    with convbase.serial_below(10, 100):
        assert numba.get_num_threads() == 1
    with convbase.serial_below(100, 100):
        assert numba.get_num_threads() == threads
    with pytest.raises(RuntimeError):
        with convbase.serial_below(10, 100):
            raise RuntimeError("inside")
    assert numba.get_num_threads() == threads


# --- a small batch split between threads, each running its part serially -------------------------
@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_map_batch_parts_covers_the_batch_in_order_with_serial_kernels(n):
    threads = numba.get_num_threads()
    parts = min(n, threads)
    seen = []

    def part(n0, n1):
        seen.append((n0, n1, convbase._in_batch_part(), numba.get_num_threads()))
        inner = convbase.map_batch_parts(lambda a, b: (a, b), n1 - n0)   # nested: not split again
        return list(range(n0, n1)), inner
    results = convbase.map_batch_parts(part, n)
    assert [i for done, _ in results for i in done] == list(range(n))           # contiguous, in order
    assert len(results) == parts and [inner for _, inner in results] == [[(0, n1 - n0)] for n0, n1, *_ in sorted(seen)]
    split = parts > 1
    assert all(active == split and count == (1 if split else threads) for *_, active, count in seen)
    assert not convbase._in_batch_part() and numba.get_num_threads() == threads


def test_map_batch_parts_gives_the_whole_batch_numbers_and_passes_errors_on():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((6, 16, 8, 8)).astype(np.float32), rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    threads = numba.get_num_threads()
    whole = K.conv2d_forward(x, w, None, 1, 1)
    parts = convbase.map_batch_parts(lambda n0, n1: K.conv2d_forward(x[n0:n1], w, None, 1, 1), len(x))
    assert np.abs(np.concatenate(parts) - whole).max() <= 1e-6 * np.abs(whole).max()
    assert numba.get_num_threads() == threads

    def fails(n0, n1):
        raise RuntimeError(f"part {n0}")
    with pytest.raises(RuntimeError, match="part"):
        convbase.map_batch_parts(fails, 4)
    assert numba.get_num_threads() == threads and not convbase._in_batch_part()


# --- GroupNorm + SiLU fused ---------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 3), st.sampled_from([(1, 1), (2, 1), (2, 3), (4, 2)]), st.sampled_from([(), (3,), (2, 5)]),
       st.integers(0, 2**16))
def test_group_norm_silu_matches_reference(n, groups_cg, spatial, seed):
    groups, cg = groups_cg
    rng = np.random.default_rng(seed)
    c = groups * cg
    x, w, b = rng.standard_normal((n, c) + spatial), rng.standard_normal(c), rng.standard_normal(c)
    y, mean, rstd = K.group_norm_forward(x, groups, w, b, 1e-5, silu=True)
    h = R.group_norm(x, groups, w, b, 1e-5)
    close(y, R.silu(h))
    g = rng.standard_normal(x.shape)
    got = K.group_norm_backward(g, x, groups, w, mean, rstd, b, silu=True, out=y)
    for a, e in zip(got, R.group_norm_backward(R.silu_backward(g, h), x, groups, w, 1e-5)):
        close(a, e, 1e-9)


def test_group_norm_silu_saturates_quietly_for_very_negative_inputs():
    """exp(-h) overflows float32 for h < -88: silu must give (-)0 there, finite, with no warning."""
    x = np.random.default_rng(3).standard_normal((2, 4, 5, 5)).astype(np.float32)
    bias = np.array([-200, -90, 0, 50], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = K.group_norm_forward(x, 2, np.ones(4, np.float32), bias, silu=True)[0]
    assert np.all(np.isfinite(y)) and np.all(np.abs(y[:, :2]) < 1e-30)
    np.testing.assert_allclose(y[:, 3], R.silu(R.group_norm(x.astype(np.float64), 2, np.ones(4), bias, 1e-5))[:, 3],
                               rtol=1e-6)


@pytest.mark.parametrize("serial_elements", [1, 1 << 40])
def test_silu_in_blocks_on_the_workers_is_the_whole_array_formula(monkeypatch, serial_elements):
    """The forward's SiLU runs over blocks (the last one shorter) on the workers, or on this thread:
    the same bits as h / (1 + exp(-h)) over the whole array either way."""
    from minigen.kernels import norm
    monkeypatch.setattr(norm, "SILU_BLOCK", 1000)
    monkeypatch.setattr(norm, "SERIAL_ELEMENTS", serial_elements)
    h = np.random.default_rng(8).standard_normal((3, 7, 11, 13)).astype(np.float32) * 30
    got = h.copy()
    norm._silu_inplace(got)
    with np.errstate(over="ignore"):
        want = h / (1 + np.exp(-h))
    np.testing.assert_array_equal(got, want)


def test_group_norm_silu_backward_where_sigmoid_is_read_off_the_output():
    """The backward takes sigmoid(h) as out / h: right where h is exactly 0, tiny (the 1/2 + h/4
    branch), saturated very negative (out = -0) or large, in float64 and float32; and it needs
    the forward's output."""
    x = np.random.default_rng(4).standard_normal((2, 4, 6))       # h = bias + 1e-9 * xhat
    for dtype, bias, tol in [(np.float64, [0, 2e-7, -200, 30], 1e-9), (np.float32, [0, 2e-7, -120, 30], 2e-5)]:
        xd, w, b = x.astype(dtype), np.full(4, 1e-9, dtype), np.array(bias, dtype)
        xd[:, 0] = 0                       # a constant group: xhat = 0, h = bias = 0 exactly
        y, mean, rstd = K.group_norm_forward(xd, 4, w, b, 1e-5, silu=True)
        g = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
        got = K.group_norm_backward(g, xd, 4, w, mean, rstd, b, silu=True, out=y)
        x64 = xd.astype(np.float64)
        h = R.group_norm(x64, 4, w.astype(np.float64), b.astype(np.float64), 1e-5)
        want = R.group_norm_backward(R.silu_backward(g.astype(np.float64), h), x64, 4, w.astype(np.float64), 1e-5)
        for a, e in zip(got, want):
            assert np.all(np.isfinite(a))
            np.testing.assert_allclose(a, e, rtol=tol, atol=tol)
    with pytest.raises(ShapeError, match="out must be the forward's output"):
        K.group_norm_backward(g, xd, 4, w, mean, rstd, b, silu=True)


def test_gradcheck_group_norm_silu_and_its_float32_bound():
    rng = np.random.default_rng(11)
    t = lambda *shape: Tensor(rng.standard_normal(shape), requires_grad=True)   # noqa: E731
    assert gradcheck(lambda x, w, b: ops.group_norm(x, 2, w, b, silu=True), t(2, 4, 3, 3), t(4), t(4))
    x, w, b = rng.standard_normal((4, 64, 14, 14)) * 3 + 5, rng.standard_normal(64), rng.standard_normal(64)
    x32, w32, b32 = (v.astype(np.float32) for v in (x, w, b))
    got = K.group_norm_forward(x32, 8, w32, b32, silu=True)[0]
    want = R.silu(R.group_norm(x, 8, w, b, 1e-5))
    assert got.dtype == np.float32 and np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE 12"), ("ACTIVE", "ACTIVE 28")])
def test_openmp_and_openblas_threads_sleep_between_calls_unless_the_user_says_otherwise(preset, expected):
    """Importing minigen makes OpenMP's threads sleep after a parallel loop and OpenBLAS's soon after
    a product (spinning ones took the cores from the next op on another pool); values the user set
    are left alone."""
    import os
    import subprocess
    import sys
    names = ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")
    env = {k: v for k, v in os.environ.items() if k not in names}
    if preset:
        env.update(zip(names, (preset, "28")))
    out = subprocess.run([sys.executable, "-c", "import os, minigen; print(*(os.environ[n] for n in %r))" % (names,)],
                         env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == expected
