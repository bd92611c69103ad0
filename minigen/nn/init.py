"""Weight initialisers. Each returns a float32 NumPy array drawn from the given generator."""
from __future__ import annotations

import math

import numpy as np

from minigen.random import resolve

__all__ = ["fan_in_and_out", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal",
           "normal", "zeros"]


def fan_in_and_out(shape) -> tuple[int, int]:
    """Linear weight (out, in); conv weight (out, in, kH, kW): fan = channels x kernel area."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def kaiming_uniform(shape, gain: float = 1 / math.sqrt(3), generator=None) -> np.ndarray:
    """U(-b, b), b = gain * sqrt(3 / fan_in). The default gain gives PyTorch's default Linear/Conv init."""
    bound = gain * math.sqrt(3.0 / fan_in_and_out(shape)[0])
    return resolve(generator).uniform(shape, -bound, bound)


def kaiming_normal(shape, gain: float = math.sqrt(2), generator=None) -> np.ndarray:
    """N(0, (gain / sqrt(fan_in))^2); gain sqrt(2) suits ReLU networks (He et al. 2015)."""
    return resolve(generator).normal(shape, std=gain / math.sqrt(fan_in_and_out(shape)[0]))


def xavier_uniform(shape, gain: float = 1.0, generator=None) -> np.ndarray:
    fan_in, fan_out = fan_in_and_out(shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return resolve(generator).uniform(shape, -bound, bound)


def xavier_normal(shape, gain: float = 1.0, generator=None) -> np.ndarray:
    fan_in, fan_out = fan_in_and_out(shape)
    return resolve(generator).normal(shape, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))


def normal(shape, std: float = 0.02, generator=None) -> np.ndarray:
    return resolve(generator).normal(shape, std=std)


def zeros(shape) -> np.ndarray:
    return np.zeros(shape, np.float32)
