"""Plain NumPy references for every kernel: slow, short, obviously correct.

Tests compare the fast kernels (conv.py's algorithms, pool.py, norm.py, elementwise.py) against these. Each is
written straight from the definition, one kernel tap at a time, with no cleverness;
backward functions are the forward's adjoint written out by hand (and checked
against finite differences in the tests).

Shapes as in the fast kernels: x (N, C, H, W), conv weight (C_out, C_in/groups, kH, kW),
transposed-conv weight (C_in, C_out/groups, kH, kW); stride/padding/dilation are (h, w) pairs.
"""
from __future__ import annotations

import numpy as np


def _taps(kernel, stride, dilation, out_hw):
    """For each kernel tap (i, j): the (rows, cols) slices of the *padded* image that the
    tap sees at every output position."""
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (out_hw[0] - 1) + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (out_hw[1] - 1) + 1, stride[1])
            yield i, j, rows, cols


def _out_hw(hw, kernel, stride, padding, dilation):
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(hw, kernel, stride, padding, dilation))


def _pad(x, padding, value=0.0):
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def _crop(xp, padding, hw):
    ph, pw = padding
    return xp[:, :, ph:ph + hw[0], pw:pw + hw[1]]


# --- convolution ----------------------------------------------------------------------
def conv2d(x, w, b, stride, padding, dilation, groups):
    """out[n, o, y, x] = b[o] + sum over the group's channels c and taps (i, j) of
    w[o, c, i, j] * x_padded[n, c, y*s + i*d, x*s + j*d]."""
    # BEGIN SOLUTION conv: per group and kernel tap (see _taps), add w[:, :, i, j] times that slice of padded x
    c_out, c_in_g = w.shape[:2]
    out_hw = _out_hw(x.shape[2:], w.shape[2:], stride, padding, dilation)
    xp = _pad(x, padding)
    out = np.zeros((x.shape[0], c_out) + out_hw, x.dtype)
    o_g = c_out // groups
    for g in range(groups):
        ci, co = slice(g * c_in_g, (g + 1) * c_in_g), slice(g * o_g, (g + 1) * o_g)
        for i, j, rows, cols in _taps(w.shape[2:], stride, dilation, out_hw):
            out[:, co] += np.einsum("nchw,oc->nohw", xp[:, ci, rows, cols], w[co, :, i, j])
    if b is not None:
        out += b.reshape(-1, 1, 1)
    return out
    # END SOLUTION


def conv2d_backward(grad_out, x, w, stride, padding, dilation, groups):
    """(dx, dw, db) of `conv2d`: every tap's contribution sent back where it came from."""
    # BEGIN SOLUTION conv: per tap, send grad_out back through w into the padded x slice, and into w[:, :, i, j]
    c_out, c_in_g = w.shape[:2]
    out_hw = grad_out.shape[2:]
    xp = _pad(x, padding)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    o_g = c_out // groups
    for g in range(groups):
        ci, co = slice(g * c_in_g, (g + 1) * c_in_g), slice(g * o_g, (g + 1) * o_g)
        for i, j, rows, cols in _taps(w.shape[2:], stride, dilation, out_hw):
            dxp[:, ci, rows, cols] += np.einsum("nohw,oc->nchw", grad_out[:, co], w[co, :, i, j])
            dw[co, :, i, j] = np.einsum("nohw,nchw->oc", grad_out[:, co], xp[:, ci, rows, cols])
    return _crop(dxp, padding, x.shape[2:]), dw, grad_out.sum(axis=(0, 2, 3))
    # END SOLUTION


def conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Every input pixel x[n, c, y, x] adds x * w[c, o, i, j] at output (y*s - p + i*d, x*s - p + j*d)."""
    c_in, c_out_g = w.shape[:2]
    c_in_g = c_in // groups
    out_hw = tuple((s - 1) * st - 2 * p + d * (k - 1) + op + 1 for s, k, st, p, d, op in
                   zip(x.shape[2:], w.shape[2:], stride, padding, dilation, output_padding))
    # a padded output canvas big enough for every tap (output_padding may add a row
    # or column that no tap reaches)
    canvas = tuple(o + 2 * p for o, p in zip(out_hw, padding))
    outp = np.zeros((x.shape[0], c_out_g * groups) + canvas, x.dtype)
    for g in range(groups):
        ci, co = slice(g * c_in_g, (g + 1) * c_in_g), slice(g * c_out_g, (g + 1) * c_out_g)
        for i, j, rows, cols in _taps(w.shape[2:], stride, dilation, x.shape[2:]):
            outp[:, co, rows, cols] += np.einsum("nchw,co->nohw", x[:, ci], w[ci, :, i, j])
    out = _crop(outp, padding, out_hw)
    if b is not None:
        out = out + b.reshape(-1, 1, 1)
    return out


def conv_transpose2d_backward(grad_out, x, w, stride, padding, output_padding, dilation, groups):
    """(dx, dw, db) of `conv_transpose2d`: each output pixel's gradient read back from where it went."""
    c_in, c_out_g = w.shape[:2]
    c_in_g = c_in // groups
    gp = _pad(grad_out, padding)
    dx = np.zeros_like(x)
    dw = np.zeros_like(w)
    for g in range(groups):
        ci, co = slice(g * c_in_g, (g + 1) * c_in_g), slice(g * c_out_g, (g + 1) * c_out_g)
        for i, j, rows, cols in _taps(w.shape[2:], stride, dilation, x.shape[2:]):
            seen = gp[:, co, rows, cols]
            dx[:, ci] += np.einsum("nohw,co->nchw", seen, w[ci, :, i, j])
            dw[ci, :, i, j] = np.einsum("nohw,nchw->co", seen, x[:, ci])
    return dx, dw, grad_out.sum(axis=(0, 2, 3))


# --- pooling and upsampling -------------------------------------------------------------
def max_pool2d(x, kernel, stride, padding):
    """(out, taken): out = max over each window (padding is -inf); taken (kH*kW, N, C, H_out, W_out)
    is a one-hot mask of the tap that won (the first one on ties), for the backward."""
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, (1, 1))
    xp = _pad(x, padding, -np.inf)
    windows = np.stack([xp[:, :, rows, cols] for _, _, rows, cols in _taps(kernel, stride, (1, 1), out_hw)])
    winner = windows.argmax(axis=0)
    taken = np.arange(len(windows)).reshape(-1, 1, 1, 1, 1) == winner
    return windows.max(axis=0), taken


def max_pool2d_backward(grad_out, taken, x_shape, kernel, stride, padding):
    dxp = np.zeros(x_shape[:2] + tuple(s + 2 * p for s, p in zip(x_shape[2:], padding)), grad_out.dtype)
    for t, (_, _, rows, cols) in enumerate(_taps(kernel, stride, (1, 1), grad_out.shape[2:])):
        dxp[:, :, rows, cols] += grad_out * taken[t]
    return _crop(dxp, padding, x_shape[2:])


def avg_pool2d(x, kernel, stride, padding):
    """Mean over each window, zero padding included in the count."""
    out_hw = _out_hw(x.shape[2:], kernel, stride, padding, (1, 1))
    xp = _pad(x, padding)
    return sum(xp[:, :, rows, cols] for _, _, rows, cols in _taps(kernel, stride, (1, 1), out_hw)) \
        / (kernel[0] * kernel[1])


def avg_pool2d_backward(grad_out, x_shape, kernel, stride, padding):
    dxp = np.zeros(x_shape[:2] + tuple(s + 2 * p for s, p in zip(x_shape[2:], padding)), grad_out.dtype)
    for _, _, rows, cols in _taps(kernel, stride, (1, 1), grad_out.shape[2:]):
        dxp[:, :, rows, cols] += grad_out / (kernel[0] * kernel[1])
    return _crop(dxp, padding, x_shape[2:])


