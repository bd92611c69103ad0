"""Numerically stable losses and log-likelihoods.

Each takes a `reduction`: "mean" (over all elements), "sum", or "none"
(elementwise, or per example for cross-entropy).
The fused ones (binary and categorical cross-entropy with logits) have their
own short backward, because the fused gradient (sigmoid(x) - t, softmax - onehot)
is both cheaper and more stable than chaining the pieces.
"""
from __future__ import annotations

import math

import numpy as np

from minigen.errors import ConfigError, ShapeError
from minigen.ops.elementwise import _pair, _sigmoid, _softplus
from minigen.ops.reduce import _logsumexp_keep
from minigen.tensor import Tensor, as_tensor, make_result, register_op

__all__ = ["binary_cross_entropy_with_logits", "cross_entropy", "bernoulli_log_likelihood",
           "gaussian_log_likelihood", "mse_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(name: str, loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ConfigError(f"{name}: reduction must be one of {', '.join(map(repr, _REDUCTIONS))}, got {reduction!r}")


def _same_shape(name: str, a: Tensor, b: Tensor):
    if a.shape != b.shape:
        raise ShapeError(f"{name}: input shape {a.shape} and target shape {b.shape} must be equal")


@register_op("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(logits, targets, reduction: str = "mean") -> Tensor:
    """-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))] = softplus(x) - t x, per element.

    logits, targets: same shape; targets in [0, 1].
    """
    x, t = _pair("binary_cross_entropy_with_logits", logits, targets)
    _same_shape("binary_cross_entropy_with_logits", x, t)
    loss = _softplus(x.data) - t.data * x.data
    out = make_result(loss, (x, t), lambda g: (g * (_sigmoid(x.data) - t.data), -g * x.data),
                      "binary_cross_entropy_with_logits")
    return _reduce("binary_cross_entropy_with_logits", out, reduction)


@register_op("bernoulli_log_likelihood")
def bernoulli_log_likelihood(x, logits, reduction: str = "none") -> Tensor:
    """log p(x) for x in {0, 1} (or [0, 1]) under Bernoulli(sigmoid(logits)), per element."""
    return _reduce("bernoulli_log_likelihood", -binary_cross_entropy_with_logits(logits, x, "none"), reduction)


@register_op("cross_entropy")
def cross_entropy(logits: Tensor, labels, reduction: str = "mean") -> Tensor:
    """-log softmax(logits)[label]. logits: (N, C) float; labels: (N,) ints in [0, C)."""
    labels = np.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ShapeError(f"cross_entropy: expected logits (N, C) and labels (N,), got {logits.shape} "
                         f"and {labels.shape}")
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= logits.shape[1])):
        raise ShapeError(f"cross_entropy: labels must be integers in [0, {logits.shape[1]}), "
                         f"got dtype {labels.dtype} with range [{labels.min()}, {labels.max()}]")
    log_probs = logits.data - _logsumexp_keep(logits.data, (1,))
    rows = np.arange(len(labels))
    loss = -log_probs[rows, labels]

    def backward(g):
        grad = np.exp(log_probs)
        grad[rows, labels] -= 1
        return (grad * g[:, None],)
    return _reduce("cross_entropy", make_result(loss, (logits,), backward, "cross_entropy"), reduction)


@register_op("gaussian_log_likelihood")
def gaussian_log_likelihood(x, mean, logvar, reduction: str = "none") -> Tensor:
    """log N(x; mean, exp(logvar)), per element: -0.5 (log 2 pi + logvar + (x - mean)^2 / exp(logvar))."""
    x = as_tensor(x, mean if isinstance(mean, Tensor) else None)
    diff = x - mean
    out = -0.5 * (math.log(2 * math.pi) + logvar + diff * diff * (-logvar).exp())
    return _reduce("gaussian_log_likelihood", out, reduction)


@register_op("mse_loss")
def mse_loss(prediction, target, reduction: str = "mean") -> Tensor:
    """(prediction - target)^2, averaged by default."""
    p, t = _pair("mse_loss", prediction, target)
    _same_shape("mse_loss", p, t)
    diff = p - t
    return _reduce("mse_loss", diff * diff, reduction)
