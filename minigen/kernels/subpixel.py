"""Transposed convolution by sub-pixel decomposition (Huang et al., "DWM", 2020): no col2im.

The problem. A transposed conv with stride s (DCGAN's and the conv VAE's k=4, s=2, p=1
upsamplers), and the input gradient of a strided conv (the GAN discriminator's and the
VAE encoder's k=4, s=2, p=1, the DDPM U-Net's k=3, s=2, p=1 downsamplers) - the same
computation - "paints" every input pixel's kH x kW patch of weights onto the output at
stride s. `im2col.py` does it as one matrix product (C_in*kH*kW rows of patches) followed by
col2im, a scatter that adds overlapping patches together: a second pass over a buffer
kH*kW/s^2 times the output's size, with read-modify-write on every element.

The decomposition. Look at one output axis. Output position o receives tap t of input
position i when o = i*s - p + t. Split the output by its phase r = o mod s, o = s*a + r:
then t = (r + p) mod s (mod s), and i = a + d with d = (r + p - t) / s, an integer. So

    out[s*a + r] = sum over the taps t with t = r + p (mod s) of w[t] * x[a + (r + p - t) / s]

is an ordinary stride-1 correlation of x with the sub-kernel of those taps, read at
offsets d. For k=4, s=2, p=1 each phase has 2 taps per axis: r=0 uses t in {1, 3} at
d in {0, -1}, r=1 uses t in {0, 2} at d in {1, 0}. In 2-D the s*s = 4 phases (rh, rw)
are four stride-1 2x2 convs of the *input*, whose outputs interleave:

    x        (N, C_in, H, W)                 the transposed conv's input
    w        (C_in, C_out, kH, kW)           transposed-conv layout
    taps     T = Th*Tw per phase             (Th, Tw: the taps of the phase's rh, rw)
    offsets  (T, 2)                          (dh, dw) of each tap, as above
    w_phase  (C_out, C_in*T)                 w[:, :, th, tw] for the phase's taps, transposed
    cols     (C_in*T, Nc*Hp*Wp)              im2col of x at those offsets, stride 1 (`convbase.unfold`)
    y        (C_out, Nc*Hp*Wp) = w_phase @ cols
    out      (N, C_out, H_out, W_out)        out[:, :, rh::s, rw::s] = y (+ bias)

with Hp = ceil((H_out - rh) / s) the phase's rows. Every product multiplies a weight by
a real input pixel - no inserted zeros - and every output element is written once; for
k=4, s=2 the phases' products add up to exactly the plain method's FLOPs. Phases may
differ in their tap count (k=3, s=2, p=1: 1 and 2 taps per axis), and a phase no tap
reaches (k < s) is just the bias.

Accuracy: each output sums the same products as the reference, in a different order;
float32 results match the float64 reference to a relative error of about 1e-6 of the
output's scale (tested at 1e-5).

The other directions need no decomposition: a strided conv's forward and weight gradient
already read only real pixels with im2col (its phases are just a reordering of cols' rows),
and so do the transposed conv's input and weight gradients (strided convs themselves).

When it pays. Per image, the decomposition's im2col writes C_in*T elements per phase
position (C_in*kH*kW per input pixel in all), where col2im reads and adds back C_out*kH*kW per
input pixel: equal FLOPs, so the cheaper memory pass wins, and measured it does - this path
is faster when the channels grow (C_out > C_in), slower when they shrink. The estimate plan
(`conv.py`) sends the col2im cases here where it `takes` them (groups == 1, dilation 1, stride > 1)
and C_out > C_in (`preferred`). (The five
model families' k=4, s=2 layers with 32 or more channels on the side their kernels vectorize
over run on `stride2.py`'s direct loops instead; the rest all shrink or keep the channels on
their col2im side - the GAN and VAE decoders' last layers 64->1 and 32->1, DDPM's k=3 s=2
downsamplers 32 and 64 - so they keep the col2im path.)
"""
from __future__ import annotations

import itertools

import numpy as np
from numba import njit

from minigen.kernels import convbase

__all__ = ["takes", "preferred", "input_grad"]


def takes(geo, part: str) -> bool:
    """The input gradient (a transposed conv's forward) of a strided, undilated, ungrouped conv over
    all taps: the only part that is a transposed conv."""
    return (part == "input_grad" and geo.groups == 1 and geo.dilation == (1, 1) and max(geo.stride) > 1
            and geo.taps is None)


def preferred(geo, part: str) -> bool:
    """Where the channels grow, from the conv's C_out to its C_in. Measured (benchmarks/fast_paths.py,
    k=4, s=2, batch 128): 0.4-0.8x the col2im path's time for 32->128 and 16->64, even at 64->64,
    1.0-1.5x slower for 128->64 and 64->32 - because it copies C_out*T input rows per phase where
    col2im adds up C_in*kH*kW output rows: the smaller side wins."""
    return geo.image[1] > geo.c_out


