"""Elementwise kernels on NumPy arrays, one pass each: ReLU and leaky ReLU (forward and backward), and
the sum of two arrays of one shape.

In NumPy the leaky ReLU's forward takes two passes over memory (s * x, then the max) and its
backward four (x > 0, to float, the max with s, times g); these loops read and write each element
once, and share big arrays between the threads (`serial_below`: not below SERIAL_ELEMENTS), which
NumPy's ufuncs never do (hence `add`). They are the textbook formulas, with NaN passed through as
NumPy does:

    leaky_relu(x)  = x if x > 0 else s * x        d/dx = 1 if x > 0 else s
    relu(x)        = x if not x <= 0 else 0       d/dx = 1 if relu(x) > 0 else 0

(relu's backward reads the forward's output, which the next layer keeps anyway). The NumPy
versions they are tested against are in reference.py (and np.add). Any shape; float32 or float64;
the result is a new C-contiguous array of x's dtype.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigen.kernels.convbase import SERIAL_ELEMENTS, serial_below

__all__ = ["relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward", "add"]

@njit(cache=True, parallel=True)
def _leaky_relu(x, slope, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = v if v > 0 else v * slope


@njit(cache=True, parallel=True)
def _leaky_relu_grad(g, x, slope, out):
    for i in prange(x.size):
        out[i] = g[i] if x[i] > 0 else g[i] * slope


@njit(cache=True, parallel=True)
def _relu(x, out):
    for i in prange(x.size):
        v = x[i]
        out[i] = v if not v <= 0 else 0


@njit(cache=True, parallel=True)
def _relu_grad(g, y, out):
    for i in prange(y.size):
        out[i] = g[i] if y[i] > 0 else 0


@njit(cache=True, parallel=True)
def _add(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] + b[i]


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _run(kernel, like, *args):
    """kernel(*flat args, out) into a new array shaped like `like`."""
    out = np.empty(like.shape, like.dtype)
    with serial_below(like.size, SERIAL_ELEMENTS):
        kernel(*args, out.reshape(-1))
    return out


def leaky_relu_forward(x, slope: float):
    """x where x > 0, else slope * x (slope in x's dtype)."""
    return _run(_leaky_relu, x, _flat(x), x.dtype.type(slope))


def leaky_relu_backward(g, x, slope: float):
    """g where x > 0, else slope * g: the gradient through leaky_relu_forward(x, slope)."""
    return _run(_leaky_relu_grad, x, _flat(g), _flat(x), x.dtype.type(slope))


def relu_forward(x):
    """max(x, 0), NaN kept."""
    return _run(_relu, x, _flat(x))


def relu_backward(g, y):
    """g where y = relu_forward(x) > 0, else 0."""
    return _run(_relu_grad, y, _flat(g), _flat(y))


def add(a, b):
    """a + b for arrays of one shape and dtype: one pass shared between the threads when large (the
    residual sums of the conv nets), else NumPy's own."""
    if a.size < SERIAL_ELEMENTS:
        return np.add(a, b)
    return _run(_add, a, _flat(a), _flat(b))
