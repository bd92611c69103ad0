"""k=4, stride-2, padding-1 convs and transposed convs (DCGAN's and the conv VAE's down- and
upsamplers) as direct 2x2 stride-1 convs: space-to-depth, no im2col, no col2im.

The idea (sub-pixel decomposition, the DWM paper's "stride decomposition")
---------------------------------------------------------------------------
A k=4, s=2 conv reads input row 2i + kh - 1 for output row i (kh = 0..3). Split the kernel row
into its phase and its step, kh = 2*bh + ph (ph, bh in {0, 1}), and the padded input row into
its phase too: 2i + kh = 2*(i + bh) + ph. Keep the 4 phases (ph, pw) of the padded image as 4
channels of half the size, the "space-to-depth" image,

    xs[4c + 2ph + pw, I, J] = xpad[c, 2I + ph, 2J + pw]        xs (4*C_in, H/2 + 1, W/2 + 1)

and the strided conv becomes a stride-1 conv with 2x2 taps (bh, bw) and 4x the input channels:

    out[o, i, j] = sum over c, ph, pw, bh, bw of w[o, c, 2bh + ph, 2bw + pw] * xs[4c + 2ph + pw, i + bh, j + bw]

Every multiply-add is one of the original conv's (none with inserted zeros), and it runs on
`_forward_image_2x2`, the register-tiled loop of the 3x3 kernels with 2x2 taps.

The input gradient (= the transposed conv's forward) goes the other way: output row r of dx
receives from g rows i with 2i + kh - 1 = r. Split dx by the phase of its rows, r = 2m + 1 - ph:
then kh = 2*(1 - kb) + ph and i = m - ph + kb for kb in {0, 1}, so each of the 4 output phases
(ph, pw) is again a valid 2x2 conv, of the zero-padded g (gpad, 1 pixel each side) read from
row 1 - ph and column 1 - pw on, with the phase's 4 taps of w, flipped:

    dx[c, 2m + 1 - ph, 2n + 1 - pw] = sum over o, kbh, kbw of w[o, c, 2(1-kbh) + ph, 2(1-kbw) + pw]
                                                           * gpad[o, m + 1 - ph + kbh, n + 1 - pw + kbw]

The weight gradient is that of the 2x2 conv on xs (`_weight_grad_image_2x2`), read back
into the 4x4 kernel by the same index map.

A transposed conv is the input gradient of the conv it transposes, so its forward is
`input_grad`, its input gradient `forward` and its weight gradient `weight_grad` with the roles
of image and output gradient swapped (conv.py does the swapping).

Shapes: x (N, C_in, H, W) with H, W even; w (C_out, C_in, 4, 4), like PyTorch's conv2d; the
output (N, C_out, H/2, W/2), whose width must be a multiple of SEGMENT (7: the families'
14 and 7). Arithmetic is reassociated (`fastmath`): float32 results differ from the float64
reference by rounding only, tested in tests/kernels/test_stride2.py.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minigen.kernels import convbase

# Measured against im2col / sub-pixel + BLAS on the 2-core machine for the families' k4 s2
# convs (benchmarks/fast_paths.py): the direct loops win when the channels they vectorize
# over (output channels; input channels for the input gradient) are at least this many.
MIN_VECTOR_CHANNELS = 32

# The register tile of direct.py: 7 output pixels of a row (q0..q6, g0..g6 in the kernels).
SEGMENT = 7

# images per chunk of the weight gradient (each chunk one partial sum), as in direct.py
IMAGES_PER_CHUNK = 16


def takes(geo, part: str) -> bool:
    """Any part of a k=4, s=2, p=1 conv (`geo`, a convbase.ConvGeometry) of an even-sized image
    whose output width is a multiple of the register tile: the only kind computed here."""
    n, c, h, w = geo.image
    return (geo.kernel == (4, 4) and geo.stride == (2, 2) and geo.padding == (1, 1)
            and geo.dilation == (1, 1) and geo.groups == 1 and geo.taps is None
            and h % 2 == 0 and w % 2 == 0 and geo.out_hw == (h // 2, w // 2)
            and (w // 2) % SEGMENT == 0)


def preferred(geo, part: str) -> bool:
    return (geo.image[1] if part == "input_grad" else geo.c_out) >= MIN_VECTOR_CHANNELS


# --- the kernels -------------------------------------------------------------------------------
# (Here, not in direct.py, though they are direct.py's register tile with 2x2 taps: Numba's
# on-disk cache of a compiled function is refreshed when its own file changes, not when a
# function it calls in another file does.)


@njit(cache=True, nogil=True, fastmath=True)
def _forward_image_2x2(xp, wt, bias, out, acc):
    """out (C_out, H, W) = the valid 2x2 conv (stride 1, no padding) of xp (C_in, H+1, W+1) with
    wt (C_in, 2, 2, C_out), plus bias (C_out,) unless None. The same register tile as
    `direct._forward_image`, over both kernel rows at once: 28 multiply-adds per 4 weight loads and 7
    accumulator loads + stores. W a multiple of SEGMENT; xp and out may be strided views."""
    c_in = xp.shape[0]
    c_out, h, w = out.shape
    zero = np.zeros(1, out.dtype)[0]
    q0, q1, q2, q3, q4, q5, q6 = acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6]
    for oh in range(h):
        for s0 in range(0, w, SEGMENT):
            acc[:] = 0
            for c in range(c_in):
                r = xp[c, oh, s0:]                  # kernel row 0 reads input row oh, row 1 oh + 1
                a0, a1, a2, a3, a4, a5, a6, a7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                r = xp[c, oh + 1, s0:]
                b0, b1, b2, b3, b4, b5, b6, b7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                w00, w01, w10, w11 = wt[c, 0, 0], wt[c, 0, 1], wt[c, 1, 0], wt[c, 1, 1]
                for j in range(c_out):
                    u, v, y, z = w00[j], w01[j], w10[j], w11[j]
                    q0[j] += a0 * u + a1 * v + b0 * y + b1 * z
                    q1[j] += a1 * u + a2 * v + b1 * y + b2 * z
                    q2[j] += a2 * u + a3 * v + b2 * y + b3 * z
                    q3[j] += a3 * u + a4 * v + b3 * y + b4 * z
                    q4[j] += a4 * u + a5 * v + b4 * y + b5 * z
                    q5[j] += a5 * u + a6 * v + b5 * y + b6 * z
                    q6[j] += a6 * u + a7 * v + b6 * y + b7 * z
            for j in range(c_out):
                b = zero if bias is None else bias[j]
                for i in range(SEGMENT):
                    out[j, oh, s0 + i] = acc[i, j] + b


@njit(cache=True, nogil=True, fastmath=True)
def _weight_grad_image_2x2(xp, gl, dwt):
    """dwt (C_in, 2, 2, C_out) += the weight gradient of `_forward_image_2x2` from one image:
    xp (C_in, H+1, W+1), gl (H, W, C_out) the output gradient, channels last; the 4 taps of an
    input channel take a segment's 7 pixels in one pass over j. W a multiple of SEGMENT."""
    c_in = xp.shape[0]
    h, w, c_out = gl.shape
    for c in range(c_in):
        d00, d01, d10, d11 = dwt[c, 0, 0], dwt[c, 0, 1], dwt[c, 1, 0], dwt[c, 1, 1]
        for oh in range(h):
            for s0 in range(0, w, SEGMENT):
                r = xp[c, oh, s0:]
                a0, a1, a2, a3, a4, a5, a6, a7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                r = xp[c, oh + 1, s0:]
                b0, b1, b2, b3, b4, b5, b6, b7 = r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]
                g = gl[oh, s0:]
                g0, g1, g2, g3, g4, g5, g6 = g[0], g[1], g[2], g[3], g[4], g[5], g[6]
                for j in range(c_out):
                    e0, e1, e2, e3, e4, e5, e6 = g0[j], g1[j], g2[j], g3[j], g4[j], g5[j], g6[j]
                    d00[j] += a0 * e0 + a1 * e1 + a2 * e2 + a3 * e3 + a4 * e4 + a5 * e5 + a6 * e6
                    d01[j] += a1 * e0 + a2 * e1 + a3 * e2 + a4 * e3 + a5 * e4 + a6 * e5 + a7 * e6
                    d10[j] += b0 * e0 + b1 * e1 + b2 * e2 + b3 * e3 + b4 * e4 + b5 * e5 + b6 * e6
                    d11[j] += b1 * e0 + b2 * e1 + b3 * e2 + b4 * e3 + b5 * e4 + b6 * e5 + b7 * e6


