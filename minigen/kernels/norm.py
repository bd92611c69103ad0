"""Batch, group and layer normalization on NumPy arrays, forward and backward.

All three normalise x to xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps), then
apply a per-channel (per-element for layer norm) affine y = xhat * weight + bias.
They differ only in which elements share a mean and variance:

* batch norm: each channel, over the batch and all pixels;
* group norm: each (sample, group of channels);
* layer norm: each sample, over the trailing `normalized_shape` dims. That is group
  norm with one group whose "channels" are the normalised elements, so both run
  the same kernels (`_group_norm`, `_group_norm_backward`).

The backward of a normalisation whose statistics came from x itself is, per set
of M elements that share them (with gx = grad * weight):
    dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat)).

Group norm can apply SiLU in the same op (silu=True), as the DDPM U-Net's blocks do:
y = silu(h), h = xhat * weight + bias. Forward writes h and turns it into silu(h) in place
with NumPy's vectorised exp (`_silu_inplace`, cache-sized blocks on the conv workers); backward
recomputes h from x and the statistics and sends the gradient through silu'(h) = s + y * (1 - s),
with s = sigmoid(h) read off the forward's output y as y / h (a division, which vectorizes where
exp did not), before the normalisation's backward - one pass and no h-sized temporaries
instead of two ops.

Below convbase.SERIAL_ELEMENTS elements the parallel loops run on the calling thread alone
(`serial_below`): waiting for a second thread cost more than such work.

Statistics (mean, var, rstd) are float64 arrays; sums accumulate in float64.
Reductions use fastmath "reassoc" so Numba can vectorise them (NaNs still propagate).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from minigen.errors import ShapeError
from minigen.kernels.convbase import SERIAL_ELEMENTS, for_each_chunk, check_float, check_grad, serial_below

__all__ = ["batch_norm_forward", "batch_norm_backward", "group_norm_forward", "group_norm_backward",
           "layer_norm_forward", "layer_norm_backward"]

REDUCE = {"reassoc", "contract"}   # lets LLVM vectorise sums; keeps NaN/Inf semantics


# --- batch norm: statistics per channel -----------------------------------------------------
@njit(cache=True, parallel=True, fastmath=REDUCE)
def _channel_moments(x):
    """Mean and (biased) variance of each channel of x (N, C, L), two passes for accuracy."""
    n, c, l = x.shape
    mean, var = np.empty(c), np.empty(c)
    for k in prange(c):
        total = 0.0
        for i in range(n):
            for j in range(l):
                total += x[i, k, j]
        m = total / (n * l)
        total = 0.0
        for i in range(n):
            for j in range(l):
                d = x[i, k, j] - m
                total += d * d
        mean[k], var[k] = m, total / (n * l)
    return mean, var


@njit(cache=True, parallel=True, fastmath=REDUCE)
def _channel_grad_sums(g, x, mean):
    """Per channel of g, x (N, C, L): sum(g) and sum(g * (x - mean))."""
    n, c, l = x.shape
    sum_g, sum_gx = np.empty(c), np.empty(c)
    for k in prange(c):
        s, sx = 0.0, 0.0
        for i in range(n):
            for j in range(l):
                s += g[i, k, j]
                sx += g[i, k, j] * (x[i, k, j] - mean[k])
        sum_g[k], sum_gx[k] = s, sx
    return sum_g, sum_gx


@njit(cache=True, parallel=True)
def _channel_affine(x, scale, shift, out):
    """out (N, C, L) = x * scale[c] + shift[c]."""
    n, c, l = x.shape
    for task in prange(n * c):
        i, k = task // c, task % c
        out[i, k] = x[i, k] * scale[k] + shift[k]


@njit(cache=True, parallel=True)
def _channel_combine(g, x, a, b, shift, out):
    """out (N, C, L) = a[c] * g + b[c] * x + shift[c]."""
    n, c, l = x.shape
    for task in prange(n * c):
        i, k = task // c, task % c
        out[i, k] = a[k] * g[i, k] + b[k] * x[i, k] + shift[k]


def _as_channels(op, x, weight, bias):
    """x (N, C, *) as a contiguous (N, C, L) view; weight and bias default to 1 and 0."""
    x = np.ascontiguousarray(x)
    if x.ndim < 2:
        raise ShapeError(f"{op}: input must be (N, C, *) with at least 2 dims, got shape {x.shape}")
    c = x.shape[1]
    dtype = check_float(op, input=x, weight=weight, bias=bias)
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and np.shape(v) != (c,):
            raise ShapeError(f"{op}: {name} must have shape ({c},) for input shape {x.shape}, got {np.shape(v)}")
    weight = np.ones(c, dtype) if weight is None else weight
    bias = np.zeros(c, dtype) if bias is None else bias
    return x.reshape(x.shape[0], c, -1), weight, bias


def batch_norm_forward(x, weight=None, bias=None, eps=1e-5, mean=None, var=None):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics per channel.

    x: (N, C, *); weight, bias: (C,) or None (meaning 1 and 0).
    Training (mean and var None): uses the batch's mean and biased variance over N and *.
    Eval: pass the running mean and var (C,).
    Returns (y, mean, var): the statistics used (float64 (C,)), for backward and for
    updating running averages.
    """
    x3, weight, bias = _as_channels("batch_norm", x, weight, bias)
    if (mean is None) != (var is None):
        raise ShapeError("batch_norm: give both mean and var (eval mode) or neither (training)")
    if mean is None:
        if x3.shape[0] * x3.shape[2] < 2:
            raise ShapeError(f"batch_norm: training needs more than one value per channel, got input shape {x.shape}")
        with serial_below(x3.size, SERIAL_ELEMENTS):
            mean, var = _channel_moments(x3)
    else:
        mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
        for name, v in (("mean", mean), ("var", var)):
            if v.shape != (x3.shape[1],):
                raise ShapeError(f"batch_norm: running {name} must have shape ({x3.shape[1]},), got {v.shape}")
    scale = weight / np.sqrt(var + eps)
    out = np.empty_like(x3)
    with serial_below(x3.size, SERIAL_ELEMENTS):
        _channel_affine(x3, scale.astype(x3.dtype), (bias - mean * scale).astype(x3.dtype), out)
    return out.reshape(np.shape(x)), mean, var


