"""Elementwise ops. Each op: the forward in NumPy, then its `backward(g)` right beside it.

`g` is d(loss)/d(output), same shape as the output; `backward` returns
d(loss)/d(input) for each input. Broadcasting is undone by the engine
(`minigen.tensor.unbroadcast`), so binary ops return full-size gradients.
"""
from __future__ import annotations

import numpy as np

from minigen import kernels as K
from minigen.errors import DTypeError, ShapeError
from minigen.tensor import Tensor, as_tensor, make_result, register_op

__all__ = ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs", "tanh", "sigmoid",
           "relu", "leaky_relu", "silu", "softplus", "log_sigmoid", "clamp", "where", "cast"]


def _pair(name: str, a, b) -> tuple[Tensor, Tensor]:
    """Both operands as tensors of one dtype (Python numbers take the tensor's dtype)."""
    like = a if isinstance(a, Tensor) else b
    a, b = as_tensor(a, like), as_tensor(b, like)
    if a.dtype != b.dtype:
        raise DTypeError(f"{name}: operands have different dtypes {a.dtype} and {b.dtype}; "
                         f"convert one with .astype() first")
    return a, b


def _broadcast(name: str, fn, a: Tensor, b: Tensor) -> np.ndarray:
    try:
        return fn(a.data, b.data)
    except ValueError:
        raise ShapeError(f"{name}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


# --- arithmetic --------------------------------------------------------------------
@register_op("add")
def add(a, b) -> Tensor:
    a, b = _pair("add", a, b)
    out = K.add(a.data, b.data) if a.shape == b.shape else _broadcast("add", np.add, a, b)
    return make_result(out, (a, b), lambda g: (g, g), "add")


@register_op("sub")
def sub(a, b) -> Tensor:
    a, b = _pair("sub", a, b)
    return make_result(_broadcast("sub", np.subtract, a, b), (a, b), lambda g: (g, -g), "sub")


@register_op("mul")
def mul(a, b) -> Tensor:
    a, b = _pair("mul", a, b)

    def backward(g):
        # BEGIN SOLUTION autograd: (dL/da, dL/db) of out = a * b, given g = dL/dout
        return g * b.data, g * a.data
        # END SOLUTION
    return make_result(_broadcast("mul", np.multiply, a, b), (a, b), backward, "mul")


@register_op("div")
def div(a, b) -> Tensor:
    a, b = _pair("div", a, b)
    out = _broadcast("div", np.divide, a, b)

    def backward(g):
        # BEGIN SOLUTION autograd: (dL/da, dL/db) of out = a / b, given g = dL/dout; reuse out
        ga = g / b.data
        return ga, -ga * out          # d(a/b)/db = -a/b^2 = -(g/b) * (a/b)
        # END SOLUTION
    return make_result(out, (a, b), backward, "div")


@register_op("neg")
def neg(a: Tensor) -> Tensor:
    return make_result(-a.data, (a,), lambda g: (-g,), "neg")


@register_op("pow")
def pow(a, b) -> Tensor:
    """a ** b. A constant exponent (a Python number) is the common, cheap case."""
    if isinstance(b, (int, float)) and isinstance(a, Tensor):
        out = a.data ** b

        def backward_const(g):
            return (g * b * a.data ** (b - 1),)
        return make_result(out, (a,), backward_const, "pow")
    a, b = _pair("pow", a, b)
    out = _broadcast("pow", np.power, a, b)

    def backward(g):
        ga = g * b.data * a.data ** (b.data - 1)
        # d(a^b)/db = a^b log a; only defined for a > 0, so only computed if b needs it
        gb = g * out * np.log(np.where(a.data > 0, a.data, 1)) if b.requires_grad else None
        return ga, gb
    return make_result(out, (a, b), backward, "pow")


# --- unary functions ----------------------------------------------------------------
@register_op("exp")
def exp(a: Tensor) -> Tensor:
    out = np.exp(a.data)
    return make_result(out, (a,), lambda g: (g * out,), "exp")


@register_op("log")
def log(a: Tensor) -> Tensor:
    return make_result(np.log(a.data), (a,), lambda g: (g / a.data,), "log")


@register_op("sqrt")
def sqrt(a: Tensor) -> Tensor:
    out = np.sqrt(a.data)
    return make_result(out, (a,), lambda g: (g * 0.5 / out,), "sqrt")


@register_op("abs")
def abs(a: Tensor) -> Tensor:
    return make_result(np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),), "abs")


