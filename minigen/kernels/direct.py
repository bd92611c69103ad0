"""Direct 3x3 convolution (stride 1, padding 1), written so the compiler keeps the arithmetic in
registers: no im2col buffer, no matrix library, forward and both gradients.

Why not just im2col + BLAS?
---------------------------
im2col (`im2col.py`) copies every 3x3 window into a column (9x the input) and hands one big matrix
product to BLAS. On the small images of the U-Net's lower levels (14x14, 7x7) that copy and
the regrouping of the product's output cost as much as the product itself, and the products
are too narrow for BLAS to reach its peak. A direct loop reads each input value from L1 cache
and does all its multiply-adds there.

The catch is that a naive direct loop is slow (about 7-12 GFLOP/s here, measured): every
multiply-add loads and stores its accumulator, and the CPU can store only about one vector a
cycle while it can do two vector multiply-adds. Three choices fix that:

1. Vectorize over output channels. The weight is re-laid out as wt (C_in, 9, C_out), so for
   one input channel c and one tap (kh, kw), wt[c, 3*kh + kw] is a contiguous vector over the
   output channels; one input pixel (a scalar) times that vector adds into the output pixel's
   vector of C_out accumulators. The compiler turns the loop over output channels `j` into
   SIMD instructions.
2. Do many multiply-adds per accumulator load/store, on a register tile of 7 output pixels.
   The 7 neighbouring pixels s0..s0+6 of an output row, and one kernel row kh of one input
   channel, need the 9 input values a0..a8 of input row oh+kh; in one pass over j:

       q0[j] += a0*u[j] + a1*v[j] + a2*z[j]        u, v, z = wt[c, 3*kh], wt[c, 3*kh + 1], wt[c, 3*kh + 2]
       q1[j] += a1*u[j] + a2*v[j] + a3*z[j]
       ...
       q6[j] += a6*u[j] + a7*v[j] + a8*z[j]

   21 multiply-adds per 3 weight loads and 7 accumulator loads + stores. The 7 accumulator rows,
   acc (7, C_out), stay in L1 cache while c and kh run through all C_in*3 kernel rows.
3. Keep exactly ONE loop over j inside the loop over kernel rows. The compiler unrolls short
   loops with a known trip count first and vectorizes afterwards; a loop over pairs of pixels
   around the j loop (three j loops once unrolled) stopped it vectorizing altogether. Measured on
   one core (64->64 channels at 7x7 and 14x14): tiles of 2, 4 or 7 pixels each in a single j
   loop 45-70, 45-70 and 85-100 GFLOP/s; 7 pixels as a loop over pairs, 60; 8 pixels as two
   loops of 4, 10. 7 is also what the families' widths (28, 14, 7) are made of.

The conv plan (`conv.py`) may send it any part of such a conv (`takes`); the estimate plan sends the
parts where it measured fastest (`preferred`; docs/measurements.md#direct-loops).

Masked convs of 5 taps
----------------------
PixelCNN's 3x3 mask B keeps kernel row 0 and the first two taps of row 1. `_forward_image_5taps`
multiplies only those: one pass over j sums a whole kernel row (3 taps, input row oh + full) and
two taps of another (input row oh + part, from column col), 35 multiply-adds per 5 weight loads
and 7 accumulator loads + stores, and a masked-out pixel adds an exact zero: causality stays
exact. The input gradient's kernel is the flipped one, whose mask is again of that kind.

Gradients
---------
* Input gradient: the adjoint of a stride-1, pad-1 3x3 conv is the same kind of conv with the
  kernel flipped in both spatial axes and C_in / C_out swapped: dx = forward(g, w'), with
  w'[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw].
* Weight gradient: dw[o, c, kh, kw] = sum over images and pixels p of g[n, o, p] *
  x[n, c, p + (kh, kw) - 1]. It is vectorized over output channels too: with the output gradient
  laid out channels-last, gl (H, W, C_out), the 3 vectors dwt[c, kh, 0..2] (C_out,) of one
  kernel row take, in one pass over j, the products of a segment's 7 output-gradient vectors
  g[p] with the 9 inputs of row oh+kh: 21 multiply-adds per 7 gradient loads and 3 accumulator
  loads + stores. (Vectorizing over pixels instead, 9 dot products of g's row with shifted rows
  of x, measured 5-12 GFLOP/s.)

Arithmetic order differs from im2col (sums are reassociated: `fastmath`), so float32 results
differ by rounding only: the bound is tested in tests/kernels/test_direct.py against the float64
reference. The images are shared between Numba's threads (`prange`); the weight gradient is
summed per chunk of IMAGES_PER_CHUNK images and the chunks' partial sums are added in chunk
order, so results do not depend on the number of threads.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3), like PyTorch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigen.kernels import convbase

# images per chunk of the weight gradient: each chunk is one partial sum (C_in*9*C_out, up to 0.5 MB for
# stride2.py's 64->128 conv); fewer partial sums to zero and add, still 8 chunks for the 2 threads
# (docs/measurements.md#direct-images-per-chunk).
IMAGES_PER_CHUNK = 16

# Where the estimate plan uses this kernel (the conv plan asks per part: forward, input gradient, weight
# gradient): when the channels it vectorizes over are at least MIN_VECTOR_CHANNELS (fewer leave SIMD lanes
# idle) and an image's work is at most MAX_WORK = C_in*C_out*H*W (bigger convs are faster with Winograd's
# 2.25x fewer multiplies) (docs/measurements.md#direct-where-used).
MIN_VECTOR_CHANNELS = 32
MAX_WORK = 1 << 20


def _stride1_3x3(geo) -> bool:
    """`geo` (a convbase.ConvGeometry) is a stride-1, padding-1, ungrouped, undilated 3x3 conv."""
    return (geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.padding == (1, 1)
            and geo.dilation == (1, 1) and geo.groups == 1)


def _taps_mask(geo):
    """The 3x3 0/1 mask of the taps a masked conv's geometry uses."""
    mask = np.zeros((3, 3))
    for i, j in geo.taps:
        mask[i, j] = 1
    return mask