def batch_norm_backward(grad_out, x, weight, mean, var, eps=1e-5, batch_stats=True):
    """Gradients of batch_norm_forward: returns (dx, dweight, dbias).

    mean, var: what the forward returned. batch_stats: True if they were the batch's own
    statistics (training), so the gradient also flows through them; False in eval mode.
    """
    x3, weight, _ = _as_channels("batch_norm_backward", x, weight, None)
    check_grad("batch_norm_backward", np.asarray(grad_out), np.shape(x), x3.dtype)
    g3 = np.ascontiguousarray(grad_out).reshape(x3.shape)
    rstd = 1.0 / np.sqrt(var + eps)
    with serial_below(x3.size, SERIAL_ELEMENTS):
        sum_g, sum_gx = _channel_grad_sums(g3, x3, mean)
    a = weight * rstd                                       # dx = a*g + b*x + shift
    if batch_stats:
        m = x3.shape[0] * x3.shape[2]
        b = -a * rstd ** 2 * sum_gx / m
        shift = -a * sum_g / m - b * mean
    else:
        b = shift = np.zeros_like(a)
    dx = np.empty_like(x3)
    with serial_below(x3.size, SERIAL_ELEMENTS):
        _channel_combine(g3, x3, a.astype(x3.dtype), b.astype(x3.dtype), shift.astype(x3.dtype), dx)
    dweight = (sum_gx * rstd).astype(x3.dtype)
    return dx.reshape(np.shape(x)), dweight, sum_g.astype(x3.dtype)


# --- group norm (and layer norm): statistics per (sample, group) -------------------------------
@njit(cache=True, inline="always")
def _silu_grad(h, y):
    """d silu / dh = s + y * (1 - s) at h, where y = silu(h) = h * s is the forward's output and
    s = sigmoid(h) is read off it as y / h: a division, which vectorizes, where exp did not
    (docs/measurements.md#smaller-choices).
    Near h = 0 (where y / h loses its digits) s = 1/2 + h/4, exact to h^3/48."""
    s = y / h if abs(h) > 1e-6 else 0.5 + 0.25 * h
    return s + y * (1.0 - s)


@njit(cache=True, parallel=True, fastmath=REDUCE)
def _group_norm(x, weight, bias, eps, out, mean, rstd):
    """x, out (N, G, Cg, L); weight, bias (G*Cg,); fills out and the (N, G) mean and rstd."""
    n, groups, cg, l = x.shape
    count = cg * l
    for task in prange(n * groups):
        i, gr = task // groups, task % groups
        block = x[i, gr]
        total = 0.0
        for c in range(cg):
            for j in range(l):
                total += block[c, j]
        m = total / count
        total = 0.0
        for c in range(cg):
            for j in range(l):
                d = block[c, j] - m
                total += d * d
        r = 1.0 / math.sqrt(total / count + eps)
        mean[i, gr], rstd[i, gr] = m, r
        for c in range(cg):
            a = weight[gr * cg + c] * r
            b = bias[gr * cg + c] - m * a
            for j in range(l):
                out[i, gr, c, j] = block[c, j] * a + b


