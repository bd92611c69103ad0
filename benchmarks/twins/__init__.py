"""PyTorch twins of the minigen model families, for benchmarks and cross-checks only.

PyTorch is never a dependency of minigen: these modules import torch, and only
`benchmarks/` imports them. Each `benchmarks/twins/<family>.py` defines:

    build(model) -> torch.nn.Module
        The identical architecture, with the minigen model's weights copied in
        (parameter names match minigen's `named_parameters()`, so the copy is by name).
    make_optimizers(torch_model, config) -> dict[str, torch.optim.Optimizer]
        The same optimisers and hyper-parameters as the minigen model's make_optimizers().
    train_step(torch_model, optimizers, x, y, generator) -> dict[str, float]
        One step on the NumPy batch x: (N, 1, 28, 28) float32 in [0, 1], y: (N,) int64; the
        randomness (binarization, noise, timesteps) drawn from the *minigen* Generator with the
        same calls as the minigen model, so both see identical inputs.
    sample(torch_model, n, labels, generator, **options) -> np.ndarray (n, 1, 28, 28) in [0, 1]
    evaluate(torch_model, x, y, generator) -> dict[str, float]   (same metrics as minigen's evaluate)
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["copy_weights", "optimize"]


def copy_weights(twin: torch.nn.Module, model, ignore=()) -> torch.nn.Module:
    """Copy the minigen model's parameters and buffers into the twin, by name; returns the twin.

    The twin's state_dict must hold exactly the minigen model's names (a KeyError lists the ones
    that differ), except those ending in one of `ignore`: torch-only buffers such as BatchNorm's
    num_batches_tracked, which have no minigen counterpart and are left as they are."""
    state = model.state_dict()
    own = {name: value for name, value in twin.state_dict().items() if not name.endswith(tuple(ignore))}
    if set(own) != set(state):
        raise KeyError(f"twin and minigen parameter names differ: {sorted(set(own) ^ set(state))}")
    with torch.no_grad():
        for name, value in own.items():
            value.copy_(torch.from_numpy(np.asarray(state[name])))
    return twin


def optimize(loss, optimizer: torch.optim.Optimizer, grad_clip: float | None = None) -> float:
    """The twin of `GenerativeModel.optimize`: zero the gradients, backpropagate, clip the gradients of
    the optimiser's parameters to norm grad_clip (None or 0: no clipping), step. Returns the norm before
    clipping."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    optimizer.step()
    return grad_norm.item()