def takes(geo, part: str) -> bool:
    """Any part of a stride-1, padding-1 3x3 conv over all taps, or over the 5 taps of PixelCNN's
    mask B (`five_taps`)."""
    return _stride1_3x3(geo) and (geo.taps is None or five_taps(_taps_mask(geo)) is not None)


def preferred(geo, part: str) -> bool:
    """Where the hand-measured thresholds put it: the channels vectorized over (output channels;
    input channels for the input gradient) at least MIN_VECTOR_CHANNELS, and at most MAX_WORK per
    image. A masked conv of 5 taps: both channel counts at least MIN_VECTOR_CHANNELS, where it beat
    im2col over the 5 taps (docs/measurements.md#smaller-choices)."""
    n, c_in, h, w = geo.image
    if geo.taps is not None:
        return min(c_in, geo.c_out) >= MIN_VECTOR_CHANNELS
    vectorized = c_in if part == "input_grad" else geo.c_out
    return vectorized >= MIN_VECTOR_CHANNELS and c_in * geo.c_out * h * w <= MAX_WORK


# --- the kernels -------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pad_into(x, padded):
    """padded (C, H+2, W+2), zeros at the border, gets x (C, H, W) inside it."""
    c_in, h, w = x.shape
    for c in range(c_in):
        for r in range(h):
            padded[c, r + 1, 1:w + 1] = x[c, r]


# Output pixels of a row go in segments of SEGMENT = 7 (the register tile above): the kernels
# below are written out for exactly 7 (q0..q6, g0..g6); other widths are rounded up to a
# multiple of 7 (`_rounded_width`), their extra columns reading zeros.
SEGMENT = 7

# The `rows` argument of the drivers below that means all 9 taps (otherwise: the 5 of `five_taps`).
ALL_TAPS = (-1, -1, -1)


@njit(cache=True, nogil=True, fastmath=True)
def _forward_image(xp, wt, bias, out, acc):
    """out (C_out, H, W) = the 3x3 conv of the padded image xp (C_in, H+2, W+2) with wt
    (C_in, 9, C_out) (taps row by row), plus bias (C_out,) unless None. W must be a multiple of
    SEGMENT (`_rounded_width`); acc: scratch (SEGMENT, C_out)."""
    c_in = xp.shape[0]
    c_out, h, w = out.shape
    zero = np.zeros(1, out.dtype)[0]
    q0, q1, q2, q3, q4, q5, q6 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    for oh in range(h):
        for s0 in range(0, w, SEGMENT):             # output pixels s0 .. s0+6 of row oh
            acc[:] = 0
            for c in range(c_in):
                for kh in range(3):                 # kernel row kh reads input row oh + kh
                    r = xp[c, oh + kh, s0:]
                    a0, a1, a2, a3, a4, a5, a6, a7, a8 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
                    left, mid, right = wt[c, 3 * kh], wt[c, 3 * kh + 1], wt[c, 3 * kh + 2]   # vectors over C_out
                    for j in range(c_out):
                        u, v, z = left[j], mid[j], right[j]
                        q0[j] += a0 * u + a1 * v + a2 * z
                        q1[j] += a1 * u + a2 * v + a3 * z
                        q2[j] += a2 * u + a3 * v + a4 * z
                        q3[j] += a3 * u + a4 * v + a5 * z
                        q4[j] += a4 * u + a5 * v + a6 * z
                        q5[j] += a5 * u + a6 * v + a7 * z
                        q6[j] += a6 * u + a7 * v + a8 * z
            for j in range(c_out):                  # acc (SEGMENT, C_out) -> out[:, oh, s0:]
                b = zero if bias is None else bias[j]
                for i in range(SEGMENT):
                    out[j, oh, s0 + i] = acc[i, j] + b