@njit(cache=True, nogil=True)
def _space_to_depth(x, xs):
    """xs (4C, H/2+1, W/2+1), zeros where the padding falls, gets x (C, H, W):
    xs[4c + 2ph + pw, I, J] = x[c, 2I + ph - 1, 2J + pw - 1]."""
    c_in, h, w = x.shape
    for c in range(c_in):
        for r in range(h):
            ph, row = (r + 1) % 2, (r + 1) // 2
            for s in range(w):
                xs[4 * c + 2 * ph + (s + 1) % 2, row, (s + 1) // 2] = x[c, r, s]


@njit(cache=True, parallel=True)
def _forward(x, wt, bias, out):
    """out (N, C_out, H/2, W/2) = the k4 s2 conv of x (N, C_in, H, W), wt (4C_in, 2, 2, C_out)."""
    n, c_in, h, w = x.shape
    for i in prange(n):
        xs = np.zeros((4 * c_in, h // 2 + 1, w // 2 + 1), x.dtype)
        _space_to_depth(x[i], xs)
        _forward_image_2x2(xs, wt, bias, out[i], np.empty((SEGMENT, wt.shape[3]), x.dtype))


@njit(cache=True, parallel=True)
def _input_grad(g, wp, bias, out):
    """out (N, C, 2H, 2W) = the input gradient for g (N, O, H, W), phase by phase: wp
    (2, 2, O, 2, 2, C) holds each phase's flipped taps (+ bias (C,) unless None: the
    transposed conv's)."""
    n, c_out, h, w = g.shape
    for i in prange(n):
        gp = np.zeros((c_out, h + 2, w + 2), g.dtype)
        gp[:, 1:h + 1, 1:w + 1] = g[i]
        acc = np.empty((SEGMENT, wp.shape[5]), g.dtype)
        for ph in range(2):
            for pw in range(2):
                _forward_image_2x2(gp[:, 1 - ph:, 1 - pw:], wp[ph, pw], bias,
                                   out[i, :, 1 - ph::2, 1 - pw::2], acc)


@njit(cache=True, parallel=True)
def _weight_grad(x, g, chunk):
    """(4C_in, 2, 2, C_out): the weight gradient on the space-to-depth image, one partial sum
    per chunk of images, added in chunk order (the same bits on any number of threads)."""
    n, c_in, h, w = x.shape
    c_out = g.shape[1]
    chunks = (n + chunk - 1) // chunk
    parts = np.zeros((chunks, 4 * c_in, 2, 2, c_out), x.dtype)
    for k in prange(chunks):
        xs = np.zeros((4 * c_in, h // 2 + 1, w // 2 + 1), x.dtype)
        gl = np.empty((h // 2, w // 2, c_out), x.dtype)
        for i in range(k * chunk, min(n, (k + 1) * chunk)):
            _space_to_depth(x[i], xs)
            for r in range(h // 2):
                gl[r] = g[i, :, r].T
            _weight_grad_image_2x2(xs, gl, parts[k])
    dwt = parts[0]
    for k in range(1, chunks):
        dwt += parts[k]
    return dwt


# --- the public functions: the index maps between w (C_out, C_in, 4, 4) and the 2x2 taps -------
def _phases(w):
    """w (O, C, 4, 4) as (O, C, bh, ph, bw, pw), with kh = 2*bh + ph and kw = 2*bw + pw."""
    return w.reshape(w.shape[0], w.shape[1], 2, 2, 2, 2)


def forward(x, w, b, geo):
    """The k4 s2 p1 conv: x (N, C_in, H, W), w (C_out, C_in, 4, 4), b (C_out,) or None."""
    n, c_in, h, wd = x.shape
    wt = np.ascontiguousarray(_phases(w).transpose(1, 3, 5, 2, 4, 0)).reshape(4 * c_in, 2, 2, w.shape[0])
    out = np.empty((n, w.shape[0], h // 2, wd // 2), x.dtype)
    with convbase.serial_below(x.size * w.shape[0] * 4, convbase.SERIAL_MULTIPLY_ADDS):
        _forward(x, wt, b, out)
    return out


def input_grad(g, w, b, geo):
    """The gradient w.r.t. the input of the k4 s2 p1 conv with w (O, C, 4, 4), for its output
    gradient g (N, O, H, W): (N, C, 2H, 2W) (+ b (C,) unless None: the transposed conv)."""
    n, c_out, h, wd = g.shape
    # wp[ph, pw, o, kbh, kbw, c] = w[o, c, 2(1 - kbh) + ph, 2(1 - kbw) + pw]: the taps flipped
    wp = np.ascontiguousarray(_phases(w)[:, :, ::-1, :, ::-1, :].transpose(3, 5, 0, 2, 4, 1))
    out = np.empty((n, w.shape[1], 2 * h, 2 * wd), g.dtype)
    with convbase.serial_below(g.size * w.shape[1] * 16, convbase.SERIAL_MULTIPLY_ADDS):
        _input_grad(g, wp, b, out)
    return out


def weight_grad(g, x, geo):
    """The weight gradient (O, C, 4, 4) of the k4 s2 p1 conv of x (N, C, H, W) for its output
    gradient g (N, O, H/2, W/2)."""
    c_in, c_out = x.shape[1], g.shape[1]
    with convbase.serial_below(x.size * c_out * 4, convbase.SERIAL_MULTIPLY_ADDS):
        dwt = _weight_grad(x, g, IMAGES_PER_CHUNK)
    # dwt[4c + 2ph + pw, bh, bw, o] -> dw[o, c, 2bh + ph, 2bw + pw]
    return np.ascontiguousarray(dwt.reshape(c_in, 2, 2, 2, 2, c_out).transpose(5, 0, 3, 1, 4, 2)).reshape(c_out, c_in, 4, 4)