@njit(cache=True, parallel=True, fastmath=REDUCE)
def _group_norm_backward(g, x, weight, bias, mean, rstd, y, dx, dweight_parts, dbias_parts, silu):
    """Fills dx (N, G, Cg, L) and, per sample, the per-channel sums of g * xhat and g (N, G*Cg)
    (the caller adds those over the samples: each task only writes its own sample's row).
    silu: the forward was y = silu(group norm) (N, G, Cg, L): the gradient first goes back
    through the SiLU, with h = xhat * weight + bias recomputed (the forward kept no copy of it);
    dx holds that gradient g_h between the two passes. Without silu, y is not read."""
    n, groups, cg, l = x.shape
    count = cg * l
    for task in prange(n * groups):
        i, gr = task // groups, task % groups
        m, r = mean[i, gr], rstd[i, gr]
        sum_gx, sum_gx_xhat = 0.0, 0.0
        for c in range(cg):
            ch = gr * cg + c
            s, sx = 0.0, 0.0
            for j in range(l):
                d = x[i, gr, c, j] - m
                gh = g[i, gr, c, j]
                if silu:
                    gh = gh * _silu_grad(d * r * weight[ch] + bias[ch], y[i, gr, c, j])
                    dx[i, gr, c, j] = gh
                s += gh
                sx += gh * d
            dbias_parts[i, ch], dweight_parts[i, ch] = s, sx * r
            sum_gx += weight[ch] * s
            sum_gx_xhat += weight[ch] * sx * r
        mean_gx, mean_gx_xhat = sum_gx / count, sum_gx_xhat / count
        for c in range(cg):
            a = weight[gr * cg + c] * r          # dx = r * (w*g - mean_gx - xhat * mean_gx_xhat)
            b = r * r * mean_gx_xhat
            for j in range(l):
                gh = dx[i, gr, c, j] if silu else g[i, gr, c, j]
                dx[i, gr, c, j] = a * gh - b * (x[i, gr, c, j] - m) - r * mean_gx


