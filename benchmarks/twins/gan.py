"""PyTorch twin of `minigen.models.gan.GAN`: the same two networks under the same names, the same draws.

z is drawn from the minigen Generator with the same call as GAN.train_step / GAN.sample, so both
models see identical noise; networks, losses and Adam are PyTorch's. The training step mirrors
minigen's exactly: G's output once, D on real then on the detached fake, then G's step through D
with D's weights frozen. The knobs mirror minigen's: the hinge loss, D's own lr, spectral normalization
(`spectral_normalize`, minigen's power iteration step for step, u a buffer copied from minigen) with or
without D's BatchNorm, and the EMA of G (its shadow starts from the copied weights, averages G's
parameters and BatchNorm statistics with minigen's warm-up, and samples).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.models.base import check_images
from minigen.models.gan import GAN, _eval_mode, distinct_digits
from minigen.optim import ema_decay_at
from minigen.random import resolve


def _unit(v):
    return v / (v.norm() + 1e-12)


def spectral_normalize(weight, u, update: bool):
    """minigen.nn.spectral_normalize: weight / (u^T W v), u updated in place by one power-iteration step
    first when `update`; gradients through sigma with u and v held constant."""
    w = weight.detach().reshape(len(weight), -1)
    if update:
        u.copy_(_unit(w @ _unit(w.T @ u)))
    v = _unit(w.T @ u)
    return weight / (weight.reshape(w.shape) * torch.outer(u.clone(), v)).sum()


class SNConv2d(nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weight_u", torch.zeros(self.out_channels))

    def forward(self, x):
        return self._conv_forward(x, spectral_normalize(self.weight, self.weight_u, self.training), self.bias)


class SNLinear(nn.Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("weight_u", torch.zeros(self.out_features))

    def forward(self, x):
        return F.linear(x, spectral_normalize(self.weight, self.weight_u, self.training), self.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, latent_dim, num_classes, label_dim, width):
        super().__init__()
        self.width = width
        self.label_embed = nn.Embedding(num_classes, label_dim) if num_classes else None
        self.fc = nn.Linear(latent_dim + (label_dim if num_classes else 0), 2 * width * 7 * 7, bias=False)
        self.bn0 = nn.BatchNorm2d(2 * width)
        self.deconv1 = nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.deconv2 = nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1)

    def forward(self, z, labels=None):
        if self.label_embed is not None:
            z = torch.cat([z, self.label_embed(torch.as_tensor(labels))], dim=1)
        h = F.relu(self.bn0(self.fc(z).reshape(len(z), 2 * self.width, 7, 7)))
        h = F.relu(self.bn1(self.deconv1(h)))
        return torch.tanh(self.deconv2(h))


class DCGANDiscriminator(nn.Module):
    def __init__(self, num_classes, width, spectral_norm=False, batchnorm=True):
        super().__init__()
        conv, linear = (SNConv2d, SNLinear) if spectral_norm else (nn.Conv2d, nn.Linear)
        self.label_embed = nn.Embedding(num_classes, 28 * 28) if num_classes else None
        self.conv1 = conv(2 if num_classes else 1, width, 4, stride=2, padding=1)
        self.conv2 = conv(width, 2 * width, 4, stride=2, padding=1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(2 * width) if batchnorm else None
        self.fc = linear(2 * width * 7 * 7, 1)

    def forward(self, x, labels=None):
        if self.label_embed is not None:
            x = torch.cat([x, self.label_embed(torch.as_tensor(labels)).reshape(len(x), 1, 28, 28)], dim=1)
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = self.conv2(h)
        h = F.leaky_relu(h if self.bn2 is None else self.bn2(h), 0.2)
        return self.fc(h.flatten(1)).reshape(-1)


class TorchGAN(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = c = {**GAN.default_config(), **config}
        self.conditional, self.latent_dim = bool(c["conditional"]), int(c["latent_dim"])
        classes = int(c["num_classes"]) if self.conditional else None
        self.G = DCGANGenerator(self.latent_dim, classes, int(c["label_dim"]), int(c["width"]))
        self.D = DCGANDiscriminator(classes, int(c["width"]), bool(c["spectral_norm"]), bool(c["d_batchnorm"]))
        self.ema_decay = float(c["ema_decay"])
        self.ema = None          # G's averaged state (parameters and BatchNorm statistics), set by build
        self.g_steps = 0

    def update_ema(self) -> None:
        """minigen's EMA update after G's step, with the same warm-up."""
        decay = ema_decay_at(self.g_steps, self.ema_decay)
        with torch.no_grad():
            for name, value in self.G.state_dict().items():
                if name in self.ema:
                    self.ema[name].mul_(decay).add_((1 - decay) * value)

    @contextlib.contextmanager
    def averaged_generator(self):
        """G with the EMA's state inside the block (G's own when there is no EMA)."""
        if self.ema is None:
            yield
            return
        own = {k: v.clone() for k, v in self.G.state_dict().items()}
        self.G.load_state_dict(self.ema, strict=False)
        try:
            yield
        finally:
            self.G.load_state_dict(own)


def build(model) -> TorchGAN:
    """Weights and BatchNorm running statistics copied by name (torch's num_batches_tracked has no
    minigen counterpart: it only matters for momentum=None, which neither uses)."""
    twin = copy_weights(TorchGAN(model.config), model, ignore=("num_batches_tracked",))
    if twin.ema_decay:
        twin.ema = {k: v.clone() for k, v in twin.G.state_dict().items() if not k.endswith("num_batches_tracked")}
    return twin


def make_optimizers(torch_model, config) -> dict:
    betas = (config["beta1"], config["beta2"])
    return {"generator": torch.optim.Adam(torch_model.G.parameters(), lr=config["lr"], betas=betas),
            "discriminator": torch.optim.Adam(torch_model.D.parameters(), lr=config["lr_d"] or config["lr"],
                                              betas=betas)}


def _labels(m, y, n):
    return np.asarray(y, np.int64)[:n] if m.conditional else None


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    x = check_images("twin gan.train_step", x)
    m = torch_model
    m.train()
    labels = _labels(m, y, len(x))
    z = torch.from_numpy(resolve(generator).normal((len(x), m.latent_dim)))
    fake = m.G(z, labels)
    real = torch.from_numpy(2 * x - 1)

    logits_real = m.D(real, labels)
    logits_fake = m.D(fake.detach(), labels)
    hinge = m.config["loss"] == "hinge"
    if hinge:
        d_loss = F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()
    else:
        d_loss = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                  + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))
    optimize(d_loss, optimizers["discriminator"])

    m.D.requires_grad_(False)
    try:
        logits = m.D(fake, labels)
        g_loss = -logits.mean() if hinge else F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        optimize(g_loss, optimizers["generator"])      # the backward pass, too, runs with D frozen
    finally:
        m.D.requires_grad_(True)
    m.g_steps += 1
    if m.ema is not None:
        m.update_ema()
    return {"loss": d_loss.item(), "g_loss": g_loss.item(), "d_loss": d_loss.item(),
            "d_real_acc": (logits_real > 0).float().mean().item(),
            "d_fake_acc": (logits_fake < 0).float().mean().item()}


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, temperature: float = 1.0) -> np.ndarray:
    m = torch_model
    z = torch.from_numpy(resolve(generator).normal((n, m.latent_dim), std=float(temperature)))
    with _eval_mode(m.G), m.averaged_generator():
        images = m.G(z, _labels(m, labels, n))
    return ((images + 1) / 2).clamp(0, 1).numpy()


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    """GAN.evaluate's metrics with the same draws."""
    m, c = torch_model, torch_model.config
    x = check_images("twin gan.evaluate", x)[: c["eval_examples"]]
    labels = _labels(m, y, len(x))
    fake = torch.from_numpy(2 * sample(m, len(x), labels, generator) - 1)
    with _eval_mode(m.D):
        logits_real = m.D(torch.from_numpy(2 * x - 1), labels)
        logits_fake = m.D(fake, labels)
    d_loss = (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
              + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))).item()
    metrics = {"d_loss": d_loss, "d_real_acc": (logits_real > 0).float().mean().item(),
               "d_fake_acc": (logits_fake < 0).float().mean().item()}
    n = int(c["collapse_samples"])
    count = distinct_digits(sample(m, n, np.arange(n) % int(c["num_classes"]) if m.conditional else None, generator))
    if count is not None:
        metrics["distinct_digits"] = float(count)
    return metrics
