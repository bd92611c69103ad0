"""Winograd F(4x4, 3x3) as a row of the conv plan: winograd.py's fast path with 6x6 input tiles
overlapping by 2 and 4x4 output tiles, 36 products per tile instead of F(2x2, 3x3)'s 16 per 2x2
tile (2.25 multiplies per output pixel against 4), at the points (0, +-2/3, +-3/2, inf), chosen for
float32 error (winograd.F4_3; docs/measurements.md#winograd-float32-error).

It takes what F(2x2, 3x3) takes (`winograd.takes`: 3x3, stride 1, padding 1, no zero tap). Its
transforms are generated from the matrices like F(2x2, 3x3)'s; so built it measured faster than
F(2x2, 3x3) and im2col at 64->64 channels, 14x14 and 28x28, slower at 7x7
(docs/measurements.md#winograd-tile-size). The estimate plan does not prefer it yet (one channel pair
measured, and its transforms compile in every process); the measured plan times it among the others.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3); b (C_out,) or None -> (N, C_out, H, W).
"""
from __future__ import annotations

from minigen.kernels.winograd import F4_3, takes, transform_forward, transform_input_grad, transform_weight_grad

__all__ = ["takes", "preferred", "forward", "input_grad", "weight_grad"]


def preferred(geo, part: str) -> bool:
    """Never by the estimate yet (docs/measurements.md#winograd-tile-size)."""
    return False


def forward(x, w, b, geo):
    return transform_forward(x, w, b, F4_3)


def input_grad(g, w, b, geo):
    return transform_input_grad(g, w, b, F4_3)


def weight_grad(g, x, geo):
    return transform_weight_grad(g, x, F4_3)