def _axis_phases(out_size, kernel, stride, padding):
    """For one axis, per phase r in [0, s): (positions Hp, taps t, input offsets d)."""
    phases = []
    for r in range(stride):
        taps = [t for t in range(kernel) if (r + padding - t) % stride == 0]
        phases.append((max(0, (out_size - r + stride - 1) // stride), taps,
                       [(r + padding - t) // stride for t in taps]))
    return phases


@njit(cache=True, nogil=True)
def _to_phase(y, out, rh, rw, stride, bias):
    """out[n, k, rh + sh*a, rw + sw*b] = y[k, (n*Hp + a)*Wp + b] (+ bias[k]) for one phase:
    y (C_out, Nc*Hp*Wp) interleaved into out (Nc, C_out, H_out, W_out)."""
    nc, c, h, w = out.shape
    hp = (h - rh + stride[0] - 1) // stride[0]
    wp = (w - rw + stride[1] - 1) // stride[1]
    for n in range(nc):
        for k in range(c):
            shift = 0.0 if bias is None else bias[k]
            for a in range(hp):
                src = y[k, (n * hp + a) * wp:(n * hp + a + 1) * wp]
                line = out[n, k, rh + a * stride[0]]
                for b in range(wp):
                    line[rw + b * stride[1]] = src[b] + shift


def input_grad(g, w, b, geo):
    """The input gradient of the conv `geo` for its output gradient g, + b unless None: the transposed
    conv of g with w, to the conv's input size (which fixes output_padding)."""
    return _transposed_conv(g, w, geo.stride, geo.padding, geo.image[2:], b)


def _transposed_conv(x, w, stride, padding, out_hw, bias=None):
    """Transposed conv of x (N, C_in, H, W) with w (C_in, C_out, kH, kW), groups 1, dilation 1,
    to an output of out_hw (H_out, W_out). Returns (N, C_out, H_out, W_out)."""
    n, c_in = x.shape[:2]
    c_out = w.shape[1]
    rows, cols_ = (_axis_phases(*a) for a in zip(out_hw, w.shape[2:], stride, padding))
    phases = []                       # (rh, rw, (Hp, Wp), offsets (T, 2), w_phase (C_out, C_in*T))
    for (rh, (hp, th, dh)), (rw, (wp, tw, dw)) in itertools.product(enumerate(rows), enumerate(cols_)):
        if hp and wp and th and tw:
            taps = list(itertools.product(range(len(th)), range(len(tw))))
            offsets = np.array([(dh[i], dw[j]) for i, j in taps], np.int64).reshape(-1, 2)
            w_phase = w[:, :, [th[i] for i, _ in taps], [tw[j] for _, j in taps]]      # (C_in, C_out, T)
            phases.append((rh, rw, (hp, wp), offsets,
                           np.ascontiguousarray(w_phase.transpose(1, 0, 2)).reshape(c_out, -1)))
    reached = sum(hp * wp for _, _, (hp, wp), _, _ in phases)
    out = (np.empty if reached == out_hw[0] * out_hw[1] else np.zeros)((n, c_out) + tuple(out_hw), x.dtype)
    if reached < out_hw[0] * out_hw[1] and bias is not None:     # phases no tap reaches hold the bias
        out += np.asarray(bias, x.dtype).reshape(-1, 1, 1)
    if not phases:
        return out
    # chunk the batch as `im2col.py` does, sized by the largest phase: a stand-in geometry with
    # that phase's taps (C_in*T rows) and positions
    most_taps = max(len(o) for _, _, _, o, _ in phases)
    most_plane = max(hp * wp for _, _, (hp, wp), _, _ in phases)
    geo = convbase.ConvGeometry(x.shape, (most_plane, 1), (most_taps, 1), (1, 1), (0, 0), (1, 1), 1, c_out)
    per_chunk = geo.chunks()[0][1]
    most_rows = c_in * most_taps
    bias = None if bias is None else np.ascontiguousarray(bias, x.dtype)

    def task(n0, n1, scratch):
        for rh, rw, (hp, wp), offsets, w_phase in phases:
            width = (n1 - n0) * hp * wp
            cols = convbase.scratch_buffer(scratch, "cols", most_rows * most_plane * per_chunk, x.dtype)[:w_phase.shape[1] * width]
            y = convbase.scratch_buffer(scratch, "y", c_out * most_plane * per_chunk, x.dtype)[:c_out * width]
            cols, y = cols.reshape(-1, width), y.reshape(c_out, width)
            convbase.unfold(x[n0:n1], cols, (hp, wp), offsets, (1, 1))
            np.matmul(w_phase, cols, out=y)
            _to_phase(y, out[n0:n1], rh, rw, stride, bias)
    convbase.for_each_chunk(geo.chunks(), task, convbase.conv_multiply_adds(geo))
    return out
