"""Optimisers (SGD, Adam, AdamW), gradient clipping and a weight EMA.

Updates follow PyTorch's formulas exactly, so a minigen model and its PyTorch
twin trained from the same start take the same steps. Updates are written
in place into each parameter's array (no new graph, no new allocations for the
parameters themselves).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from minigen.errors import CheckpointError

__all__ = ["SGD", "Adam", "AdamW", "clip_grad_norm", "EMA", "ema_decay_at", "lr_factor", "LR_DECAYS"]


class Optimizer:
    """Holds the parameters and per-parameter state arrays (momentum, moments)."""

    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.lr = lr
        self.step_count = 0
        self.state: dict[str, list[np.ndarray]] = {}   # e.g. {"m": [...], "v": [...]}, one array per param
        self._scratch_flat: np.ndarray | None = None    # `_scratch`'s buffer (not state: not saved)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _buffers(self, name: str) -> list[np.ndarray]:
        if name not in self.state:
            self.state[name] = [np.zeros_like(p.data) for p in self.params]
        return self.state[name]

    def _scratch(self, param: np.ndarray) -> np.ndarray:
        """A scratch array of param's shape and dtype, one buffer shared by all parameters (not
        state: checkpoints do not hold it). Updates written with NumPy's `out=` into it allocate
        nothing (docs/measurements.md#adam-scratch)."""
        flat = self._scratch_flat
        if flat is None or flat.size < param.size or flat.dtype != param.dtype:
            flat = self._scratch_flat = np.empty(max(p.data.size for p in self.params), param.dtype)
        return flat[:param.size].reshape(param.shape)

    def step(self) -> None:
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p.data, p.grad)

    def _update(self, i: int, param: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {"type": type(self).__name__, "lr": self.lr, "step_count": self.step_count,
                "state": {name: {str(i): a.copy() for i, a in enumerate(arrays)} for name, arrays in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state.get("type") != type(self).__name__:
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: the state is from a {state.get('type')} optimiser")
        arrays = {}
        for name, per_param in state["state"].items():
            if len(per_param) != len(self.params):
                raise CheckpointError(f"{type(self).__name__}.load_state_dict: state '{name}' has {len(per_param)} "
                                      f"entries for {len(self.params)} parameters")
            arrays[name] = [np.array(per_param[str(i)], dtype=p.dtype) for i, p in enumerate(self.params)]
            for a, p in zip(arrays[name], self.params):
                if a.shape != p.shape:
                    raise CheckpointError(f"{type(self).__name__}.load_state_dict: state '{name}' shape {a.shape} "
                                          f"does not match parameter shape {p.shape}")
        self.lr, self.step_count, self.state = float(state["lr"]), int(state["step_count"]), arrays


class SGD(Optimizer):
    """p -= lr * v, with v = momentum * v + (g + weight_decay * p)."""

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.momentum, self.weight_decay = momentum, weight_decay

    def _update(self, i, param, grad):
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        if self.momentum:
            velocity = self._buffers("momentum")[i]
            if self.step_count == 1:
                velocity[...] = grad            # PyTorch starts the buffer at the first gradient
            else:
                velocity *= self.momentum
                velocity += grad
            grad = velocity
        param -= self.lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba): moments m, v of the gradient, bias-corrected. weight_decay is L2 added to g."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay = tuple(betas), eps, weight_decay

    def _update(self, i, param, grad):
        # BEGIN SOLUTION optim: weight decay (decoupled or L2), moments m and v, bias correction; all in place
        beta1, beta2 = self.betas
        if self.weight_decay and self.decoupled:
            param *= 1 - self.lr * self.weight_decay          # AdamW: shrink the weights directly
        elif self.weight_decay:
            grad = grad + self.weight_decay * param
        m, v = self._buffers("m")[i], self._buffers("v")[i]
        tmp = self._scratch(param)      # one buffer for every temporary: no new arrays (see _scratch)
        np.multiply(grad, 1 - beta1, out=tmp)
        m *= beta1
        m += tmp                                             # m = beta1 m + (1 - beta1) g
        np.multiply(grad, 1 - beta2, out=tmp)
        tmp *= grad
        v *= beta2
        v += tmp                                             # v = beta2 v + (1 - beta2) g^2
        step_size = self.lr / (1 - beta1 ** self.step_count)
        np.sqrt(v, out=tmp)
        tmp /= math.sqrt(1 - beta2 ** self.step_count)
        tmp += self.eps                                      # the bias-corrected denominator
        np.divide(m, tmp, out=tmp)
        tmp *= step_size
        param -= tmp
        # END SOLUTION


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter)."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so their joint L2 norm is at most max_norm; returns the norm before clipping."""
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * scale
    return total


class EMA:
    """An exponential moving average of a model's weights: shadow = decay * shadow + (1 - decay) * w.

    Diffusion models sample with the EMA weights: they are a smoother, better model than the last step's.
    buffers=True averages the buffers too (BatchNorm's running statistics, which belong to the weights
    that made them: the averaged weights get statistics averaged the same way).
    """

    def __init__(self, model, decay: float = 0.999, buffers: bool = False):
        if not 0 < decay < 1:
            raise ValueError(f"EMA: decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.buffers = buffers
        self.shadow = {name: p.data.copy() for name, p in self._averaged(model)}

    def _averaged(self, model):
        """(name, Parameter or Buffer) of what this EMA averages."""
        yield from model.named_parameters()
        if self.buffers:
            yield from model.named_buffers()

    def update(self, model) -> None:
        for name, p in self._averaged(model):
            s = self.shadow[name]
            s *= self.decay
            s += (1 - self.decay) * p.data

    def copy_to(self, model) -> None:
        """Load the averaged weights into `model` (buffers too if this EMA averages them)."""
        for name, p in self._averaged(model):
            p.data = self.shadow[name].copy()

    @contextlib.contextmanager
    def applied_to(self, model):
        """Inside the block `model` holds the averaged weights; its own come back after."""
        saved = [(p, p.data) for _, p in self._averaged(model)]
        self.copy_to(model)
        try:
            yield
        finally:
            for p, data in saved:
                p.data = data

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": {k: v.copy() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if set(state["shadow"]) != set(self.shadow):
            raise CheckpointError("EMA.load_state_dict: parameter names differ from the model's")
        self.decay = float(state["decay"])
        self.shadow = {k: np.array(v, dtype=np.float32) for k, v in state["shadow"].items()}


def ema_decay_at(step: int, max_decay: float) -> float:
    """The EMA decay to use after `step` optimiser steps: min(max_decay, (1 + step) / (10 + step)).

    The warm-up of common DDPM practice: early on the average spans roughly all steps so far, so a
    short run's EMA is an average of trained weights, not (with a fixed 0.999) mostly the random
    initial ones; later the decay settles at max_decay."""
    return min(max_decay, (1 + step) / (10 + step))


LR_DECAYS = ("none", "cosine")


def lr_factor(step: int, warmup_steps: int, progress: float, decay: str) -> float:
    """The multiplier of the base learning rate for optimiser step `step` (0-based).

    Warm-up: the factor rises linearly, (step + 1) / warmup_steps, over the first warmup_steps steps,
    because Adam's first updates are full-size steps along moment estimates made from a handful of
    gradients. Decay: "none" keeps the factor at 1; "cosine" multiplies it by (1 + cos(pi * progress)) / 2,
    falling from 1 at progress 0 to 0 at progress 1, where progress in [0, 1] is how much of the run is
    done (elapsed / budget seconds for a time-budgeted run, so the schedule ends with the budget)."""
    if decay not in LR_DECAYS:
        raise ValueError(f"lr_factor: decay must be one of {', '.join(LR_DECAYS)}, got {decay!r}")
    factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    if decay == "cosine":
        factor *= 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return factor