@register_op("tanh")
def tanh(a: Tensor) -> Tensor:
    out = np.tanh(a.data)
    return make_result(out, (a,), lambda g: (g * (1 - out * out),), "tanh")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # sigmoid(x) = (1 + tanh(x / 2)) / 2: tanh never overflows, and it is one fast ufunc
    # (the textbook 1 / (1 + exp(-x)) overflows for x << 0)
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@register_op("sigmoid")
def sigmoid(a: Tensor) -> Tensor:
    out = _sigmoid(a.data)
    return make_result(out, (a,), lambda g: (g * out * (1 - out),), "sigmoid")


@register_op("relu")
def relu(a: Tensor) -> Tensor:
    out = K.relu_forward(a.data)
    # the backward's mask is recomputed from the output, which the next layer keeps anyway: holding
    # the forward's boolean mask instead cost a quarter of the activations' memory more (measured)
    return make_result(out, (a,), lambda g: (K.relu_backward(g, out),), "relu")


@register_op("leaky_relu")
def leaky_relu(a: Tensor, negative_slope: float = 0.01) -> Tensor:
    """x where x > 0, else negative_slope * x."""
    # one pass each way (kernels/elementwise.py); the backward's slope is recomputed from the input
    # the graph keeps anyway, so no activation-sized array is held from forward to backward
    out = K.leaky_relu_forward(a.data, negative_slope)
    return make_result(out, (a,), lambda g: (K.leaky_relu_backward(g, a.data, negative_slope),), "leaky_relu")


@register_op("silu")
def silu(a: Tensor) -> Tensor:
    """x * sigmoid(x) (a.k.a. swish)."""
    s = _sigmoid(a.data)

    def backward(g):
        # d/dx x*s(x) = s * (1 + x * (1 - s)), computed in place: these arrays are activation-sized
        d = 1 - s
        d *= a.data
        d += 1
        d *= s
        d *= g
        return (d,)
    return make_result(a.data * s, (a,), backward, "silu")


def _softplus(x: np.ndarray) -> np.ndarray:
    # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow for large |x|
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


@register_op("softplus")
def softplus(a: Tensor) -> Tensor:
    return make_result(_softplus(a.data), (a,), lambda g: (g * _sigmoid(a.data),), "softplus")


@register_op("log_sigmoid")
def log_sigmoid(a: Tensor) -> Tensor:
    """log(sigmoid(x)) = -softplus(-x), computed stably."""
    return make_result(-_softplus(-a.data), (a,), lambda g: (g * _sigmoid(-a.data),), "log_sigmoid")


@register_op("clamp")
def clamp(a: Tensor, low: float | None = None, high: float | None = None) -> Tensor:
    """Limit values to [low, high]; the gradient passes only where the value was inside."""
    lo = -np.inf if low is None else low
    hi = np.inf if high is None else high
    inside = (a.data >= lo) & (a.data <= hi)
    return make_result(np.clip(a.data, lo, hi), (a,), lambda g: (g * inside,), "clamp")


@register_op("where")
def where(condition, a, b) -> Tensor:
    """Pick a where condition is true, else b. condition: bool array (no gradient)."""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, dtype=bool)
    a, b = _pair("where", a, b)
    try:
        out = np.where(cond, a.data, b.data)
    except ValueError:
        raise ShapeError(f"where: condition {cond.shape}, a {a.shape} and b {b.shape} cannot be "
                         f"broadcast together") from None
    zero = np.zeros((), a.dtype)
    return make_result(out, (a, b), lambda g: (np.where(cond, g, zero), np.where(cond, zero, g)), "where")


@register_op("cast")
def cast(a: Tensor, dtype) -> Tensor:
    """The same values in another float dtype (float32 <-> float64)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"cast: dtype {dtype} is not supported; use float32 or float64")
    src = a.dtype
    return make_result(a.data.astype(dtype), (a,), lambda g: (g.astype(src),), "cast")
