"""Stride-1 3x3 convs with few channels (a U-Net's 32->1 output layer, a coupling net's 64->2),
vectorized along the image plane: no im2col buffer, no matrix library.

Why another direct kernel?
--------------------------
`direct.py` vectorizes over output channels: with 1, 2 or 8 of them, most of each SIMD register
(16 float32 lanes here) would be idle. im2col + BLAS (`im2col.py`) is worse still there: it copies
every 3x3 window (9x the input) to do a product with 1 or 2 rows. Here the vector dimension is
the image itself, which is long whatever the channel counts.

The flat padded plane
---------------------
Pad each channel of an image by one pixel on every side and lay it out flat, row after row,
rows of width Wp = W + 2:

    xp[c, r * Wp + s] = x[c, r - 1, s - 1]        (0 on the border; 2 zeros past the end)

Output pixel (h, w) of a 3x3 conv reads padded rows h..h+2 and columns w..w+2, so in the flat
layout tap (kh, kw) is the same input at the fixed offset kh * Wp + kw:

    out_flat[o, p] = sum over c and the 9 taps t of w[o, c, t] * xp[c, p + offset[t]],
    out[o, h, w] = out_flat[o, h * Wp + w]        p in [0, H * Wp)

One loop over p, of H * Wp elements (840 at 28x28), sums all 9 taps of one input channel into
one output row: 9 multiply-adds per 10 loads and 1 store, vectorized along p. The 2 extra columns
of each output row (w = W, W + 1) are computed and thrown away: 2 / Wp of the work (7% at 28x28,
13% at 14x14).

Gradients
---------
* Input gradient: the same conv of the padded output gradient with the kernel flipped and the
  channels swapped, dx = conv(g, w'), w'[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw] (as in direct.py).
* Weight gradient: dw[o, c, t] = sum over images and p of g_flat[o, p] * xp[c, p + offset[t]],
  with g laid out like out_flat and ZEROS in the thrown-away columns (so they add nothing): one
  pass over p makes the 9 dot products of one (o, c) pair, 9 multiply-adds per 10 loads.

Arithmetic is reassociated (`fastmath`: the dot products run in SIMD lanes), so float32 results
differ from the float64 reference by rounding only (tests/kernels/test_planar.py). Chunks of
IMAGES_PER_CHUNK images go to convbase.py's worker threads (not Numba's parallel loops, whose OpenMP
runtime cannot be used again in a forked child); the weight gradient is one partial sum per
chunk, added in chunk order, so results do not depend on the thread count.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3), like PyTorch.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minigen.kernels import convbase

# Where the estimate plan uses this kernel (per part): for the parts whose vectorized channels are too few
# for direct.py (output channels for the forward, input channels for the input gradient), for the weight
# gradient also with VECTOR_CHANNELS output channels, and for first layers of up to FIRST_LAYER_CHANNELS
# inputs; with more channels direct.py and Winograd do more multiply-adds per load
# (docs/measurements.md#planar-where-used).
VECTOR_CHANNELS = 32          # direct.py's MIN_VECTOR_CHANNELS: the two split the channel counts between them
FIRST_LAYER_CHANNELS = 16

# images per chunk of work for one worker thread (and per partial sum of the weight gradient)
IMAGES_PER_CHUNK = 8


def takes(geo, part: str) -> bool:
    """Any part of a stride-1, padding-1, ungrouped, undilated 3x3 conv over all taps."""
    return (geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.padding == (1, 1) and geo.dilation == (1, 1)
            and geo.groups == 1 and geo.taps is None)


def preferred(geo, part: str) -> bool:
    c_in, c_out = geo.image[1], geo.c_out
    if part == "weight_grad":
        return c_out <= VECTOR_CHANNELS or c_in <= FIRST_LAYER_CHANNELS
    return (c_in if part == "input_grad" else c_out) < VECTOR_CHANNELS


# --- the kernels -------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pad_flat(x, xp):
    """xp (C, (H+2)*(W+2) + 2), zeros on the border and at the end (`_zeroed_scratch`), gets
    x (C, H, W) inside: x zero-padded by one pixel, rows laid out flat."""
    c_in, h, w = x.shape
    wp = w + 2
    for c in range(c_in):
        for r in range(h):
            xp[c, (r + 1) * wp + 1:(r + 1) * wp + 1 + w] = x[c, r]


@njit(cache=True, nogil=True, fastmath=True)
def _plane_conv(xp, wk, out, wp):
    """out (C_out, L) = the 3x3 conv of the flat padded planes xp (C_in, (H+2)*wp + 2) with
    wk (C_out, C_in, 9), row width wp, L = H * wp (2 thrown-away columns per row)."""
    c_out, length = out.shape
    c_in = xp.shape[0]
    for o in range(c_out):
        d = out[o]
        d[:] = 0
        for c in range(c_in):
            k = wk[o, c]
            w0, w1, w2, w3, w4, w5, w6, w7, w8 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8]
            s0, s1, s2 = xp[c, 0:], xp[c, wp:], xp[c, 2 * wp:]     # kernel rows 0, 1, 2
            for p in range(length):
                d[p] += (w0 * s0[p] + w1 * s0[p + 1] + w2 * s0[p + 2]
                         + w3 * s1[p] + w4 * s1[p + 1] + w5 * s1[p + 2]
                         + w6 * s2[p] + w7 * s2[p + 1] + w8 * s2[p + 2])


@njit(cache=True, nogil=True, fastmath=True)
def _plane_weight_grad(xp, gf, dwk, wp):
    """dwk (C_out, C_in, 9) += the weight gradient from one image: xp (C_in, (H+2)*wp + 2) the flat
    padded input, gf (C_out, H*wp) the output gradient laid out like `_plane_conv`'s output,
    zeros in the thrown-away columns."""
    c_out, length = gf.shape
    c_in = xp.shape[0]
    zero = np.zeros(1, gf.dtype)[0]      # the sums in the arrays' dtype (a literal 0 would make them float64)
    for o in range(c_out):
        g = gf[o]
        for c in range(c_in):
            s0, s1, s2 = xp[c, 0:], xp[c, wp:], xp[c, 2 * wp:]
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = a8 = zero
            for p in range(length):
                e = g[p]
                a0 += e * s0[p]
                a1 += e * s0[p + 1]
                a2 += e * s0[p + 2]
                a3 += e * s1[p]
                a4 += e * s1[p + 1]
                a5 += e * s1[p + 2]
                a6 += e * s2[p]
                a7 += e * s2[p + 1]
                a8 += e * s2[p + 2]
            k = dwk[o, c]
            k[0] += a0
            k[1] += a1
            k[2] += a2
            k[3] += a3
            k[4] += a4
            k[5] += a5
            k[6] += a6
            k[7] += a7
            k[8] += a8


@njit(cache=True, nogil=True)
def _forward_images(x, wk, bias, out, xp, flat):
    """out (N, C_out, H, W) = the conv of x (N, C_in, H, W) with wk (C_out, C_in, 9), + bias
    (C_out,) unless None; xp, flat: scratch for one image's padded input and flat output."""
    n, c_in, h, w = x.shape
    wp = w + 2
    zero = np.zeros(1, out.dtype)[0]
    for i in range(n):
        _pad_flat(x[i], xp)
        _plane_conv(xp, wk, flat, wp)
        for o in range(flat.shape[0]):
            b = zero if bias is None else bias[o]
            for r in range(h):
                out[i, o, r] = flat[o, r * wp:r * wp + w] + b


