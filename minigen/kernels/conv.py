"""conv2d and conv_transpose2d on NumPy arrays, forward and backward: which algorithm runs each part.

A conv call has up to three parts (PARTS): the forward, the gradient w.r.t. the input and the
gradient w.r.t. the weight. A transposed conv is described by the conv it is the transpose of
(`convbase.ConvGeometry`): its forward is that conv's input gradient, its input gradient that conv's
forward, and its weight gradient that conv's weight gradient with image and output gradient swapped.

ALGORITHMS below is the whole dispatch: one row per algorithm, with two predicates of one signature,

    takes(geo, part)      it can compute this part of this conv (the shapes it is written for)
    preferred(geo, part)  the hand-measured thresholds prefer it here (the estimate plan)

and the module that runs it, whose `forward(x, w, b, geo)`, `input_grad(g, w, b, geo)` and
`weight_grad(g, x, geo)` compute the parts. Which row runs a part (`run_part`):

1. MINIGEN_CONV=<name> (or `forced(name)`): that algorithm wherever it takes the part;
2. MINIGEN_PLAN=estimate (the default): the first row that takes the part and prefers it (im2col,
   last, always does);
3. MINIGEN_PLAN=measure: the fastest row that takes it, timed the first time this geometry is seen
   and remembered (`plan.py`).

Whatever is chosen, the answer is the same up to float rounding: a wrong plan costs speed only.
Shapes follow PyTorch: x (N, C_in, H, W); conv weight (C_out, C_in/groups, kH, kW);
transposed-conv weight (C_in, C_out/groups, kH, kW). float32 or float64.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, NamedTuple

import numba
import numpy as np

from minigen.errors import ConfigError
from minigen.kernels import direct, im2col, plan, planar, pointwise, stride2, subpixel, winograd, winograd4
from minigen.kernels.convbase import (ConvGeometry, bias_grad, check_grad, conv2d_geometry, conv_multiply_adds,
                                      conv_output_size, conv_transpose2d_geometry, conv_transpose_output_size,
                                      map_batch_parts)
# the models share out their own work with these (pixelcnn.py, ddpm.py import them from here)
from minigen.kernels.convbase import SERIAL_MULTIPLY_ADDS, serial_below  # noqa: F401

__all__ = ["conv2d_forward", "conv2d_backward", "conv_transpose2d_forward", "conv_transpose2d_backward",
           "conv_output_size", "conv_transpose_output_size", "map_batch_parts", "forced"]

PARTS = ("forward", "input_grad", "weight_grad")


class Algorithm(NamedTuple):
    name: str
    takes: Callable[[ConvGeometry, str], bool]
    preferred: Callable[[ConvGeometry, str], bool]
    module: object


# The estimate plan takes the first row that takes and prefers a part, so the order matters there only.
ALGORITHMS = (
    Algorithm("planar", planar.takes, planar.preferred, planar),           # 3x3 s1, few channels
    Algorithm("direct", direct.takes, direct.preferred, direct),           # small 3x3 s1 (and mask B's 5 taps)
    Algorithm("stride2", stride2.takes, stride2.preferred, stride2),       # k4 s2 p1 on the space-to-depth image
    Algorithm("winograd", winograd.takes, winograd.preferred, winograd),   # larger 3x3 s1: fewer multiplies
    Algorithm("winograd4", winograd4.takes, winograd4.preferred, winograd4),   # F(4x4, 3x3): measured plan only
    Algorithm("pointwise", pointwise.takes, pointwise.preferred, pointwise),   # 1x1: products on the images
    Algorithm("subpixel", subpixel.takes, subpixel.preferred, subpixel),   # strided input gradients, channels growing
    Algorithm("im2col", im2col.takes, im2col.preferred, im2col),           # everything else
)
BY_NAME = {row.name: row for row in ALGORITHMS}
CHOICES = ("auto",) + tuple(BY_NAME)

_forced: list[str] = []              # the `forced` blocks' algorithms, innermost last (all threads see them)


@contextlib.contextmanager
def forced(name: str):
    """Within the block, every conv part that algorithm `name` takes runs on it (like MINIGEN_CONV,
    which the block overrides); "auto" lets the plan choose again."""
    _forced.append(_checked(name, "conv.forced"))
    try:
        yield
    finally:
        _forced.pop()


def _checked(name: str, source: str) -> str:
    if name not in CHOICES:
        raise ConfigError(f"{source}={name!r} is not a conv algorithm; expected one of {', '.join(CHOICES)}")
    return name


def forced_algorithm() -> str:
    """The algorithm forced by `forced` or else $MINIGEN_CONV, or "auto"."""
    if _forced:
        return _forced[-1]
    return _checked(os.environ.get("MINIGEN_CONV", "auto") or "auto", "MINIGEN_CONV")


def candidates(geo: ConvGeometry, part: str) -> list[str]:
    """The algorithms that take this part, in table order."""
    return [row.name for row in ALGORITHMS if row.takes(geo, part)]


def estimate(geo: ConvGeometry, part: str) -> str:
    """The estimate plan's algorithm: the first row that takes and prefers the part."""
    return next(row.name for row in ALGORITHMS if row.takes(geo, part) and row.preferred(geo, part))


def _plan_key(geo: ConvGeometry, part: str, dtype) -> str:
    return f"{part} {np.dtype(dtype).name} threads={numba.get_num_threads()} {geo}"


