"""Reductions (sum, mean, max, var), softmax family, and matmul.

Reductions take `axis` (None, an int or a tuple) and `keepdims`. Their
backward first puts the reduced axes back as size-1 axes (`_expand`), then
lets broadcasting spread the gradient over them.
"""
from __future__ import annotations

import numpy as np

from minigen.kernels.convbase import serial_below
from minigen.errors import ShapeError
from minigen.ops.elementwise import _pair
from minigen.tensor import Tensor, make_result, register_op

__all__ = ["sum", "mean", "max", "var", "logsumexp", "log_softmax", "softmax", "matmul", "linear"]


def _axes(name: str, a: Tensor, axis) -> tuple:
    """Normalise `axis` to a sorted tuple of non-negative ints, checking it exists."""
    if axis is None:
        return tuple(range(a.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    for ax in axes:
        if not -a.ndim <= ax < a.ndim:
            raise ShapeError(f"{name}: axis {ax} is out of range for a tensor of shape {a.shape}")
    return tuple(sorted(int(ax) % a.ndim for ax in axes))


def _expand(g: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
    """Give a reduced gradient its size-1 axes back, so it broadcasts against the input."""
    return g if keepdims else np.expand_dims(g, axes)


@register_op("sum")
def sum(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _axes("sum", a, axis)
    out = a.data.sum(axis=axes, keepdims=keepdims)
    return make_result(np.asarray(out), (a,),
                       lambda g: (np.broadcast_to(_expand(g, axes, keepdims), a.shape),), "sum")


@register_op("mean")
def mean(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    axes = _axes("mean", a, axis)
    count = int(np.prod([a.shape[i] for i in axes]))
    out = a.data.mean(axis=axes, keepdims=keepdims)
    return make_result(np.asarray(out), (a,),
                       lambda g: (np.broadcast_to(_expand(g, axes, keepdims) / count, a.shape),), "mean")


@register_op("max")
def max(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """Maximum; the gradient is shared equally among tied maxima."""
    axes = _axes("max", a, axis)
    if a.size == 0:
        raise ShapeError(f"max: cannot take the maximum of an empty tensor of shape {a.shape}")
    out_keep = a.data.max(axis=axes, keepdims=True)

    def backward(g):
        winners = a.data == out_keep
        return (winners * (_expand(g, axes, keepdims) / winners.sum(axis=axes, keepdims=True)),)
    out = out_keep if keepdims else np.squeeze(out_keep, axes)
    return make_result(out, (a,), backward, "max")


@register_op("var")
def var(a: Tensor, axis=None, keepdims: bool = False, correction: int = 0) -> Tensor:
    """Variance: sum((a - mean)^2) / (count - correction). correction=0 is the biased (norm-layer) one."""
    axes = _axes("var", a, axis)
    count = int(np.prod([a.shape[i] for i in axes]))
    if count - correction <= 0:
        raise ShapeError(f"var: {count} values with correction={correction} leave no degrees of freedom "
                         f"(shape {a.shape}, axis {axis})")
    centred = a.data - a.data.mean(axis=axes, keepdims=True)
    out = (centred * centred).sum(axis=axes, keepdims=keepdims) / (count - correction)
    return make_result(np.asarray(out, a.dtype), (a,),
                       lambda g: (_expand(g, axes, keepdims) * (2 / (count - correction)) * centred,), "var")


def _logsumexp_keep(x: np.ndarray, axes) -> np.ndarray:
    peak = x.max(axis=axes, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0)   # all -inf rows stay -inf, not NaN
    return np.log(np.exp(x - peak).sum(axis=axes, keepdims=True)) + peak


@register_op("logsumexp")
def logsumexp(a: Tensor, axis=None, keepdims: bool = False) -> Tensor:
    """log(sum(exp(a))) without overflow: the max is taken out first."""
    axes = _axes("logsumexp", a, axis)
    out_keep = _logsumexp_keep(a.data, axes)
    out = out_keep if keepdims else np.squeeze(out_keep, axes)
    return make_result(out, (a,), lambda g: (_expand(g, axes, keepdims) * np.exp(a.data - out_keep),),
                       "logsumexp")


@register_op("log_softmax")
def log_softmax(a: Tensor, axis: int = -1) -> Tensor:
    axes = _axes("log_softmax", a, axis)
    out = a.data - _logsumexp_keep(a.data, axes)

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axes, keepdims=True),)
    return make_result(out, (a,), backward, "log_softmax")


@register_op("softmax")
def softmax(a: Tensor, axis: int = -1) -> Tensor:
    axes = _axes("softmax", a, axis)
    out = np.exp(a.data - _logsumexp_keep(a.data, axes))

    def backward(g):
        # BEGIN SOLUTION autograd: (dL/da,) of out = softmax(a) along axes, written with out (no Jacobian matrix)
        return (out * (g - (g * out).sum(axis=axes, keepdims=True)),)
        # END SOLUTION
    return make_result(out, (a,), backward, "softmax")


# Products below this many multiply-adds run with one BLAS thread: BLAS splits an MLP's products well, but its
# threads keep spinning after each product and take the cores from the Numba loops and conv workers that come
# next in a conv network, whose products are this small (docs/measurements.md#serial-matmul).
SERIAL_MATMUL_MULTIPLY_ADDS = 1 << 24


@register_op("matmul")
def matmul(a, b) -> Tensor:
    """Batched matrix product. a: (..., n, k), b: (..., k, m) -> (..., n, m); batch dims broadcast."""
    a, b = _pair("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} are not (..., n, k) @ (..., k, m)")
    multiply_adds = a.size * b.shape[-1]        # of the forward product, and of each backward one
    try:
        with serial_below(multiply_adds, SERIAL_MATMUL_MULTIPLY_ADDS):    # tiny products: no BLAS threads
            out = np.matmul(a.data, b.data)
    except ValueError:
        raise ShapeError(f"matmul: batch dimensions of {a.shape} and {b.shape} cannot be broadcast") from None

    def backward(g):
        with serial_below(multiply_adds, SERIAL_MATMUL_MULTIPLY_ADDS):
            # BEGIN SOLUTION autograd: (dL/da, dL/db) of out = a @ b; None for an input that needs no gradient
            ga = np.matmul(g, np.swapaxes(b.data, -1, -2)) if a.requires_grad else None
            gb = np.matmul(np.swapaxes(a.data, -1, -2), g) if b.requires_grad else None
            return ga, gb
            # END SOLUTION
    return make_result(out, (a, b), backward, "matmul")


@register_op("linear")
def linear(x, w, b=None) -> Tensor:
    """x @ w.T + b, like torch.nn.functional.linear. x: (..., in); w: (out, in); b: (out,) or None
    -> (..., out).

    The same arithmetic as matmul(x, transpose(w)) + b, as one op because of the weight gradient's
    layout: here it is g^T x, which BLAS writes in w's own (out, in) layout, while through a transpose
    op it arrived as a transposed view that the leaf had to copy (docs/measurements.md#smaller-choices)."""
    x, w = _pair("linear", x, w)
    if b is not None:
        x, b = _pair("linear", x, b)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"linear: input {x.shape} and weight {w.shape} are not (..., in) and (out, in)")
    if b is not None and b.shape != (w.shape[0],):
        raise ShapeError(f"linear: bias has shape {b.shape}; expected ({w.shape[0]},) for weight {w.shape}")
    multiply_adds = x.size * w.shape[0]
    with serial_below(multiply_adds, SERIAL_MATMUL_MULTIPLY_ADDS):
        out = np.matmul(x.data, w.data.T)
    if b is not None:
        out += b.data

    def backward(g):
        g2 = g.reshape(-1, w.shape[0])                      # (rows, out): the batch dims flattened
        with serial_below(multiply_adds, SERIAL_MATMUL_MULTIPLY_ADDS):
            gx = np.matmul(g, w.data) if x.requires_grad else None
            gw = np.matmul(g2.T, x.data.reshape(-1, w.shape[1])) if w.requires_grad else None
        gb = g2.sum(axis=0) if b is not None and b.requires_grad else None
        return (gx, gw) if b is None else (gx, gw, gb)
    return make_result(out, (x, w) if b is None else (x, w, b), backward, "linear")

