"""Masked (causal) convolution that skips the taps its mask zeroes, forward and backward.

PixelCNN multiplies each kH x kW kernel by a fixed 0/1 mask so that an output pixel
sees only the pixels before it in raster order. With im2col (see `im2col.py`) a plain
conv would copy all kH*kW taps of every window into `cols` and multiply the masked
weights - zeros - with them. Here only the T taps the mask keeps are used:

    mask 7x7 type A: rows 0-2 and the 3 taps left of the centre: T = 24 of 49
    mask 3x3 type B: row 0 and the 2 taps up to the centre:        T = 5 of 9

    taps       (T, 2)                    the (i, j) where mask[i, j] != 0, row-major
    w_taps     (C_out, C_in, T)          w[:, :, i_t, j_t]: the weights actually used
    cols       (C_in*T, Nc*H_out*W_out)  im2col over those taps only (`convbase.unfold`)
    y          (C_out, Nc*H_out*W_out) = w_taps.reshape(C_out, C_in*T) @ cols

so the matrix product and the im2col buffer are T/(kH*kW) of the plain conv's (about
half for both masks). The masked conv is a conv geometry with `taps` (`convbase.ConvGeometry`),
planned like any other conv (`conv.py`): im2col over the taps takes every mask. Backward runs
the same chunk loop as a plain conv: dw_taps (C_out, C_in, T) = g @ cols.T, scattered into a
zero (C_out, C_in, kH, kW) array, so the masked-out weights get exactly zero gradient;
dx = col2im(w_taps.T @ g) over the same taps. No arithmetic is reordered: each output sums the same nonzero products as the
plain conv of w * mask, only without the zero terms (float32 results equal it to rounding).

A mask that keeps every tap is a plain conv (which may take its own fast paths, e.g. 1x1); one
that keeps none gives the bias alone. The 3x3 mask B convs with 32 or more channels run on
`direct.py`'s register-tiled loops over their 5 taps instead (`direct.preferred`), which measured
faster than this im2col.
"""
from __future__ import annotations

import numpy as np

from minigen.errors import ShapeError
from minigen.kernels import conv
from minigen.kernels.convbase import bias_grad, check_grad

__all__ = ["masked_conv2d_forward", "masked_conv2d_backward"]


def _geometry(op, x, w, mask, b, stride, padding, dilation):
    """Validate as a plain conv does (same errors), then keep only the mask's nonzero taps (None:
    all of them, a plain conv)."""
    geo = conv.conv2d_geometry(op, x, w, b, stride, padding, dilation, 1)
    mask = np.asarray(mask)
    if mask.shape != tuple(w.shape[2:]):
        raise ShapeError(f"{op}: mask has shape {mask.shape} but the weight's kernel is {tuple(w.shape[2:])}")
    if mask.all():
        return conv.with_zero_tap(geo, w)
    return geo._replace(taps=tuple(map(tuple, np.argwhere(mask != 0).tolist())))


def masked_conv2d_forward(x, w, mask, b=None, stride=1, padding=0, dilation=1):
    """conv2d_forward(x, w * mask, b, ...) without the zero taps.

    x: (N, C_in, H, W); w: (C_out, C_in, kH, kW); mask: (kH, kW), 0 = tap unused; b: (C_out,) or None.
    Returns (N, C_out, H_out, W_out).
    """
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    geo = _geometry("masked_conv2d", x, w, mask, b, stride, padding, dilation)
    if geo.taps == ():
        out = np.zeros((x.shape[0], w.shape[0]) + geo.out_hw, x.dtype)
        return out if b is None else out + np.asarray(b).reshape(-1, 1, 1)
    return conv.run_part(geo, "forward", x, w, b)


def masked_conv2d_backward(grad_out, x, w, mask, stride=1, padding=0, dilation=1, input_grad=True, weight_grad=True):
    """Gradients of masked_conv2d_forward: (dx, dw, db); dw is 0 wherever mask is 0.
    dx (dw) is None when input_grad (weight_grad) is False."""
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    grad_out = np.ascontiguousarray(grad_out)
    geo = _geometry("masked_conv2d_backward", x, w, mask, None, stride, padding, dilation)
    check_grad("masked_conv2d_backward", grad_out, (x.shape[0], w.shape[0]) + geo.out_hw, x.dtype)
    if geo.taps == ():
        return (np.zeros_like(x) if input_grad else None), (np.zeros_like(w) if weight_grad else None), \
            bias_grad(grad_out)
    return conv.gradients(geo, grad_out, x, w, input_grad, weight_grad) + (bias_grad(grad_out),)