def algorithm_for(geo: ConvGeometry, part: str, dtype=np.float32) -> str | None:
    """The algorithm that will run this part: forced, estimated, or already measured; None when
    the measure plan has yet to time it."""
    names, chosen = candidates(geo, part), forced_algorithm()
    if chosen in names:
        return chosen
    if plan.mode() == "estimate" or len(names) == 1:
        return estimate(geo, part)
    known = plan.known(_plan_key(geo, part, dtype))
    return known if known in names else None


def run_part(geo: ConvGeometry, part: str, *arrays):
    """Run `part` of the conv `geo` on its arrays (forward: x, w, b; input_grad: g, w, b; weight_grad: g, x)
    with the algorithm the plan chooses."""
    def run(name):
        return getattr(BY_NAME[name].module, part)(*arrays, geo)

    def run_trial(name):                 # the same part on the first n images only (what the plan may time)
        images = 2 if part == "weight_grad" else 1          # the arrays with a batch axis come first
        trial = tuple(a[:n] if i < images else a for i, a in enumerate(arrays))
        return getattr(BY_NAME[name].module, part)(*trial, trial_geo)
    names, chosen = candidates(geo, part), forced_algorithm()
    if chosen in names:
        return run(chosen)
    work = conv_multiply_adds(geo)
    n = plan.trial_images(geo.image[0], work)
    trial_geo = geo._replace(image=(n,) + geo.image[1:])
    return plan.run(_plan_key(geo, part, arrays[0].dtype), names, estimate(geo, part), run, work,
                    (run_trial, conv_multiply_adds(trial_geo)))


def with_zero_tap(geo: ConvGeometry, w) -> ConvGeometry:
    """geo, noting whether a weight Winograd could take has a tap that is zero in every channel
    (Winograd would leak rounding through it: `winograd.has_zero_tap`)."""
    return geo._replace(zero_tap=winograd.has_zero_tap(w)) if winograd.takes(geo, "forward") else geo


# --- the entry points --------------------------------------------------------------------------------
def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, like torch.nn.functional.conv2d.

    x: (N, C_in, H, W); w: (C_out, C_in/groups, kH, kW); b: (C_out,) or None.
    stride, padding, dilation: int or (h, w). Returns (N, C_out, H_out, W_out), x's dtype.
    """
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    geo = with_zero_tap(conv2d_geometry("conv2d", x, w, b, stride, padding, dilation, groups), w)
    return run_part(geo, "forward", x, w, b)


def gradients(geo: ConvGeometry, grad_out, x, w, input_grad=True, weight_grad=True):
    """(dx, dw) of the conv `geo` (each None when not asked for). When im2col runs both, one pass
    over the batch regroups each chunk's output gradient once for the two products."""
    if input_grad and weight_grad and algorithm_for(geo, "input_grad", x.dtype) == "im2col" == \
            algorithm_for(geo, "weight_grad", x.dtype):
        return im2col.gradients(grad_out, x, w, geo)
    return (run_part(geo, "input_grad", grad_out, w, None) if input_grad else None,
            run_part(geo, "weight_grad", grad_out, x) if weight_grad else None)


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, groups=1,
                    input_grad=True, weight_grad=True):
    """Gradients of conv2d_forward: returns (dx, dw, db).

    grad_out: (N, C_out, H_out, W_out); x, w as in the forward. dx (dw) is None when
    input_grad (weight_grad) is False, which skips its work (e.g. for a first layer).
    db = grad_out summed over N, H, W, whether or not the forward had a bias.
    """
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    grad_out = np.ascontiguousarray(grad_out)
    geo = with_zero_tap(conv2d_geometry("conv2d_backward", x, w, None, stride, padding, dilation, groups), w)
    check_grad("conv2d_backward", grad_out, (x.shape[0], w.shape[0]) + geo.out_hw, x.dtype)
    return gradients(geo, grad_out, x, w, input_grad, weight_grad) + (bias_grad(grad_out),)


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
    """Transposed 2-D conv, like torch.nn.functional.conv_transpose2d.

    x: (N, C_in, H, W); w: (C_in, C_out/groups, kH, kW); b: (C_out,) or None.
    Returns (N, C_out, H_out, W_out) with H_out = (H-1)*stride - 2*padding + dilation*(kH-1)
    + output_padding + 1. It is the gradient of a conv2d w.r.t. that conv's input.
    """
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    geo = conv_transpose2d_geometry("conv_transpose2d", x, w, b, stride, padding, output_padding, dilation, groups)
    return run_part(with_zero_tap(geo, w), "input_grad", x, w, b)


def conv_transpose2d_backward(grad_out, x, w, stride=1, padding=0, output_padding=0, dilation=1, groups=1,
                              input_grad=True, weight_grad=True):
    """Gradients of conv_transpose2d_forward: returns (dx, dw, db) (dx/dw None when not asked for).

    grad_out: (N, C_out, H_out, W_out). dx is a plain conv of grad_out with w; dw is that
    conv's weight gradient with x in the role of its output gradient.
    """
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    grad_out = np.ascontiguousarray(grad_out)
    geo = with_zero_tap(conv_transpose2d_geometry("conv_transpose2d_backward", x, w, None, stride, padding,
                                                 output_padding, dilation, groups), w)
    check_grad("conv_transpose2d_backward", grad_out, geo.image, x.dtype)
    if input_grad and weight_grad and algorithm_for(geo, "forward", x.dtype) == "im2col" == \
            algorithm_for(geo, "weight_grad", x.dtype):         # both from one unfold of grad_out
        dx, dw = im2col.forward(grad_out, w, None, geo, weight_grad_of=x)
    else:
        dx = run_part(geo, "forward", grad_out, w, None) if input_grad else None
        dw = run_part(geo, "weight_grad", x, grad_out) if weight_grad else None
    return dx, dw, bias_grad(grad_out)