def _grouped(op, x, groups, weight, bias):
    """x (N, C, *) as a (N, G, C/G, L) view; weight and bias flattened, defaulting to 1 and 0."""
    x = np.ascontiguousarray(x)
    if x.ndim < 2:
        raise ShapeError(f"{op}: input must be (N, C, *) with at least 2 dims, got shape {x.shape}")
    c = x.shape[1]
    if groups < 1 or c % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the channels ({c}); input shape {x.shape}")
    dtype = check_float(op, input=x, weight=weight, bias=bias)
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and np.shape(v) != (c,):
            raise ShapeError(f"{op}: {name} must have shape ({c},) for input shape {x.shape}, got {np.shape(v)}")
    weight = np.ones(c, dtype) if weight is None else np.ascontiguousarray(weight)
    bias = np.zeros(c, dtype) if bias is None else np.ascontiguousarray(bias)
    return x.reshape(x.shape[0], groups, c // groups, -1), weight, bias


def group_norm_forward(x, groups, weight=None, bias=None, eps=1e-5, silu=False):
    """Normalise each sample's groups of C/groups channels (and all their pixels), then
    y = xhat * weight[c] + bias[c]; with silu=True, y = silu(that) (rounded to x's dtype first).

    x: (N, C, *); weight, bias: (C,) or None (1 and 0). Returns (y, mean, rstd), the
    statistics float64 (N, groups).
    """
    x4, weight, bias = _grouped("group_norm", x, groups, weight, bias)
    out = np.empty_like(x4)
    mean, rstd = np.empty(x4.shape[:2]), np.empty(x4.shape[:2])
    with serial_below(x4.size, SERIAL_ELEMENTS):          # small work: no thread hand-off
        _group_norm(x4, weight, bias, eps, out, mean, rstd)
    if silu:
        _silu_inplace(out)
    return out.reshape(np.shape(x)), mean, rstd


# Elements of a block of `_silu_inplace`: 512 KB of float32, which stays in cache through its passes
# (docs/measurements.md#silu-block).
SILU_BLOCK = 1 << 17


def _silu_inplace(h: np.ndarray) -> None:
    """h <- h * sigmoid(h) = h / (1 + exp(-h)), in h's dtype, as NumPy passes over blocks of
    SILU_BLOCK elements shared between `convbase.py`'s workers: NumPy's exp is vectorised (SIMD),
    Numba's scalar math.exp inside the norm loop was not (docs/measurements.md#smaller-choices). For h << 0, exp(-h) overflows to inf and
    h / inf = -0: the right limit, so the warning is silenced."""
    flat = h.reshape(-1)

    def task(i0, i1, scratch):
        block = flat[i0:i1]
        e = np.negative(block)
        with np.errstate(over="ignore"):
            np.exp(e, out=e)
        e += 1
        block /= e
    blocks = [(i, min(flat.size, i + SILU_BLOCK)) for i in range(0, flat.size, SILU_BLOCK)]
    for_each_chunk(blocks, task, flat.size, SERIAL_ELEMENTS)


def group_norm_backward(grad_out, x, groups, weight, mean, rstd, bias=None, silu=False, out=None):
    """Gradients of group_norm_forward: returns (dx, dweight, dbias). With silu=True (the
    forward's silu), the forward's bias (None meaning 0) and its output `out` are needed too."""
    x4, weight, bias = _grouped("group_norm_backward", x, groups, weight, bias)
    check_grad("group_norm_backward", np.asarray(grad_out), np.shape(x), x4.dtype)
    if np.shape(mean) != x4.shape[:2] or np.shape(rstd) != x4.shape[:2]:
        raise ShapeError(f"group_norm_backward: mean and rstd must have shape {x4.shape[:2]}, "
                         f"got {np.shape(mean)} and {np.shape(rstd)}")
    if silu and (out is None or np.shape(out) != np.shape(x)):
        raise ShapeError(f"group_norm_backward: with silu=True, out must be the forward's output, "
                         f"shape {np.shape(x)}; got {None if out is None else np.shape(out)}")
    y4 = np.ascontiguousarray(out, x4.dtype).reshape(x4.shape) if silu else x4
    g4 = np.ascontiguousarray(grad_out).reshape(x4.shape)
    dx = np.empty_like(x4)
    dweight_parts = np.empty((x4.shape[0], weight.size))
    dbias_parts = np.empty((x4.shape[0], weight.size))
    with serial_below(x4.size, SERIAL_ELEMENTS):
        _group_norm_backward(g4, x4, weight, bias, mean, rstd, y4, dx, dweight_parts, dbias_parts, bool(silu))
    return (dx.reshape(np.shape(x)), dweight_parts.sum(axis=0).astype(x4.dtype),
            dbias_parts.sum(axis=0).astype(x4.dtype))


def _as_layer(op, x, normalized_shape, weight, bias):
    """Layer norm as group norm: x (..., *normalized_shape) -> (M, 1, D, 1), weight/bias -> (D,)."""
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(normalized_shape)
    x = np.ascontiguousarray(x)
    k = len(normalized_shape)
    if k == 0 or x.shape[x.ndim - k:] != normalized_shape:
        raise ShapeError(f"{op}: the last dims of input shape {x.shape} must be normalized_shape {normalized_shape}")
    for name, v in (("weight", weight), ("bias", bias)):
        if v is not None and np.shape(v) != normalized_shape:
            raise ShapeError(f"{op}: {name} must have shape {normalized_shape}, got {np.shape(v)}")
    d = int(np.prod(normalized_shape))
    flat = lambda v: None if v is None else np.ascontiguousarray(v).reshape(d)   # noqa: E731
    return x.reshape(-1, d, 1), normalized_shape, flat(weight), flat(bias)


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise over the trailing dims `normalized_shape`, then y = xhat * weight + bias
    (weight, bias of shape normalized_shape or None). Returns (y, mean, rstd), the
    statistics float64 of shape x.shape[:-len(normalized_shape)]."""
    x3, shape, weight, bias = _as_layer("layer_norm", x, normalized_shape, weight, bias)
    y, mean, rstd = group_norm_forward(x3, 1, weight, bias, eps)
    lead = np.shape(x)[:np.ndim(x) - len(shape)]
    return y.reshape(np.shape(x)), mean.reshape(lead), rstd.reshape(lead)


def layer_norm_backward(grad_out, x, normalized_shape, weight, mean, rstd):
    """Gradients of layer_norm_forward: returns (dx, dweight, dbias), dweight/dbias shaped like normalized_shape."""
    x3, shape, weight, _ = _as_layer("layer_norm_backward", x, normalized_shape, weight, None)
    check_grad("layer_norm_backward", np.asarray(grad_out), np.shape(x), x3.dtype)
    g3 = np.ascontiguousarray(grad_out).reshape(x3.shape)
    dx, dweight, dbias = group_norm_backward(g3, x3, 1, weight, np.reshape(mean, (-1, 1)), np.reshape(rstd, (-1, 1)))
    return dx.reshape(np.shape(x)), dweight.reshape(shape), dbias.reshape(shape)