@njit(cache=True, nogil=True)
def _weight_grad_images(x, g, dwk, xp, gf):
    """dwk (C_out, C_in, 9) += the weight gradient of the conv of x (N, C_in, H, W) for the output
    gradient g (N, C_out, H, W); xp, gf: scratch (gf's 2 thrown-away columns a row must be 0)."""
    n, c_in, h, w = x.shape
    wp = w + 2
    for i in range(n):
        _pad_flat(x[i], xp)
        for o in range(g.shape[1]):
            for r in range(h):
                gf[o, r * wp:r * wp + w] = g[i, o, r]
        _plane_weight_grad(xp, gf, dwk, wp)


# --- the public functions ----------------------------------------------------------------------
def _chunks(n):
    return [(n0, min(n, n0 + IMAGES_PER_CHUNK)) for n0 in range(0, n, IMAGES_PER_CHUNK)]


def _zeroed_scratch(scratch, name, shape, dtype):
    """The worker's scratch array `name`, zeros when first made: parts the kernels never write
    (the padded planes' borders, the output gradient's thrown-away columns) stay 0 for every image."""
    if name not in scratch:
        scratch[name] = np.zeros(shape, dtype)
    return scratch[name]


def _padded_planes(scratch, x):
    """The worker's `_pad_flat` buffer for the images of x (N, C, H, W): (C, (H+2)*(W+2) + 2)."""
    n, c, h, w = x.shape
    return _zeroed_scratch(scratch, "xp", (c, (h + 2) * (w + 2) + 2), x.dtype)


def _conv(x, wk, bias):
    """The conv of x (N, C_in, H, W) with wk (C_out, C_in, 9), + bias: chunks of images on the
    conv workers (convbase.py), like im2col, so a forked child can run it too."""
    n, c_in, h, w = x.shape
    c_out = wk.shape[0]
    out = np.empty((n, c_out, h, w), x.dtype)

    def task(n0, n1, scratch):
        flat = convbase.scratch_buffer(scratch, "flat", c_out * h * (w + 2), x.dtype)
        _forward_images(x[n0:n1], wk, bias, out[n0:n1], _padded_planes(scratch, x), flat.reshape(c_out, -1))
    convbase.for_each_chunk(_chunks(n), task, n * c_in * c_out * 9 * h * w)
    return out


def forward(x, w, b, geo):
    """x (N, C_in, H, W) conv w (C_out, C_in, 3, 3), stride 1, padding 1, + b (C_out,) or None."""
    return _conv(x, np.ascontiguousarray(w).reshape(w.shape[0], w.shape[1], 9), b)


def input_grad(g, w, b, geo):
    """The input gradient for the output gradient g (N, C_out, H, W), + b unless None: the flipped
    kernel with the channels swapped, w'[c, o, kh, kw] = w[o, c, 2-kh, 2-kw]."""
    return _conv(g, np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(
        w.shape[1], w.shape[0], 9), b)


def weight_grad(g, x, geo):
    """The weight gradient (C_out, C_in, 3, 3): one partial sum per chunk, added in chunk order
    (convbase.chunk_sum)."""
    n, c_in, h, width = x.shape
    c_out = g.shape[1]

    def task(n0, n1, scratch):
        gf = _zeroed_scratch(scratch, "gf", (c_out, h * (width + 2)), x.dtype)
        dwk = scratch.setdefault("dw", {})[n0] = np.zeros((c_out, c_in, 9), x.dtype)
        _weight_grad_images(x[n0:n1], g[n0:n1], dwk, _padded_planes(scratch, x), gf)
    return convbase.chunk_sum(convbase.for_each_chunk(_chunks(n), task, x.size * c_out * 9), (c_out, c_in, 3, 3))