def upsample_nearest(x, scale):
    """out[..., y, x] = x[..., y // sh, x // sw]."""
    rows = np.arange(x.shape[2] * scale[0]) // scale[0]
    cols = np.arange(x.shape[3] * scale[1]) // scale[1]
    return x[:, :, rows][:, :, :, cols]


def upsample_nearest_backward(grad_out, scale):
    n, c, hs, ws = grad_out.shape
    dx = np.zeros((n, c, hs // scale[0], ws // scale[1]), grad_out.dtype)
    rows = np.arange(hs) // scale[0]
    cols = np.arange(ws) // scale[1]
    np.add.at(dx, (slice(None), slice(None), rows[:, None], cols[None, :]), grad_out)
    return dx


# --- normalization ----------------------------------------------------------------------
def normalize(x, axes, eps):
    """(xhat, mean, var) with the statistics over `axes` (kept as size-1 dims)."""
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), mean, var


def normalize_backward(gxhat, xhat, var, axes, eps):
    """dx of xhat = normalize(x) given d(loss)/d(xhat), through the mean and the variance."""
    return (gxhat - gxhat.mean(axis=axes, keepdims=True)
            - xhat * (gxhat * xhat).mean(axis=axes, keepdims=True)) / np.sqrt(var + eps)


def batch_norm(x, weight, bias, eps):
    """Training-mode batch norm of x (N, C, *): statistics per channel."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat, mean, var = normalize(x, axes, eps)
    return xhat * weight.reshape(shape) + bias.reshape(shape), mean.ravel(), var.ravel()


def batch_norm_backward(grad_out, x, weight, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat, _, var = normalize(x, axes, eps)
    dx = normalize_backward(grad_out * weight.reshape(shape), xhat, var, axes, eps)
    return dx, (grad_out * xhat).sum(axis=axes), grad_out.sum(axis=axes)


def group_norm(x, groups, weight, bias, eps):
    n, c = x.shape[:2]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat, _, _ = normalize(x.reshape(n, groups, -1), 2, eps)
    return xhat.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def group_norm_backward(grad_out, x, groups, weight, eps):
    n, c = x.shape[:2]
    shape = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    xhat, _, var = normalize(x.reshape(n, groups, -1), 2, eps)
    gxhat = (grad_out * weight.reshape(shape)).reshape(n, groups, -1)
    dx = normalize_backward(gxhat, xhat, var, 2, eps).reshape(x.shape)
    return dx, (grad_out * xhat.reshape(x.shape)).sum(axis=axes), grad_out.sum(axis=axes)


def layer_norm(x, normalized_shape, weight, bias, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xhat, _, _ = normalize(x, axes, eps)
    return xhat * weight + bias


def layer_norm_backward(grad_out, x, normalized_shape, weight, eps):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    lead = tuple(range(x.ndim - len(normalized_shape)))
    xhat, _, var = normalize(x, axes, eps)
    dx = normalize_backward(grad_out * weight, xhat, var, axes, eps)
    return dx, (grad_out * xhat).sum(axis=lead), grad_out.sum(axis=lead)


def silu(h):
    """h * sigmoid(h): with group_norm, the reference of the fused group_norm(silu=True)."""
    return h / (1 + np.exp(-h))


def silu_backward(grad_out, h):
    s = 1 / (1 + np.exp(-h))
    return grad_out * s * (1 + h * (1 - s))


def leaky_relu(x, slope):
    s = x.dtype.type(slope)
    return np.where(x > 0, x, x * s)


def leaky_relu_backward(g, x, slope):
    return g * np.where(x > 0, x.dtype.type(1), x.dtype.type(slope))


def relu(x):
    return np.where(x <= 0, x.dtype.type(0), x)         # NaN is not <= 0: kept


def relu_backward(g, y):
    return g * (y > 0)
