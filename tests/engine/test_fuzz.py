"""Fuzzing: random shapes, dtypes, strides, paddings and layouts thrown at the ops and kernels.

Each case accepts exactly two outcomes: the right answer (checked against NumPy or the plain
NumPy references in minigen/kernels/reference.py), or minigen's own error (a MinigenError
subclass) when the arguments are invalid. Anything else -- another exception, a crash, a
wrong number, or a *result* for invalid arguments -- fails the test.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from minigen import kernels, ops
from minigen.errors import MinigenError
from minigen.kernels import reference as ref
from minigen.tensor import Tensor

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.float32, np.float64, np.float16, np.int32, np.complex64]


def attempt(fn):
    """The result of fn(), or the MinigenError it raised (any other exception propagates)."""
    try:
        return fn()
    except MinigenError as e:
        return e


def array(data, shape, dtype, strided):
    """Random values of `shape` and `dtype`, optionally a non-contiguous view (every other column)."""
    values = data.draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(values)
    if strided and len(shape) >= 1:
        big = rng.standard_normal(tuple(shape[:-1]) + (2 * shape[-1],))
        return big[..., ::2].astype(dtype, copy=False) if dtype in (np.float32, np.float64) else \
            big.astype(dtype)[..., ::2]
    return rng.standard_normal(shape).astype(dtype)


def close(got, want, dtype):
    tol = 1e-4 if dtype == np.float32 else 1e-9
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# --- elementwise broadcasting and matmul, through the autograd ops ---------------------------------
shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@FUZZ
@given(shapes, shapes, st.sampled_from(["add", "sub", "mul", "div"]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from([np.float32, np.float64]), st.data())
def test_binary_ops_broadcast_right_or_refuse(sa, sb, name, da, db, data):
    a, b = array(data, sa, da, False), array(data, sb, db, False) + 3.0
    got = attempt(lambda: getattr(ops, name)(Tensor(a), Tensor(b)))
    try:
        want = getattr(np, {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide"}[name])(a, b)
    except ValueError:
        want = None
    if want is None or da != db:        # not broadcastable, or mixed precision: must be refused
        assert isinstance(got, MinigenError), got
    else:
        assert not isinstance(got, Exception), got
        assert got.shape == want.shape and got.dtype == want.dtype
        close(got.data, want, da)


@FUZZ
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
       st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), st.data())
def test_matmul_right_or_refuse(sa, sb, data):
    a, b = array(data, sa, np.float64, False), array(data, sb, np.float64, False)
    got = attempt(lambda: ops.matmul(Tensor(a), Tensor(b)))
    valid = len(sa) >= 2 and len(sb) >= 2 and sa[-1] == sb[-2]
    if valid:
        try:
            want = np.matmul(a, b)
        except ValueError:
            valid = False
    if not valid:
        assert isinstance(got, MinigenError), got
    else:
        close(got.data, want, np.float64)


@FUZZ
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple), st.integers(-6, 5),
       st.sampled_from(["sum", "mean", "max", "var", "logsumexp"]), st.booleans(), st.data())
def test_reductions_right_or_refuse(shape, axis, name, keepdims, data):
    x = array(data, shape, np.float64, data.draw(st.booleans()))
    got = attempt(lambda: getattr(ops, name)(Tensor(x), axis=axis, keepdims=keepdims))
    if not -len(shape) <= axis < len(shape):
        assert isinstance(got, MinigenError), got
        return
    if name == "logsumexp":
        want = np.log(np.exp(x).sum(axis=axis, keepdims=keepdims))
    else:
        want = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    close(got.data, want, np.float64)


# --- convolutions, pooling, upsampling and norms: the Numba kernels -------------------------------
@st.composite
def conv_args(draw):
    groups = draw(st.integers(1, 3))
    return dict(n=draw(st.integers(0, 2)), c_in=draw(st.integers(1, 4)), c_out=draw(st.integers(1, 4)),
                groups=groups, h=draw(st.integers(1, 8)), w=draw(st.integers(1, 8)),
                kernel=(draw(st.integers(1, 4)), draw(st.integers(1, 4))),
                stride=(draw(st.integers(-1, 3)), draw(st.integers(0, 3))),
                padding=(draw(st.integers(-1, 3)), draw(st.integers(0, 2))),
                dilation=(draw(st.integers(0, 2)), draw(st.integers(1, 2))),
                weight_in=draw(st.integers(1, 4)), dtype=draw(st.sampled_from(DTYPES)),
                strided=draw(st.booleans()), bias=draw(st.booleans()))


def conv_is_valid(a, transposed=False):
    if a["dtype"] not in (np.float32, np.float64) or a["n"] < 1:
        return False
    if min(a["stride"]) < 1 or min(a["padding"]) < 0 or min(a["dilation"]) < 1:
        return False
    g = a["groups"]
    if transposed:
        if a["c_in"] % g or a["weight_in"] != a["c_in"]:
            return False
        sizes = [(s - 1) * st_ - 2 * p + d * (k - 1) + 1 for s, st_, p, d, k in
                 zip((a["h"], a["w"]), a["stride"], a["padding"], a["dilation"], a["kernel"])]
        return min(sizes) >= 1
    if a["c_in"] % g or a["c_out"] % g or a["weight_in"] * g != a["c_in"]:
        return False
    sizes = [(s + 2 * p - d * (k - 1) - 1) // st_ + 1 for s, st_, p, d, k in
             zip((a["h"], a["w"]), a["stride"], a["padding"], a["dilation"], a["kernel"])]
    return min(sizes) >= 1


@FUZZ
@given(conv_args(), st.data())
def test_conv2d_right_or_refuse(a, data):
    dt = a["dtype"]
    x = array(data, (a["n"], a["c_in"], a["h"], a["w"]), dt, a["strided"])
    w = array(data, (a["c_out"], a["weight_in"]) + a["kernel"], dt, False)
    b = array(data, (a["c_out"],), dt, False) if a["bias"] else None
    args = (a["stride"], a["padding"], a["dilation"], a["groups"])
    got = attempt(lambda: kernels.conv2d_forward(x, w, b, *args))
    if not conv_is_valid(a):
        assert isinstance(got, MinigenError), f"accepted invalid arguments {a}"
        return
    assert not isinstance(got, Exception), got
    close(got, ref.conv2d(x, w, b, *args), dt)
    grad = array(data, got.shape, dt, False)
    for mine, theirs in zip(kernels.conv2d_backward(grad, x, w, *args), ref.conv2d_backward(grad, x, w, *args)):
        close(mine, theirs, dt)


@FUZZ
@given(conv_args(), st.integers(0, 2), st.data())
def test_conv_transpose2d_right_or_refuse(a, output_padding, data):
    dt = a["dtype"]
    x = array(data, (a["n"], a["c_in"], a["h"], a["w"]), dt, a["strided"])
    w = array(data, (a["weight_in"], a["c_out"]) + a["kernel"], dt, False)
    args = (a["stride"], a["padding"], (output_padding, output_padding), a["dilation"], a["groups"])
    got = attempt(lambda: kernels.conv_transpose2d_forward(x, w, None, *args))
    valid = conv_is_valid(a, transposed=True) and output_padding < max(a["stride"][0], a["dilation"][0]) \
        and output_padding < max(a["stride"][1], a["dilation"][1])
    if not valid:
        assert isinstance(got, MinigenError), f"accepted invalid arguments {a}, output_padding={output_padding}"
        return
    assert not isinstance(got, Exception), got
    close(got, ref.conv_transpose2d(x, w, None, *args), dt)


@FUZZ
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.integers(1, 4),
       st.integers(-1, 3), st.integers(-1, 2), st.sampled_from(DTYPES), st.booleans(), st.data())
def test_pooling_right_or_refuse(n, c, h, w, k, stride, padding, dtype, strided, data):
    x = array(data, (n, c, h, w), dtype, strided)
    valid = (dtype in (np.float32, np.float64) and n >= 1 and stride >= 1 and 0 <= padding <= k // 2
             and (h + 2 * padding - k) // stride + 1 >= 1 and (w + 2 * padding - k) // stride + 1 >= 1)
    geometry = ((k, k), (stride, stride), (padding, padding))
    for name in ("max_pool2d", "avg_pool2d"):
        got = attempt(lambda: getattr(kernels, f"{name}_forward")(x, k, stride, padding))
        if not valid:
            assert isinstance(got, MinigenError), f"{name} accepted {x.shape} {dtype} k={k} s={stride} p={padding}"
            continue
        assert not isinstance(got, Exception), got
        mine = got[0] if name == "max_pool2d" else got
        want = getattr(ref, name)(x, *geometry)
        close(mine, want[0] if name == "max_pool2d" else want, dtype)


@FUZZ
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(-1, 3),
       st.sampled_from(DTYPES), st.booleans(), st.data())
def test_upsample_right_or_refuse(n, c, h, w, scale, dtype, strided, data):
    x = array(data, (n, c, h, w), dtype, strided)
    got = attempt(lambda: kernels.upsample_nearest_forward(x, scale))
    if not (dtype in (np.float32, np.float64) and n >= 1 and scale >= 1):
        assert isinstance(got, MinigenError), got
        return
    close(got, ref.upsample_nearest(x, (scale, scale)), dtype)


@FUZZ
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 4), st.integers(1, 4), st.integers(0, 4),
       st.sampled_from(DTYPES), st.booleans(), st.data())
def test_norms_right_or_refuse(n, c, h, w, groups, dtype, strided, data):
    x = array(data, (n, c, h, w), dtype, strided)
    weight, bias = array(data, (c,), dtype, False), array(data, (c,), dtype, False)
    floats = dtype in (np.float32, np.float64)
    got = attempt(lambda: kernels.group_norm_forward(x, groups, weight, bias))
    if not (floats and n >= 1 and groups >= 1 and c % groups == 0):
        assert isinstance(got, MinigenError), got
    else:
        assert not isinstance(got, Exception), got
        close(got[0], ref.group_norm(x, groups, weight, bias, 1e-5), dtype)
    got = attempt(lambda: kernels.batch_norm_forward(x, weight, bias))
    if not (floats and n * h * w >= 2):
        assert isinstance(got, MinigenError), got
    else:
        assert not isinstance(got, Exception), got
        close(got[0], ref.batch_norm(x, weight, bias, 1e-5)[0], dtype)
