"""Pooling and nearest-neighbour upsampling on NumPy arrays, forward and backward.

Every image plane (n, c) is independent, so the Numba kernels give one plane to
each parallel task; a backward task writes only its own plane (no races).
Window geometry and checks are shared with the convolutions (convbase.py).

x: (N, C, H, W) float32 or float64; kernel/stride/padding: int or (h, w);
stride defaults to the kernel size, like PyTorch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigen.errors import ShapeError
from minigen.kernels.convbase import SERIAL_ELEMENTS, check_4d, check_float, check_grad, check_window, pair, serial_below

__all__ = ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
           "upsample_nearest_forward", "upsample_nearest_backward"]


def _pool_geometry(op, shape, kernel, stride, padding):
    """Check a pooling window over images of `shape` (N, C, H, W); return
    (out_hw, kernel, stride, padding) as (h, w) pairs."""
    kernel = pair(kernel, op, "kernel_size")
    stride = kernel if stride is None else pair(stride, op, "stride")
    padding = pair(padding, op, "padding")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        # as in PyTorch: a window must never lie entirely in the padding
        raise ShapeError(f"{op}: padding {padding} must be at most half the kernel size {kernel}; "
                         f"input shape {tuple(shape)}")
    out_hw = check_window(op, shape, kernel, stride, padding, (1, 1))
    return out_hw, kernel, stride, padding


def _check_input(op, x):
    check_4d(op, "input", x)
    check_float(op, input=x)


# --- max pooling ------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _max_pool(x, out, argmax, kernel, stride, padding):
    """out[n, c, oh, ow] = max over the window; argmax = its flat index h*W + w in the plane
    (the first one if tied). Padding never wins: it counts as -inf."""
    n, c, h, w = x.shape
    h_out, w_out = out.shape[2:]
    for task in prange(n * c):
        plane = x[task // c, task % c]
        for oh in range(h_out):
            h0 = oh * stride[0] - padding[0]
            for ow in range(w_out):
                w0 = ow * stride[1] - padding[1]
                best, where = -np.inf, -1
                for ih in range(max(h0, 0), min(h0 + kernel[0], h)):
                    for iw in range(max(w0, 0), min(w0 + kernel[1], w)):
                        v = plane[ih, iw]
                        if where < 0 or v > best or np.isnan(v):   # NaN wins, like PyTorch
                            best, where = v, ih * w + iw
                out[task // c, task % c, oh, ow] = best
                argmax[task // c, task % c, oh, ow] = where


@njit(cache=True, parallel=True)
def _max_pool_backward(grad_out, argmax, dx):
    """dx (N, C, H, W) = each output gradient added at its window's argmax."""
    n, c, h, w = dx.shape
    for task in prange(n * c):
        plane = dx[task // c, task % c].reshape(h * w)
        plane[:] = 0
        g = grad_out[task // c, task % c].reshape(-1)
        idx = argmax[task // c, task % c].reshape(-1)
        for k in range(g.size):
            plane[idx[k]] += g[k]


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max over each window. Returns (out, argmax): out (N, C, H_out, W_out); argmax, the same
    shape of int32, is the flat index h*W + w of each window's max in its plane (for backward)."""
    x = np.ascontiguousarray(x)
    _check_input("max_pool2d", x)
    out_hw, kernel, stride, padding = _pool_geometry("max_pool2d", x.shape, kernel_size, stride, padding)
    out = np.empty(x.shape[:2] + out_hw, x.dtype)
    argmax = np.empty(out.shape, np.int32)
    with serial_below(x.size, SERIAL_ELEMENTS):
        _max_pool(x, out, argmax, kernel, stride, padding)
    return out, argmax


def max_pool2d_backward(grad_out, argmax, input_shape):
    """Gradient of max_pool2d_forward w.r.t. its input of shape `input_shape`: routed to the argmax."""
    grad_out = np.ascontiguousarray(grad_out)
    if grad_out.shape != argmax.shape or len(input_shape) != 4 or grad_out.shape[:2] != tuple(input_shape[:2]):
        raise ShapeError(f"max_pool2d_backward: grad_out shape {grad_out.shape}, argmax shape {argmax.shape} "
                         f"and input shape {tuple(input_shape)} do not belong together")
    check_float("max_pool2d_backward", grad_out=grad_out)
    dx = np.empty(input_shape, grad_out.dtype)
    with serial_below(dx.size, SERIAL_ELEMENTS):
        _max_pool_backward(grad_out, argmax, dx)
    return dx


# --- average pooling ----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _avg_pool(x, out, kernel, stride, padding):
    """out = mean over each window, padding counted as zeros (PyTorch's count_include_pad=True)."""
    n, c, h, w = x.shape
    h_out, w_out = out.shape[2:]
    scale = 1.0 / (kernel[0] * kernel[1])
    for task in prange(n * c):
        plane = x[task // c, task % c]
        for oh in range(h_out):
            h0 = oh * stride[0] - padding[0]
            for ow in range(w_out):
                w0 = ow * stride[1] - padding[1]
                total = 0.0
                for ih in range(max(h0, 0), min(h0 + kernel[0], h)):
                    for iw in range(max(w0, 0), min(w0 + kernel[1], w)):
                        total += plane[ih, iw]
                out[task // c, task % c, oh, ow] = total * scale


@njit(cache=True, parallel=True)
def _avg_pool_backward(grad_out, dx, kernel, stride, padding):
    """dx = each output gradient / (kH*kW) spread over its window."""
    n, c, h, w = dx.shape
    h_out, w_out = grad_out.shape[2:]
    scale = 1.0 / (kernel[0] * kernel[1])
    for task in prange(n * c):
        plane = dx[task // c, task % c]
        plane[:] = 0
        for oh in range(h_out):
            h0 = oh * stride[0] - padding[0]
            for ow in range(w_out):
                w0 = ow * stride[1] - padding[1]
                share = grad_out[task // c, task % c, oh, ow] * scale
                for ih in range(max(h0, 0), min(h0 + kernel[0], h)):
                    for iw in range(max(w0, 0), min(w0 + kernel[1], w)):
                        plane[ih, iw] += share


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding counts, like PyTorch's default). Returns (N, C, H_out, W_out)."""
    x = np.ascontiguousarray(x)
    _check_input("avg_pool2d", x)
    out_hw, kernel, stride, padding = _pool_geometry("avg_pool2d", x.shape, kernel_size, stride, padding)
    out = np.empty(x.shape[:2] + out_hw, x.dtype)
    with serial_below(x.size, SERIAL_ELEMENTS):
        _avg_pool(x, out, kernel, stride, padding)
    return out


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of avg_pool2d_forward w.r.t. its input of shape `input_shape`."""
    grad_out = np.ascontiguousarray(grad_out)
    _check_input("avg_pool2d_backward", grad_out)
    if len(input_shape) != 4:
        raise ShapeError(f"avg_pool2d_backward: input shape must be 4-D (N, C, H, W), got {tuple(input_shape)}")
    out_hw, kernel, stride, padding = _pool_geometry("avg_pool2d_backward", input_shape, kernel_size, stride, padding)
    check_grad("avg_pool2d_backward", grad_out, tuple(input_shape[:2]) + out_hw, grad_out.dtype)
    dx = np.empty(input_shape, grad_out.dtype)
    with serial_below(dx.size, SERIAL_ELEMENTS):
        _avg_pool_backward(grad_out, dx, kernel, stride, padding)
    return dx


# --- nearest upsampling ---------------------------------------------------------------------
def _scale(op, x, scale):
    _check_input(op, x)
    sh, sw = pair(scale, op, "scale_factor")
    if sh < 1 or sw < 1:
        raise ShapeError(f"{op}: scale_factor must be a positive integer, got {scale!r}")
    return sh, sw


def upsample_nearest_forward(x, scale_factor):
    """Repeat each pixel into an sh x sw block: (N, C, H, W) -> (N, C, H*sh, W*sw).
    Plain NumPy: one broadcast copy is already as fast as memory allows."""
    sh, sw = _scale("upsample_nearest", x, scale_factor)
    n, c, h, w = x.shape
    blocks = np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw))
    return blocks.reshape(n, c, h * sh, w * sw)


@njit(cache=True, parallel=True)
def _block_sums(g, sh, sw, out):
    """out[n, c, i, j] = the sum of g's sh x sw block at (i*sh, j*sw); one plane per task, rows of g
    read in order (each added into its output row, which vectorizes along the row)."""
    n, c, h, w = out.shape
    for plane in prange(n * c):
        i0, k = plane // c, plane % c
        for i in range(h):
            row = out[i0, k, i]
            row[:] = 0
            for di in range(sh):
                src = g[i0, k, i * sh + di]
                for j in range(w):
                    for dj in range(sw):
                        row[j] += src[j * sw + dj]


def upsample_nearest_backward(grad_out, scale_factor):
    """Each input pixel's gradient is the sum over its block: (N, C, H*sh, W*sw) -> (N, C, H, W).
    A Numba loop: NumPy's sum over the two block axes of a reshape strides through memory (10x slower)."""
    sh, sw = _scale("upsample_nearest_backward", grad_out, scale_factor)
    n, c, hs, ws = grad_out.shape
    if hs % sh or ws % sw:
        raise ShapeError(f"upsample_nearest_backward: grad_out shape {grad_out.shape} is not a multiple of "
                         f"the scale factor {(sh, sw)}")
    out = np.empty((n, c, hs // sh, ws // sw), grad_out.dtype)
    with serial_below(grad_out.size, SERIAL_ELEMENTS):
        _block_sums(np.ascontiguousarray(grad_out), sh, sw, out)
    return out