@njit(cache=True, nogil=True, fastmath=True)
def _forward_image_5taps(xp, wt, bias, out, acc, rows):
    """`_forward_image` for a masked kernel of 5 taps (PixelCNN's mask B, or its flip): all 3 of
    kernel row `full` and the 2 neighbours `col`, `col` + 1 of kernel row `part`, rows = (full,
    part, col); wt (C_in, 5, C_out) holds their vectors in that order. Only kept taps are
    multiplied, so masked-out pixels contribute exact zeros. One pass over j: 35 multiply-adds
    per 5 weight loads and 7 accumulator loads + stores."""
    full, part, col = rows
    c_in = xp.shape[0]
    c_out, h, w = out.shape
    zero = np.zeros(1, out.dtype)[0]
    q0, q1, q2, q3, q4, q5, q6 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    for oh in range(h):
        for s0 in range(0, w, SEGMENT):
            acc[:] = 0
            for c in range(c_in):
                r = xp[c, oh + full, s0:]
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
                r = xp[c, oh + part, s0 + col:]
                b0, b1, b2, b3, b4, b5, b6, b7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                w0, w1, w2, w3, w4 = wt[c, 0], wt[c, 1], wt[c, 2], wt[c, 3], wt[c, 4]
                for j in range(c_out):
                    u, v, z, y, e = w0[j], w1[j], w2[j], w3[j], w4[j]
                    q0[j] += a0 * u + a1 * v + a2 * z + b0 * y + b1 * e
                    q1[j] += a1 * u + a2 * v + a3 * z + b1 * y + b2 * e
                    q2[j] += a2 * u + a3 * v + a4 * z + b2 * y + b3 * e
                    q3[j] += a3 * u + a4 * v + a5 * z + b3 * y + b4 * e
                    q4[j] += a4 * u + a5 * v + a6 * z + b4 * y + b5 * e
                    q5[j] += a5 * u + a6 * v + a7 * z + b5 * y + b6 * e
                    q6[j] += a6 * u + a7 * v + a8 * z + b6 * y + b7 * e
            for j in range(c_out):
                b = zero if bias is None else bias[j]
                for i in range(SEGMENT):
                    out[j, oh, s0 + i] = acc[i, j] + b


@njit(cache=True, nogil=True, fastmath=True)
def _weight_grad_image_5taps(xp, gl, dwt, rows):
    """`_weight_grad_image` for the 5 taps of `_forward_image_5taps`: dwt (C_in, 5, C_out)."""
    full, part, col = rows
    c_in = xp.shape[0]
    h, w, c_out = gl.shape
    for c in range(c_in):
        d0, d1, d2, d3, d4 = dwt[c, 0], dwt[c, 1], dwt[c, 2], dwt[c, 3], dwt[c, 4]
        for oh in range(h):
            for s0 in range(0, w, SEGMENT):
                r = xp[c, oh + full, s0:]
                a0, a1, a2, a3, a4, a5, a6, a7, a8 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
                r = xp[c, oh + part, s0 + col:]
                b0, b1, b2, b3, b4, b5, b6, b7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                g = gl[oh, s0:]
                g0, g1, g2, g3, g4, g5, g6 = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
                for j in range(c_out):
                    e0, e1, e2, e3, e4, e5, e6 = g0[j], g1[j], g2[j], g3[j], g4[j], g5[j], g6[j]
                    d0[j] += a0 * e0 + a1 * e1 + a2 * e2 + a3 * e3 + a4 * e4 + a5 * e5 + a6 * e6
                    d1[j] += a1 * e0 + a2 * e1 + a3 * e2 + a4 * e3 + a5 * e4 + a6 * e5 + a7 * e6
                    d2[j] += a2 * e0 + a3 * e1 + a4 * e2 + a5 * e3 + a6 * e4 + a7 * e5 + a8 * e6
                    d3[j] += b0 * e0 + b1 * e1 + b2 * e2 + b3 * e3 + b4 * e4 + b5 * e5 + b6 * e6
                    d4[j] += b1 * e0 + b2 * e1 + b3 * e2 + b4 * e3 + b5 * e4 + b6 * e5 + b7 * e6


