"""Pooling and upsampling ops (kernels in `minigen.kernels.pool`).

x: (N, C, H, W). kernel_size, stride, padding: int or (h, w); stride defaults to kernel_size.
"""
from __future__ import annotations

from minigen import kernels as K
from minigen.tensor import Tensor, as_tensor, make_result, register_op

__all__ = ["max_pool2d", "avg_pool2d", "upsample_nearest"]


@register_op("max_pool2d")
def max_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Max over each window (padding never wins). The gradient goes to each window's argmax."""
    x = as_tensor(x)
    out, argmax = K.max_pool2d_forward(x.data, kernel_size, stride, padding)
    return make_result(out, (x,), lambda g: (K.max_pool2d_backward(g, argmax, x.shape),), "max_pool2d")


@register_op("avg_pool2d")
def avg_pool2d(x: Tensor, kernel_size, stride=None, padding=0) -> Tensor:
    """Mean over each window; zero padding counts towards the mean (PyTorch's default)."""
    x = as_tensor(x)
    out = K.avg_pool2d_forward(x.data, kernel_size, stride, padding)
    return make_result(out, (x,), lambda g: (K.avg_pool2d_backward(g, x.shape, kernel_size, stride, padding),),
                       "avg_pool2d")


@register_op("upsample_nearest")
def upsample_nearest(x: Tensor, scale_factor=2) -> Tensor:
    """Repeat each pixel into a scale x scale block: (N, C, H, W) -> (N, C, H*s, W*s)."""
    x = as_tensor(x)
    out = K.upsample_nearest_forward(x.data, scale_factor)
    return make_result(out, (x,), lambda g: (K.upsample_nearest_backward(g, scale_factor),), "upsample_nearest")
