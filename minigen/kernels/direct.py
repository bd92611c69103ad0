"""Direct 3x3 convolution (stride 1, padding 1), written so the compiler keeps the arithmetic in
registers: no im2col buffer, no matrix library, forward and both gradients.

Why not just im2col + BLAS?
---------------------------
`conv.py` copies every 3x3 window into a column (9x the input) and hands one big matrix
product to BLAS. On the small images of the U-Net's lower levels (14x14, 7x7) that copy and
the regrouping of the product's output cost as much as the product itself, and the products
are too narrow for BLAS to reach its peak. A direct loop reads each input value from L1 cache
and does all its multiply-adds there.

The catch is that a naive direct loop is slow (about 7-12 GFLOP/s here, measured): every
multiply-add loads and stores its accumulator, and the CPU can store only about one vector a
cycle while it can do two vector multiply-adds. Two choices fix that:

1. Vectorize over output channels. The weight is re-laid out as wt (C_in, 3, 3, C_out), so for
   one input channel c and one tap (kh, kw), wt[c, kh, kw] is a contiguous vector over the
   output channels; one input pixel (a scalar) times that vector adds into the output pixel's
   vector of C_out accumulators. The compiler turns the loop over output channels `j` into
   SIMD instructions.
2. Do many multiply-adds per accumulator load/store. In the loop over j the body sums all 9
   taps of one input channel, for TWO neighbouring output pixels that share 6 of their 12 input
   values, before storing:

       here[j]  += a00*w00[j] + a01*w01[j] + a02*w02[j] + ... + a22*w22[j]     (9 taps)
       right[j] += a01*w00[j] + a02*w01[j] + a03*w02[j] + ... + a23*w22[j]     (shifted by one)

   18 multiply-adds per 2 accumulator loads + 2 stores + 9 weight loads, instead of 1 per
   load/store. The accumulators of a segment of SEGMENT output pixels, acc (SEGMENT, C_out),
   stay in L1. Bigger tiles did not work with Numba's compiler: four pixels in a row, or 2x2
   pixels, need 16-18 broadcast inputs at once, and the compiler then gave up vectorizing
   (measured 10 GFLOP/s a core, against 45-70 for two pixels).

Measured on the 2-core development machine (forward, batch 128, 2 threads): 64->64 channels
at 7x7 134 GFLOP/s and at 14x14 98-125, against 63 and 89-96 for the best of Winograd and
im2col. `conv.py` picks this kernel only for the shapes and parts where it measured fastest
(`takes_forward`, `takes_input_grad`, `takes_weight_grad`).

Gradients
---------
* Input gradient: the adjoint of a stride-1, pad-1 3x3 conv is the same kind of conv with the
  kernel flipped in both spatial axes and C_in / C_out swapped: dx = forward(g, w'), with
  w'[c, o, kh, kw] = w[o, c, 2 - kh, 2 - kw].
* Weight gradient: dw[o, c, kh, kw] = sum over images and pixels p of g[n, o, p] *
  x[n, c, p + (kh, kw) - 1]. It is vectorized over output channels too: with the output gradient
  laid out channels-last, gl (H, W, C_out), the 9 vectors dwt[c, kh, kw] (C_out,) take, in one
  pass over j, two neighbouring pixels' products g[p] * x[p + tap] for all 9 taps. (Vectorizing
  over pixels instead, 9 dot products of g's row with shifted rows of x, measured 5-12 GFLOP/s.)

Arithmetic order differs from im2col (sums are reassociated: `fastmath`), so float32 results
differ by rounding only: the bound is tested in tests/test_direct.py against the float64
reference. The images are shared between Numba's threads (`prange`); the weight gradient is
summed per chunk of IMAGES_PER_CHUNK images and the chunks' partial sums are added in chunk
order, so results do not depend on the number of threads.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3), like PyTorch.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from minigen.kernels import conv

# images per chunk of the weight gradient: each chunk is one partial sum
IMAGES_PER_CHUNK = 4

# Where this kernel is used (`conv.py` asks per part: forward, input gradient, weight gradient).
# Measured against Winograd and im2col on the 2-core machine, batch 128, for every stride-1 3x3
# conv of the five families (benchmarks/fast_paths.py, fresh processes, alternating): the direct
# loops win when the channels they vectorize over are at least MIN_VECTOR_CHANNELS, the channels
# they loop over at least MIN_LOOP_CHANNELS, and an image's work is small (at most MAX_WORK =
# C_in*C_out*H*W, e.g. 64->64 channels at 14x14); bigger convs (64->64 at 28x28, 128->64 at
# 14x14) are faster with Winograd, which does 2.25x fewer multiplies, and first layers with a
# few input channels (14->64 at 14x14, 11->64 at 28x28) with im2col, whose copy is then small.
# On one thread (e.g. a part of DDPM sampling's batch split, `conv.map_batch_parts`) the other
# kernels lose less, since it is their hand-offs between threads that cost them most: there the
# direct forward measured faster only from MIN_LOOP_CHANNELS_SERIAL input channels (batch 8:
# 64->64 at 14x14 2.05 against 3.55 ms; 32->64 at 14x14 1.21 against 1.01 ms).
MIN_VECTOR_CHANNELS = 32
MIN_LOOP_CHANNELS = 16
MIN_LOOP_CHANNELS_SERIAL = 64
MAX_WORK = 1 << 20


def fits(geo) -> bool:
    """`geo` (a conv.ConvGeometry) is a stride-1, padding-1, ungrouped, undilated 3x3 conv over
    all taps: the only kind these kernels compute."""
    return (geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.padding == (1, 1)
            and geo.dilation == (1, 1) and geo.groups == 1 and geo.taps is None)


def _small(geo, c_out) -> bool:
    n, c_in, h, w = geo.image
    return c_in * c_out * h * w <= MAX_WORK


def takes_forward(geo, c_out) -> bool:
    """Whether the forward of this conv (geo, c_out output channels) runs here."""
    least = MIN_LOOP_CHANNELS_SERIAL if numba.get_num_threads() == 1 else MIN_LOOP_CHANNELS
    return fits(geo) and c_out >= MIN_VECTOR_CHANNELS and geo.image[1] >= least and _small(geo, c_out)


def takes_input_grad(geo, c_out) -> bool:
    """Whether the input gradient runs here: a conv whose outputs are the C_in input channels."""
    return fits(geo) and geo.image[1] >= MIN_VECTOR_CHANNELS and _small(geo, c_out)


def takes_weight_grad(geo, c_out) -> bool:
    """Whether the weight gradient runs here (vectorized over the C_out output channels)."""
    return (fits(geo) and c_out >= MIN_VECTOR_CHANNELS and geo.image[1] >= MIN_LOOP_CHANNELS
            and _small(geo, c_out))


# --- the kernels -------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _pad_into(x, padded):
    """padded (C, H+2, W+2), zeros at the border, gets x (C, H, W) inside it."""
    c_in, h, w = x.shape
    for c in range(c_in):
        for r in range(h):
            padded[c, r + 1, 1:w + 1] = x[c, r]


# Output pixels of a row go in segments of SEGMENT: a compile-time constant, so the loop over a
# segment's pixel pairs has a known trip count and the compiler unrolls it and keeps the
# addresses in registers (with the trip count read at run time: measured 1.7x slower at
# 14x14). 7 divides the families' widths (28, 14, 7); segments of 14 and 28 measured no faster.
SEGMENT = 7


@njit(cache=True, nogil=True, fastmath=True)
def _forward_image(xp, wt, bias, out, acc):
    """out (C_out, H, W) = the 3x3 conv of the padded image xp (C_in, H+2, W+2) with wt
    (C_in, 3, 3, C_out), plus bias (C_out,) unless None. W must be a multiple of SEGMENT
    (`_rounded_width`); acc: scratch (SEGMENT, C_out)."""
    c_in = xp.shape[0]
    c_out, h, w = out.shape
    zero = np.zeros(1, out.dtype)[0]
    for oh in range(h):
        for s0 in range(0, w, SEGMENT):
            acc[:] = 0
            for c in range(c_in):
                r0, r1, r2 = xp[c, oh], xp[c, oh + 1], xp[c, oh + 2]            # the 3 input rows
                w00, w01, w02 = wt[c, 0, 0], wt[c, 0, 1], wt[c, 0, 2]           # 9 vectors over C_out
                w10, w11, w12 = wt[c, 1, 0], wt[c, 1, 1], wt[c, 1, 2]
                w20, w21, w22 = wt[c, 2, 0], wt[c, 2, 1], wt[c, 2, 2]
                for i in range(0, SEGMENT - 1, 2):          # two output pixels at a time
                    p = s0 + i
                    a00, a01, a02, a03 = r0[p], r0[p + 1], r0[p + 2], r0[p + 3]   # 12 inputs, 6 shared
                    a10, a11, a12, a13 = r1[p], r1[p + 1], r1[p + 2], r1[p + 3]
                    a20, a21, a22, a23 = r2[p], r2[p + 1], r2[p + 2], r2[p + 3]
                    here, right = acc[i], acc[i + 1]
                    for j in range(c_out):
                        here[j] += (a00 * w00[j] + a01 * w01[j] + a02 * w02[j]
                                    + a10 * w10[j] + a11 * w11[j] + a12 * w12[j]
                                    + a20 * w20[j] + a21 * w21[j] + a22 * w22[j])
                        right[j] += (a01 * w00[j] + a02 * w01[j] + a03 * w02[j]
                                     + a11 * w10[j] + a12 * w11[j] + a13 * w12[j]
                                     + a21 * w20[j] + a22 * w21[j] + a23 * w22[j])
                if SEGMENT % 2:                                 # the segment's odd pixel out
                    p = s0 + SEGMENT - 1
                    a00, a01, a02 = r0[p], r0[p + 1], r0[p + 2]
                    a10, a11, a12 = r1[p], r1[p + 1], r1[p + 2]
                    a20, a21, a22 = r2[p], r2[p + 1], r2[p + 2]
                    here = acc[SEGMENT - 1]
                    for j in range(c_out):
                        here[j] += (a00 * w00[j] + a01 * w01[j] + a02 * w02[j]
                                    + a10 * w10[j] + a11 * w11[j] + a12 * w12[j]
                                    + a20 * w20[j] + a21 * w21[j] + a22 * w22[j])
            for j in range(c_out):                              # acc (SEGMENT, C_out) -> out[:, oh, s0:]
                b = zero if bias is None else bias[j]
                for i in range(SEGMENT):
                    out[j, oh, s0 + i] = acc[i, j] + b


@njit(cache=True, parallel=True)
def _forward(x, wt, bias, out):
    """out (N, C_out, H, Wr) = the conv of x (N, C_in, H, W) with wt (C_in, 3, 3, C_out) (+ bias),
    where Wr is W rounded up to a multiple of SEGMENT (the columns past W read zeros; the caller
    drops them). The images are shared between Numba's threads, each padding one image at a time
    into a buffer of its own (padding the whole batch first would add a copy of x to the peak
    memory)."""
    n, c_in, h, w = x.shape
    for i in prange(n):
        xp = np.zeros((c_in, h + 2, out.shape[3] + 2), x.dtype)
        _pad_into(x[i], xp)
        _forward_image(xp, wt, bias, out[i], np.empty((SEGMENT, wt.shape[3]), x.dtype))


@njit(cache=True, nogil=True, fastmath=True)
def _weight_grad_image(xp, gl, dwt):
    """dwt (C_in, 3, 3, C_out) += the weight gradient from one image: xp (C_in, H+2, W+2) the
    zero-padded input, gl (H, W, C_out) the output gradient, channels last. Vectorized over
    C_out like the forward; two pixels per pass over an accumulator."""
    c_in = xp.shape[0]
    h, w, c_out = gl.shape
    for c in range(c_in):
        d00, d01, d02 = dwt[c, 0, 0], dwt[c, 0, 1], dwt[c, 0, 2]
        d10, d11, d12 = dwt[c, 1, 0], dwt[c, 1, 1], dwt[c, 1, 2]
        d20, d21, d22 = dwt[c, 2, 0], dwt[c, 2, 1], dwt[c, 2, 2]
        for oh in range(h):
            r0, r1, r2 = xp[c, oh], xp[c, oh + 1], xp[c, oh + 2]
            for s0 in range(0, w, SEGMENT):
                for i in range(0, SEGMENT - 1, 2):
                    p = s0 + i
                    a00, a01, a02, a03 = r0[p], r0[p + 1], r0[p + 2], r0[p + 3]
                    a10, a11, a12, a13 = r1[p], r1[p + 1], r1[p + 2], r1[p + 3]
                    a20, a21, a22, a23 = r2[p], r2[p + 1], r2[p + 2], r2[p + 3]
                    g0, g1 = gl[oh, p], gl[oh, p + 1]
                    for j in range(c_out):
                        d00[j] += a00 * g0[j] + a01 * g1[j]
                        d01[j] += a01 * g0[j] + a02 * g1[j]
                        d02[j] += a02 * g0[j] + a03 * g1[j]
                        d10[j] += a10 * g0[j] + a11 * g1[j]
                        d11[j] += a11 * g0[j] + a12 * g1[j]
                        d12[j] += a12 * g0[j] + a13 * g1[j]
                        d20[j] += a20 * g0[j] + a21 * g1[j]
                        d21[j] += a21 * g0[j] + a22 * g1[j]
                        d22[j] += a22 * g0[j] + a23 * g1[j]
                if SEGMENT % 2:
                    p = s0 + SEGMENT - 1
                    a00, a01, a02 = r0[p], r0[p + 1], r0[p + 2]
                    a10, a11, a12 = r1[p], r1[p + 1], r1[p + 2]
                    a20, a21, a22 = r2[p], r2[p + 1], r2[p + 2]
                    g0 = gl[oh, p]
                    for j in range(c_out):
                        d00[j] += a00 * g0[j]
                        d01[j] += a01 * g0[j]
                        d02[j] += a02 * g0[j]
                        d10[j] += a10 * g0[j]
                        d11[j] += a11 * g0[j]
                        d12[j] += a12 * g0[j]
                        d20[j] += a20 * g0[j]
                        d21[j] += a21 * g0[j]
                        d22[j] += a22 * g0[j]


@njit(cache=True, parallel=True)
def _weight_grad(x, g, chunk, rounded):
    """The weight gradient, as wt (C_in, 3, 3, C_out), of the conv of x (N, C_in, H, W) for the
    output gradient g (N, C_out, H, W): one partial sum per chunk of images (chunks shared
    between Numba's threads), added up in chunk order so the result does not depend on the
    threads. rounded: W rounded up to a multiple of SEGMENT (the extra columns are zeros)."""
    n, c_in, h, w = x.shape
    c_out = g.shape[1]
    chunks = (n + chunk - 1) // chunk
    parts = np.zeros((chunks, c_in, 3, 3, c_out), x.dtype)
    for k in prange(chunks):
        xp = np.zeros((c_in, h + 2, rounded + 2), x.dtype)
        gl = np.zeros((h, rounded, c_out), x.dtype)
        for i in range(k * chunk, min(n, (k + 1) * chunk)):
            _pad_into(x[i], xp)
            for r in range(h):
                gl[r, :w] = g[i, :, r].T
            _weight_grad_image(xp, gl, parts[k])
    dwt = parts[0]
    for k in range(1, chunks):
        dwt += parts[k]
    return dwt


# --- the public functions ----------------------------------------------------------------------
def _rounded_width(w: int) -> int:
    """w rounded up to a multiple of SEGMENT: the width the kernels compute (extra columns are zeros)."""
    return -(-w // SEGMENT) * SEGMENT


def _conv(x, wt, bias):
    """The conv of x (N, C_in, H, W) with wt (C_in, 3, 3, C_out) (+ bias): (N, C_out, H, W)."""
    n, c_in, h, w = x.shape
    rounded = _rounded_width(w)
    out = np.empty((n, wt.shape[3], h, rounded), x.dtype)
    with conv.serial_below(n * c_in * wt.shape[3] * 9 * h * w, conv.SERIAL_MULTIPLY_ADDS):
        _forward(x, wt, bias, out)
    return out if rounded == w else np.ascontiguousarray(out[..., :w])


def conv3x3_forward(x, w, b=None):
    """x (N, C_in, H, W) conv w (C_out, C_in, 3, 3), stride 1, padding 1, + b (C_out,) or None."""
    return _conv(x, np.ascontiguousarray(w.transpose(1, 2, 3, 0)), b)


def conv3x3_backward(grad_out, x, w, input_grad=True, weight_grad=True):
    """(dx, dw, db) of conv3x3_forward for grad_out (N, C_out, H, W); dx / dw None when not asked."""
    dx = dw = None
    if input_grad:       # w'[o, kh, kw, c] = w[o, c, 2-kh, 2-kw]: the flipped kernel, channels swapped
        dx = _conv(grad_out, np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1)), None)
    if weight_grad:
        with conv.serial_below(x.size * w.shape[0] * 9, conv.SERIAL_MULTIPLY_ADDS):
            dwt = _weight_grad(x, grad_out, IMAGES_PER_CHUNK, _rounded_width(x.shape[3]))
            dw = np.ascontiguousarray(dwt.transpose(3, 0, 1, 2))
    return dx, dw, grad_out.sum(axis=(0, 2, 3))
