"""Convolution ops: conv2d, conv_transpose2d and PixelCNN's masked (causal) conv2d.

The arithmetic lives in `minigen.kernels`: `kernels/conv.py` checks the arguments and sends
each part of a conv (forward, input gradient, weight gradient) to an algorithm of its table
(direct loops, planar loops, space-to-depth stride-2 loops, Winograd, 1x1 products, sub-pixel
phases, im2col + BLAS), the fastest measured on this machine (`kernels/plan.py`); these ops
wrap it for autograd. Backward skips the input or weight gradient when that parent does not
need one (e.g. the first layer's input is data).
"""
from __future__ import annotations

import numpy as np

from minigen import kernels as K
from minigen.errors import ShapeError
from minigen.kernels.convbase import pair
from minigen.tensor import Tensor, as_tensor, make_result, register_op

__all__ = ["conv2d", "conv_transpose2d", "masked_conv2d", "causal_mask"]


def _parents(x, w, b):
    """The op's inputs as tensors; the bias only if there is one."""
    w = as_tensor(w)
    x = as_tensor(x, like=w)
    return (x, w) if b is None else (x, w, as_tensor(b, like=w))


def _with_bias(parents, dx, dw, db):
    return (dx, dw) if len(parents) == 2 else (dx, dw, db)


@register_op("conv2d")
def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, padding=0, dilation=1, groups=1,
           relu: bool = False) -> Tensor:
    """2-D cross-correlation like torch.nn.functional.conv2d; with relu=True, relu(conv2d(...)).

    x: (N, C_in, H, W); w: (C_out, C_in/groups, kH, kW); b: (C_out,) or None.
    stride, padding, dilation: int or (h, w). Returns (N, C_out, H_out, W_out).

    Why fuse the ReLU: as two ops, the graph keeps the conv's output alive until the backward (the
    ReLU op holds it as its input) though no backward reads it; fused, the ReLU overwrites it in
    place and the backward takes its mask from the output. The conv flow's training step held
    about a third less memory (benchmarks/run.py --memory).
    """
    parents = _parents(x, w, b)
    x, w = parents[:2]
    bias = parents[2].data if b is not None else None
    out = K.conv2d_forward(x.data, w.data, bias, stride, padding, dilation, groups)
    if relu:
        np.maximum(out, 0, out=out)

    def backward(g):
        if relu:
            g = g * (out > 0)
        dx, dw, db = K.conv2d_backward(g, x.data, w.data, stride, padding, dilation, groups,
                                       input_grad=x.requires_grad, weight_grad=w.requires_grad)
        return _with_bias(parents, dx, dw, db)
    return make_result(out, parents, backward, "conv2d")


@register_op("conv_transpose2d")
def conv_transpose2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride=1, padding=0, output_padding=0,
                     dilation=1, groups=1) -> Tensor:
    """Transposed conv (the gradient of conv2d w.r.t. its input) like torch's conv_transpose2d.

    x: (N, C_in, H, W); w: (C_in, C_out/groups, kH, kW); b: (C_out,) or None.
    Returns (N, C_out, (H-1)*stride - 2*padding + dilation*(kH-1) + output_padding + 1, ...).
    """
    parents = _parents(x, w, b)
    x, w = parents[:2]
    bias = parents[2].data if b is not None else None
    args = stride, padding, output_padding, dilation, groups
    out = K.conv_transpose2d_forward(x.data, w.data, bias, *args)

    def backward(g):
        dx, dw, db = K.conv_transpose2d_backward(g, x.data, w.data, *args,
                                                 input_grad=x.requires_grad, weight_grad=w.requires_grad)
        return _with_bias(parents, dx, dw, db)
    return make_result(out, parents, backward, "conv_transpose2d")


def causal_mask(kh: int, kw: int, mask_type: str, dtype=np.float32) -> np.ndarray:
    """(kh, kw) 0/1 raster-order mask around the centre tap (kh//2, kw//2): 1 on the rows
    above the centre and left of it on its row; the centre itself too for type "B"
    (type "A", for a first layer, must not see the pixel it predicts)."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"causal_mask: mask_type must be 'A' or 'B', got {mask_type!r}")
    # BEGIN SOLUTION pixelcnn: ones on the rows above the centre and left of it on its row; centre too for "B"
    mask = np.zeros((kh, kw), dtype)
    ch, cw = kh // 2, kw // 2
    mask[:ch] = 1
    mask[ch, :cw + (mask_type == "B")] = 1
    return mask
    # END SOLUTION


@register_op("masked_conv2d")
def masked_conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, mask_type: str = "A", stride=1,
                  padding=None, dilation=1) -> Tensor:
    """A conv2d whose weight is multiplied by `causal_mask` inside the op, so output pixel
    (i, j) depends only on input pixels before (i, j) in raster order (type "A") or up to
    and including it (type "B"). The masked-out weights get zero gradient.

    x: (N, C_in, H, W); w: (C_out, C_in, kH, kW); padding defaults to dilation * (k // 2),
    which keeps H and W for odd kernels (and is what makes "before" line up).
    """
    parents = _parents(x, w, b)
    x, w = parents[:2]
    if w.ndim != 4:
        raise ShapeError(f"masked_conv2d: weight must be 4-D (C_out, C_in, kH, kW), got shape {w.shape}")
    kh, kw = w.shape[2:]
    if padding is None:
        dh, dw_ = pair(dilation, "masked_conv2d", "dilation")
        padding = (dh * (kh // 2), dw_ * (kw // 2))
    mask = causal_mask(kh, kw, mask_type, w.dtype)
    bias = parents[2].data if b is not None else None
    # the kernel reads only the taps the mask keeps (about half): see minigen/kernels/masked.py
    out = K.masked_conv2d_forward(x.data, w.data, mask, bias, stride, padding, dilation)

    def backward(g):
        dx, dw, db = K.masked_conv2d_backward(g, x.data, w.data, mask, stride, padding, dilation,
                                              input_grad=x.requires_grad, weight_grad=w.requires_grad)
        return _with_bias(parents, dx, dw, db)
    return make_result(out, parents, backward, "masked_conv2d")