@njit(cache=True, parallel=True)
def _forward(x, wt, bias, out, rows):
    """out (N, C_out, H, Wr) = the conv of x (N, C_in, H, W) with wt (C_in, 9, C_out) (rows ==
    ALL_TAPS), or with the 5 taps `rows` of wt (C_in, 5, C_out) (`_forward_image_5taps`), + bias,
    where Wr is W rounded up to a multiple of SEGMENT (the columns past W read zeros; the caller
    drops them). The images are shared between Numba's threads, each padding one image at a time
    into a buffer of its own (padding the whole batch first would add a copy of x to the peak
    memory)."""
    n, c_in, h, w = x.shape
    for i in prange(n):
        xp = np.zeros((c_in, h + 2, out.shape[3] + 2), x.dtype)
        _pad_into(x[i], xp)
        acc = np.empty((SEGMENT, out.shape[1]), x.dtype)
        if rows == ALL_TAPS:
            _forward_image(xp, wt, bias, out[i], acc)
        else:
            _forward_image_5taps(xp, wt, bias, out[i], acc, rows)


@njit(cache=True, nogil=True, fastmath=True)
def _weight_grad_image(xp, gl, dwt):
    """dwt (C_in, 9, C_out) += the weight gradient from one image: xp (C_in, H+2, W+2) the
    zero-padded input, gl (H, W, C_out) the output gradient, channels last. Vectorized over
    C_out like the forward: one pass over j adds a segment's 7 pixels into one kernel row's 3
    accumulator vectors. W must be a multiple of SEGMENT."""
    c_in = xp.shape[0]
    h, w, c_out = gl.shape
    for c in range(c_in):
        for kh in range(3):
            left, mid, right = dwt[c, 3 * kh], dwt[c, 3 * kh + 1], dwt[c, 3 * kh + 2]    # vectors over C_out
            for oh in range(h):
                for s0 in range(0, w, SEGMENT):
                    r = xp[c, oh + kh, s0:]
                    a0, a1, a2, a3, a4, a5, a6, a7, a8 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8]
                    g = gl[oh, s0:]
                    g0, g1, g2, g3, g4, g5, g6 = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
                    for j in range(c_out):
                        e0, e1, e2, e3, e4, e5, e6 = g0[j], g1[j], g2[j], g3[j], g4[j], g5[j], g6[j]
                        left[j] += a0 * e0 + a1 * e1 + a2 * e2 + a3 * e3 + a4 * e4 + a5 * e5 + a6 * e6
                        mid[j] += a1 * e0 + a2 * e1 + a3 * e2 + a4 * e3 + a5 * e4 + a6 * e5 + a7 * e6
                        right[j] += a2 * e0 + a3 * e1 + a4 * e2 + a5 * e3 + a6 * e4 + a7 * e5 + a8 * e6


@njit(cache=True, parallel=True)
def _weight_grad(x, g, chunk, rounded, rows):
    """The weight gradient, as wt (C_in, 9, C_out) (or (C_in, 5, C_out) for the 5 taps `rows`),
    of the conv of x (N, C_in, H, W) for the output gradient g (N, C_out, H, W): one partial sum
    per chunk of images (chunks shared between Numba's threads), added up in chunk order so the
    result does not depend on the threads. rounded: W rounded up to a multiple of SEGMENT (the
    extra columns are zeros)."""
    n, c_in, h, w = x.shape
    c_out = g.shape[1]
    chunks = (n + chunk - 1) // chunk
    parts = np.zeros((chunks, c_in, 9 if rows == ALL_TAPS else 5, c_out), x.dtype)
    for k in prange(chunks):
        xp = np.zeros((c_in, h + 2, rounded + 2), x.dtype)
        gl = np.zeros((h, rounded, c_out), x.dtype)
        for i in range(k * chunk, min(n, (k + 1) * chunk)):
            _pad_into(x[i], xp)
            for r in range(h):
                gl[r, :w] = g[i, :, r].T
            if rows == ALL_TAPS:
                _weight_grad_image(xp, gl, parts[k])
            else:
                _weight_grad_image_5taps(xp, gl, parts[k], rows)
    dwt = parts[0]
    for k in range(1, chunks):
        dwt += parts[k]
    return dwt


