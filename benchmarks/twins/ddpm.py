"""PyTorch twin of `minigen.models.ddpm.DDPM`: the same U-Net under the same names, the same draws.

The fixed parts that are not the network (the noise schedule, `q_sample`, the sinusoidal time
features) are minigen's own NumPy code, shared so both models see bit-identical inputs; every
random draw (t, noise, label drops, x_T, sampling noise) comes from the minigen Generator with
the same calls in the same order as the minigen model. The network, the loss, the optimiser,
the EMA and the sampling arithmetic are PyTorch's.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.models.base import check_images
from minigen.models.ddpm import DDPM, NoiseSchedule, timestep_embedding
from minigen.optim import ema_decay_at
from minigen.random import resolve


class ResBlock(nn.Module):
    def __init__(self, in_ch, out_ch, emb_dim, groups):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(emb)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UpBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, channels, time_dim, groups, num_classes):
        super().__init__()
        emb_dim = 2 * time_dim
        self.time_dim = time_dim
        self.time_fc1 = nn.Linear(time_dim, emb_dim)
        self.time_fc2 = nn.Linear(emb_dim, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(1, channels[0], 3, padding=1)
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(ResBlock(prev, c, emb_dim, groups))
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            prev = c
        self.mid = ResBlock(prev, prev, emb_dim, groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.up.append(ResBlock(prev + channels[i], channels[i], emb_dim, groups))
            prev = channels[i]
            if i > 0:
                self.upsample.append(UpBlock(prev))
        self.norm_out = nn.GroupNorm(groups, prev)
        self.conv_out = nn.Conv2d(prev, 1, 3, padding=1)

    def forward(self, x, t, labels=None):
        emb = self.time_fc2(F.silu(self.time_fc1(torch.from_numpy(timestep_embedding(t, self.time_dim)))))
        if self.label_embed is not None:
            emb = emb + self.label_embed(torch.as_tensor(labels))
        emb = F.silu(emb)
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(F.silu(self.norm_out(h)))


class TorchUNetModel(nn.Module):
    """What the DDPM and flow-matching twins share (as minigen's UNetModel): the U-Net, its EMA, guidance."""

    def __init__(self, config: dict, family):
        super().__init__()
        self.config = c = {**family.default_config(), **config}
        self.conditional, self.num_classes = bool(c["conditional"]), int(c["num_classes"])
        self.net = UNet([int(ch) for ch in c["channels"]], int(c["time_dim"]), int(c["groups"]),
                        self.num_classes if self.conditional else None)
        # the EMA: a plain dict, so it is not part of the state_dict (as in minigen: it is extra state)
        self.ema_shadow = {name: p.detach().clone() for name, p in self.net.named_parameters()}
        self.ema_decay = float(c["ema_decay"])

    @contextlib.contextmanager
    def ema_weights(self):
        saved = {name: p.detach().clone() for name, p in self.net.named_parameters()}
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                p.copy_(self.ema_shadow[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.net.named_parameters():
                    p.copy_(saved[name])

    @torch.no_grad()
    def test_loss(self, where: str, x, y, batch_loss) -> float:
        """As UNetModel.test_loss: batch_loss(x0 in [-1, 1], labels or None) -> the batch's mean squared
        error, averaged over the first eval_examples images, with the EMA weights."""
        c = self.config
        x = check_images(where, x)[: c["eval_examples"]]
        labels = np.asarray(y, np.int64)[: len(x)] if self.conditional else None
        total, batch = 0.0, int(c["batch_size"])
        with self.ema_weights():
            for start in range(0, len(x), batch):
                x0 = 2 * x[start:start + batch] - 1
                total += batch_loss(x0, None if labels is None else labels[start:start + batch]) * len(x0)
        return total / max(len(x), 1)

    def drop_labels(self, y, generator):
        """As UNetModel.drop_labels: one uniform per label (none when unconditional)."""
        if not self.conditional:
            return None
        drop = generator.uniform((len(y),)) < self.config["p_uncond"]
        return np.where(drop, self.num_classes, np.asarray(y, np.int64))

    def optimize_and_average(self, loss, optimizer) -> float:
        """As UNetModel.optimize_and_average: the step, then the EMA with its warm-up."""
        grad_norm = optimize(loss, optimizer, self.config["grad_clip"])
        step = optimizer.state[next(iter(self.net.parameters()))]["step"].item()
        decay = ema_decay_at(step, self.ema_decay)
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                self.ema_shadow[name].mul_(decay).add_(p, alpha=1 - decay)
        return grad_norm

    def guided_output(self, x, t: np.ndarray, labels, guidance: float):
        """As UNetModel.guided_output: one pass over a doubled batch when guided."""
        n = len(x)
        if labels is None or guidance == 1:
            return self.net(x, t, labels)
        both = self.net(torch.cat([x, x]), np.concatenate([t, t]),
                        np.concatenate([labels, np.full(n, self.num_classes)]))
        cond, uncond = both[:n], both[n:]
        return uncond + guidance * (cond - uncond)


class TorchDDPM(TorchUNetModel):
    def __init__(self, config: dict):
        super().__init__(config, DDPM)
        c = self.config
        self.schedule = NoiseSchedule(c["schedule"], int(c["T"]), c["beta_start"], c["beta_end"])


def build(model, twin_class=TorchDDPM):
    """The twin (TorchDDPM, or another TorchUNetModel) of a minigen U-Net model, weights and EMA copied."""
    twin = copy_weights(twin_class(model.config), model)
    with torch.no_grad():
        for name, value in twin.ema_shadow.items():
            value.copy_(torch.from_numpy(model.ema.shadow[name]))
    return twin


def make_optimizers(torch_model, config) -> dict:
    return {"model": torch.optim.Adam(torch_model.net.parameters(), lr=config["lr"])}


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    """The draws of DDPM.train_step, in its order: t, noise, then (conditional) the label-drop coin."""
    x = check_images("twin ddpm.train_step", x)
    generator = resolve(generator)
    m, c = torch_model, torch_model.config
    t = generator.integers(0, m.schedule.T, (len(x),))
    noise = generator.normal(x.shape)
    xt = m.schedule.q_sample(2 * x - 1, t, noise)
    labels = m.drop_labels(y, generator)
    target = noise if c["prediction"] == "eps" else m.schedule.velocity(2 * x - 1, noise, t)
    loss = F.mse_loss(m.net(torch.from_numpy(xt), t, labels), torch.from_numpy(target))
    return {"loss": loss.item(), "grad_norm": m.optimize_and_average(loss, optimizers["model"])}


def _eps_from_output(m, x, out, t):
    """The network output as the noise: itself, or converted from v (as NoiseSchedule.eps_from_velocity)."""
    if m.config["prediction"] == "eps":
        return out
    ab = torch.from_numpy(m.schedule.alpha_bar[np.atleast_1d(t)].astype(np.float32)).reshape(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x + ab.sqrt() * out


def _predict_noise(m, x, t, labels, guidance):
    return _eps_from_output(m, x, m.guided_output(x, np.full(len(x), t), labels, guidance), t)


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, method=None, steps=None, eta=None, guidance=None):
    """Same options, defaults, plan and draws as DDPM.sample (the plan comes from the minigen class)."""
    m, c = torch_model, torch_model.config
    method = c["sample_method"] if method is None else method
    steps = (c["sample_steps"] if method == "ddim" else None) if steps is None else steps
    eta = c["eta"] if eta is None else float(eta)
    guidance = c["guidance"] if guidance is None else float(guidance)
    labels = np.asarray(labels, np.int64) if m.conditional else None
    plan = m.schedule.sampling_plan(method, steps)
    generator = resolve(generator)
    sched = m.schedule
    x = torch.from_numpy(generator.normal((n, 1, 28, 28)))
    with m.ema_weights():
        for t, t_prev in plan:
            eps = _predict_noise(m, x, t, labels, guidance)
            ab = float(sched.alpha_bar[t])
            x0 = (x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
            if c["clip_denoised"]:
                x0 = x0.clamp(-1, 1)
            if method == "ancestral":
                x = float(sched.posterior_c1[t]) * x0 + float(sched.posterior_c2[t]) * x
                if t > 0:
                    x = x + math.sqrt(sched.posterior_variance[t]) * torch.from_numpy(generator.normal(tuple(x.shape)))
            else:
                ab_prev = float(sched.alpha_bar[t_prev]) if t_prev >= 0 else 1.0
                if c["clip_denoised"]:
                    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
                sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma ** 2, 0)) * eps
                if sigma > 0:
                    x = x + sigma * torch.from_numpy(generator.normal(tuple(x.shape)))
    return ((x + 1) / 2).clamp(0, 1).numpy()


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    """DDPM.evaluate's denoising loss, with the same draws."""
    m, generator = torch_model, resolve(generator)

    def noise_loss(x0, labels):
        t = generator.integers(0, m.schedule.T, (len(x0),))
        noise = generator.normal(x0.shape)
        xt = torch.from_numpy(m.schedule.q_sample(x0, t, noise))
        return F.mse_loss(_eps_from_output(m, xt, m.net(xt, t, labels), t), torch.from_numpy(noise)).item()
    return {"loss": m.test_loss("twin ddpm.evaluate", x, y, noise_loss)}
