"""The general conv algorithm: im2col + one matrix product per batch chunk. It takes every conv.

* `unfold` (im2col, in convbase.py) copies every kH x kW window of a chunk of Nc images into a
  column of `cols`, shape (C_in*kH*kW, Nc*H_out*W_out). The conv is then ONE
  matrix product `w (C_out, C_in*kH*kW) @ cols`, done by NumPy's BLAS.
* Backward: `dw = g @ cols.T` and `dcols = w.T @ g`; `fold` (col2im) adds
  `dcols` back onto the image, summing where windows overlapped.
* A transposed conv is exactly "conv backward to the input" run forwards, and its backward is a
  conv forward: the dispatcher (`conv.py`) calls the same parts with the roles swapped.
* Groups split the rows of `cols` (channel-major, so each group's rows are
  contiguous) and the weight into G blocks: one matrix product per group.
* A masked conv (`geo.taps`, from masked.py) unfolds only the taps its mask keeps: the product
  and the buffer are T/(kH*kW) of the plain conv's, and the masked-out weights get exactly zero
  gradient.

The batch goes through in chunks so `cols` stays about 1 MB (all of an N=128,
64-channel 28x28 batch would be 230 MB) and is still in cache when the matrix
product reads it; each worker thread runs unfold -> matmul -> fold on its chunks alone
(convbase.for_each_chunk).
"""
from __future__ import annotations

import numpy as np

from minigen.kernels.convbase import (ConvGeometry, chunk_sum, conv_multiply_adds, fold, for_each_chunk,
                                      grouped_matmul, scratch_buffer, to_batch_major, to_channel_major, unfold)


def takes(geo: ConvGeometry, part: str) -> bool:
    """Every part of every conv."""
    return True


def preferred(geo: ConvGeometry, part: str) -> bool:
    """The fallback: the estimate plan picks it wherever no faster algorithm is preferred."""
    return True


def _weight_taps(w, geo: ConvGeometry):
    """The weight's columns for the taps geo uses: w itself, or w[:, :, taps] (C_out, C_in, T)."""
    if geo.taps is None:
        return w
    rows, cols = np.array(geo.taps, np.int64).reshape(-1, 2).T
    return np.ascontiguousarray(w[:, :, rows, cols])


def _scatter_taps(dw_taps, geo: ConvGeometry, shape):
    """The weight gradient of shape `shape` from the used taps' (exactly zero at the others)."""
    if geo.taps is None:
        return dw_taps
    rows, cols = np.array(geo.taps, np.int64).reshape(-1, 2).T
    dw = np.zeros(shape, dw_taps.dtype)
    dw[:, :, rows, cols] = dw_taps.reshape(shape[0], shape[1], -1)
    return dw


def forward(x, w, b, geo: ConvGeometry, weight_grad_of=None):
    """The conv of x (N, C_in, H, W) with w (C_out, C_in/G, kH, kW), + b: (N, C_out, H_out, W_out).
    With weight_grad_of (an output gradient of the geometry's output shape): (out, its weight
    gradient) from the same unfolded x, which a transposed conv's backward needs both of."""
    out = np.empty((x.shape[0], geo.c_out) + geo.out_hw, x.dtype)
    dw = _conv_chunks(x, _weight_taps(w, geo), geo, out, b, weight_grad_of)
    return out if weight_grad_of is None else (out, _scatter_taps(dw, geo, w.shape))


def input_grad(g, w, b, geo: ConvGeometry):
    """The gradient w.r.t. the conv's input (geo.image) for the output gradient g, + b unless None
    (a transposed conv's forward)."""
    dx = np.empty(geo.image, g.dtype)
    _conv_grad_chunks(g, None, _weight_taps(w, geo), geo, dx)
    if b is not None:
        dx += np.asarray(b).reshape(-1, 1, 1)
    return dx


def weight_grad(g, x, geo: ConvGeometry):
    """The gradient w.r.t. the weight for the output gradient g and input x."""
    dw = _conv_grad_chunks(g, x, None, geo, None)
    return _scatter_taps(dw, geo, geo.weight_shape).reshape(geo.weight_shape)


