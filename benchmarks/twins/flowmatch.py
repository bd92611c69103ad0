"""PyTorch twin of `minigen.models.flow_matching.FlowMatching`: DDPM's twin U-Net (benchmarks/twins/ddpm.py),
trained on the velocity with the same draws, sampled with the same Euler and Heun steps.

The path and its target are minigen's own NumPy code (`interpolate`, `velocity_target`), shared so both
models see bit-identical inputs; every random draw comes from the minigen Generator with the same calls in
the same order as the minigen model. The network, the loss, the optimiser, the EMA and the ODE steps'
arithmetic are PyTorch's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.twins import ddpm
from minigen.models.base import check_images
from minigen.models.flow_matching import TIME_SCALE, FlowMatching, interpolate, velocity_target
from minigen.random import resolve


class TorchFlowMatching(ddpm.TorchUNetModel):
    def __init__(self, config: dict):
        super().__init__(config, FlowMatching)


def build(model) -> TorchFlowMatching:
    return ddpm.build(model, TorchFlowMatching)


make_optimizers = ddpm.make_optimizers


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    """The draws of FlowMatching.train_step (without reflow), in its order: t, noise, then the label-drop coin."""
    x = check_images("twin flowmatch.train_step", x)
    generator = resolve(generator)
    m = torch_model
    t = generator.uniform((len(x),))
    x0, x1 = generator.normal(x.shape), 2 * x - 1
    labels = m.drop_labels(y, generator)
    predicted = m.net(torch.from_numpy(interpolate(x0, x1, t)), TIME_SCALE * t, labels)
    loss = F.mse_loss(predicted, torch.from_numpy(velocity_target(x0, x1)))
    return {"loss": loss.item(), "grad_norm": m.optimize_and_average(loss, optimizers["model"])}


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, method=None, steps=None, guidance=None):
    """Same options, defaults and draws as FlowMatching.sample: x0 ~ N(0, I), then Euler or Heun steps."""
    m, c = torch_model, torch_model.config
    method = c["sample_method"] if method is None else method
    steps = c["sample_steps"] if steps is None else int(steps)
    guidance = c["guidance"] if guidance is None else float(guidance)
    labels = np.asarray(labels, np.int64) if m.conditional else None
    x = torch.from_numpy(resolve(generator).normal((n, 1, 28, 28)))

    def velocity(z, t):
        return m.guided_output(z, np.full(n, TIME_SCALE * t), labels, guidance)

    dt = 1.0 / steps
    with m.ema_weights():
        for i in range(steps):
            k1 = velocity(x, i * dt)
            if method == "euler":
                x = x + dt * k1
            else:
                x = x + dt / 2 * (k1 + velocity(x + dt * k1, (i + 1) * dt))
    return ((x + 1) / 2).clamp(0, 1).numpy()


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    """FlowMatching.evaluate's flow-matching loss, with the same draws (the likelihood is not twinned)."""
    m, generator = torch_model, resolve(generator)

    def velocity_loss(x1, labels):
        t, x0 = generator.uniform((len(x1),)), generator.normal(x1.shape)
        out = m.net(torch.from_numpy(interpolate(x0, x1, t)), TIME_SCALE * t, labels)
        return F.mse_loss(out, torch.from_numpy(velocity_target(x0, x1))).item()
    return {"loss": m.test_loss("twin flowmatch.evaluate", x, y, velocity_loss)}