# --- the public functions ----------------------------------------------------------------------
def _rounded_width(w: int) -> int:
    """w rounded up to a multiple of SEGMENT: the width the kernels compute (extra columns are zeros)."""
    return -(-w // SEGMENT) * SEGMENT


def _conv(x, wt, bias, rows=ALL_TAPS):
    """The conv of x (N, C_in, H, W) with wt (C_in, 9, C_out), or with the 5 taps `rows` of
    wt (C_in, 5, C_out), + bias: (N, C_out, H, W)."""
    n, c_in, h, w = x.shape
    c_out = wt.shape[-1]
    rounded = _rounded_width(w)
    out = np.empty((n, c_out, h, rounded), x.dtype)
    with convbase.serial_below(n * c_in * c_out * wt.shape[1] * h * w, convbase.SERIAL_MULTIPLY_ADDS):
        _forward(x, wt, bias, out, rows)
    return out if rounded == w else np.ascontiguousarray(out[..., :w])


def _rows(geo):
    """ALL_TAPS for a plain conv, or the masked conv's 5 taps as `five_taps` describes them."""
    return ALL_TAPS if geo.taps is None else five_taps(_taps_mask(geo))


def _tap_index(rows):
    """The taps' (kernel rows, kernel columns) arrays, in the order of wt's second axis: all 9, or the
    5 of a masked conv."""
    if rows == ALL_TAPS:
        return np.repeat(np.arange(3), 3), np.tile(np.arange(3), 3)
    full, part, col = rows
    return np.array([full, full, full, part, part]), np.array([0, 1, 2, col, col + 1])


def forward(x, w, b, geo):
    """x (N, C_in, H, W) conv w (C_out, C_in, 3, 3) (its masked taps skipped), stride 1, padding 1,
    + b (C_out,) or None."""
    rows = _rows(geo)
    kh, kw = _tap_index(rows)
    return _conv(x, np.ascontiguousarray(w[:, :, kh, kw].transpose(1, 2, 0)), b, rows)


def input_grad(g, w, b, geo):
    """The input gradient for the output gradient g (N, C_out, H, W), + b unless None: the same kind
    of conv with the kernel (and its mask) flipped and the channels swapped,
    w'[c, kh, kw, o] = w[o, c, 2-kh, 2-kw]."""
    flipped = ALL_TAPS if geo.taps is None else five_taps(_taps_mask(geo)[::-1, ::-1])
    kh, kw = _tap_index(flipped)
    return _conv(g, np.ascontiguousarray(w[:, :, 2 - kh, 2 - kw].transpose(0, 2, 1)), b, flipped)


def weight_grad(g, x, geo):
    """The weight gradient (C_out, C_in, 3, 3) for the output gradient g and input x; exactly 0 at
    a masked conv's unused taps."""
    rows = _rows(geo)
    kh, kw = _tap_index(rows)
    c_out = g.shape[1]
    with convbase.serial_below(x.size * c_out * len(kh), convbase.SERIAL_MULTIPLY_ADDS):
        dwt = _weight_grad(x, g, IMAGES_PER_CHUNK, _rounded_width(x.shape[3]), rows)
    dw = np.zeros((c_out, x.shape[1], 3, 3), x.dtype)
    dw[:, :, kh, kw] = dwt.transpose(2, 0, 1)
    return dw


# --- masked 3x3 convs of 5 taps (PixelCNN's mask B) --------------------------------------------
def five_taps(mask):
    """(full, part, col) when the 3x3 `mask` keeps exactly one whole kernel row, `full`, and two
    neighbouring taps, columns col and col + 1, of another, `part` (PixelCNN's mask B: (0, 1, 0);
    its flip, the input gradient's: (2, 1, 1)); None for any other mask."""
    kept = np.asarray(mask) != 0
    if kept.shape != (3, 3) or kept.sum() != 5:
        return None
    full = [r for r in range(3) if kept[r].all()]
    part = [r for r in range(3) if kept[r].sum() == 2]
    if len(full) != 1 or len(part) != 1:
        return None
    cols = np.flatnonzero(kept[part[0]])
    return (full[0], part[0], int(cols[0])) if cols[1] == cols[0] + 1 else None