def gradients(g, x, w, geo: ConvGeometry):
    """(input gradient, weight gradient) in one pass over the batch: each chunk's output gradient
    is regrouped once for both products."""
    dx = np.empty(geo.image, g.dtype)
    dw = _conv_grad_chunks(g, x, _weight_taps(w, geo), geo, dx)
    return dx, _scatter_taps(dw, geo, w.shape).reshape(w.shape)


# --- the chunk loops -----------------------------------------------------------------------
def _conv_chunks(x, w, geo: ConvGeometry, out, bias, weight_grad_of=None):
    """out (N, C_out, H_out, W_out) = conv of x (N, C_in, H, W) with w (C_out, C_in/G, kH, kW), + bias.

    weight_grad_of: None, or an output gradient (N, C_out, H_out, W_out): then also return the
    gradient w.r.t. w of this conv for it, from the same im2col buffers (a transposed conv's
    backward needs both, and would otherwise unfold x twice)."""
    c_out, g = out.shape[1], geo.groups
    plane = geo.out_hw[0] * geo.out_hw[1]
    w3 = w.reshape(g, c_out // g, geo.rows // g)
    most = geo.chunks()[0][1] * plane                       # the widest chunk's columns
    window = geo.window

    def task(n0, n1, scratch):
        width = (n1 - n0) * plane
        cols = scratch_buffer(scratch, "cols", geo.rows * most, x.dtype)[:geo.rows * width]
        y = scratch_buffer(scratch, "y", c_out * most, x.dtype)[:c_out * width]
        unfold(x[n0:n1], cols.reshape(geo.rows, width), *window)
        grouped_matmul(w3, cols.reshape(g, geo.rows // g, width), y.reshape(g, c_out // g, width))
        to_batch_major(y.reshape(c_out, width), out[n0:n1].reshape(n1 - n0, c_out, plane), bias)
        if weight_grad_of is not None:                      # y is free again: it takes the gradient
            to_channel_major(weight_grad_of[n0:n1].reshape(n1 - n0, c_out, plane), y.reshape(c_out, width))
            scratch.setdefault("dw", {})[n0] = grouped_matmul(
                y.reshape(g, c_out // g, width), cols.reshape(g, geo.rows // g, width).transpose(0, 2, 1))
    scratches = for_each_chunk(geo.chunks(), task, conv_multiply_adds(geo))
    return None if weight_grad_of is None else chunk_sum(scratches, w.shape)


def _conv_grad_chunks(grad_out, x, w, geo: ConvGeometry, dx):
    """Backward of a conv (no bias) given grad_out (N, C_out, H_out, W_out).

    Fills dx (N, C_in, H, W) with the gradient w.r.t. the conv input unless dx is None (w, the
    weight's used taps, is read only for it); returns the gradient w.r.t. w, (C_out, C_in/G * T),
    if x (the conv input) is given, else None."""
    c_out, g = grad_out.shape[1], geo.groups
    plane = geo.out_hw[0] * geo.out_hw[1]
    most = geo.chunks()[0][1] * plane
    window = geo.window

    def task(n0, n1, scratch):
        width = (n1 - n0) * plane
        g_chunk = scratch_buffer(scratch, "g", c_out * most, grad_out.dtype)[:c_out * width]
        to_channel_major(grad_out[n0:n1].reshape(n1 - n0, c_out, plane), g_chunk.reshape(c_out, width))
        g_chunk = g_chunk.reshape(g, c_out // g, width)
        cols = scratch_buffer(scratch, "cols", geo.rows * most, grad_out.dtype)[:geo.rows * width].reshape(g, -1, width)
        if x is not None:
            unfold(x[n0:n1], cols.reshape(geo.rows, width), *window)
            # one partial sum per chunk, added up in chunk order (`chunk_sum`)
            scratch.setdefault("dw", {})[n0] = grouped_matmul(g_chunk, cols.transpose(0, 2, 1))
        if dx is not None:
            grouped_matmul(w.reshape(g, c_out // g, geo.rows // g).transpose(0, 2, 1), g_chunk, cols)       # cols now holds dcols
            fold(cols.reshape(geo.rows, width), dx[n0:n1], *window)
    scratches = for_each_chunk(geo.chunks(), task, conv_multiply_adds(geo))
    return None if x is None else chunk_sum(scratches, (c_out, geo.rows // g))
