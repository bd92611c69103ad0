"""PyTorch twin of `minigen.models.vae.VAE`: same layers under the same names, same random draws.

All randomness (binarization, the reparameterization noise, sampling) is drawn from the
minigen Generator with the same calls in the same order as the minigen model, so the
two see identical numbers; only the arithmetic differs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.data import binarize_dynamic, binarize_fixed
from minigen.models.base import check_images, check_labels, condition_labels
from minigen.models.vae import IMAGE_SHAPE, NUM_PIXELS
from minigen.random import resolve


class TorchVAE(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c = self.config
        self.variant, self.latent_dim, self.num_classes = c["variant"], int(c["latent_dim"]), int(c["num_classes"])
        self.conditional = bool(c["conditional"])
        hidden, label_dim = int(c["hidden_dim"]), self.num_classes if self.conditional else 0
        if self.variant == "conv":
            ch = int(c["conv_channels"])
            self.conv_shape = (2 * ch, 7, 7)
            features = 2 * ch * 49
            self.enc_conv1 = nn.Conv2d(1, ch, 4, stride=2, padding=1)
            self.enc_conv2 = nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)
        else:
            features = NUM_PIXELS
        self.enc_hidden = nn.Linear(features + label_dim, hidden)
        self.enc_mu = nn.Linear(hidden, self.latent_dim)
        self.enc_logvar = nn.Linear(hidden, self.latent_dim)
        self.dec_hidden = nn.Linear(self.latent_dim + label_dim, hidden)
        if self.variant == "conv":
            self.dec_expand = nn.Linear(hidden, features)
            self.dec_deconv1 = nn.ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
            self.dec_deconv2 = nn.ConvTranspose2d(ch, 1, 4, stride=2, padding=1)
        else:
            self.dec_out = nn.Linear(hidden, NUM_PIXELS)

    def _with_label(self, h, y):
        if not self.conditional:
            return h
        return torch.cat([h, F.one_hot(torch.as_tensor(y), self.num_classes).to(h.dtype)], dim=1)

    def encode(self, x, y=None):
        if self.variant == "conv":
            h = F.relu(self.enc_conv2(F.relu(self.enc_conv1(x)))).reshape(len(x), -1)
        else:
            h = x.reshape(len(x), NUM_PIXELS)
        h = F.relu(self.enc_hidden(self._with_label(h, y)))
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z, y=None):
        h = F.relu(self.dec_hidden(self._with_label(z, y)))
        if self.variant == "conv":
            h = F.relu(self.dec_expand(h)).reshape(len(z), *self.conv_shape)
            return self.dec_deconv2(F.relu(self.dec_deconv1(h)))
        return self.dec_out(h).reshape(len(z), *IMAGE_SHAPE)

    def forward(self, x, y, generator):
        """-> recon (N,), kl (N,): the same ELBO pieces as minigen's VAE.forward."""
        mu, logvar = self.encode(x, y)
        eps = torch.from_numpy(resolve(generator).normal(tuple(mu.shape)))
        logits = self.decode(mu + torch.exp(0.5 * logvar) * eps, y)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").reshape(len(x), -1).sum(1)
        kl = 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(-1)
        return recon, kl


def build(model) -> TorchVAE:
    return copy_weights(TorchVAE(model.config), model)


def make_optimizers(torch_model, config) -> dict:
    return {"model": torch.optim.Adam(torch_model.parameters(), lr=config["lr"])}


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    x = check_images("twin VAE.train_step", x)
    y = check_labels("twin VAE.train_step", y, len(x), torch_model.num_classes)
    generator = resolve(generator)
    torch_model.train()
    xb = torch.from_numpy(binarize_dynamic(x, generator))
    recon, kl = torch_model(xb, y if torch_model.conditional else None, generator)
    loss = (recon + kl).mean()
    grad_norm = optimize(loss, optimizers["model"], torch_model.config["grad_clip"])
    return {"loss": loss.item(), "recon": recon.mean().item(), "kl": kl.mean().item(), "grad_norm": grad_norm}


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, temperature: float = 1.0, binary: bool = False):
    labels = condition_labels("twin VAE.sample", labels, n, torch_model.conditional, torch_model.num_classes)
    generator = resolve(generator)
    torch_model.eval()
    z = torch.from_numpy(generator.normal((n, torch_model.latent_dim)) * np.float32(temperature))
    probs = torch.sigmoid(torch_model.decode(z, labels)).numpy()
    return generator.bernoulli(probs) if binary else probs


@torch.no_grad()
def _iw_log_likelihood(torch_model, x, y, k, generator):
    """The same estimate, with the same draws in the same order, as minigen's VAE.iw_log_likelihood."""
    n = len(x)
    mu, logvar = torch_model.encode(torch.from_numpy(x), y)
    std = torch.exp(0.5 * logvar)
    log_w, log_px_z = [], []
    chunk = max(1, 10_000 // n)
    for start in range(0, k, chunk):
        m = min(chunk, k - start)
        z = mu[:, None] + std[:, None] * torch.from_numpy(generator.normal((n, m, torch_model.latent_dim)))
        logits = torch_model.decode(z.reshape(n * m, -1), None if y is None else np.repeat(y, m)).reshape(n, m, -1)
        targets = torch.from_numpy(x.reshape(n, 1, NUM_PIXELS)).expand(n, m, NUM_PIXELS)
        log_px_z.append(-F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(2))
        log_pz = -0.5 * (z * z + math.log(2 * math.pi))
        log_qz = -0.5 * (math.log(2 * math.pi) + logvar[:, None] + (z - mu[:, None]) ** 2 / logvar[:, None].exp())
        log_w.append(log_px_z[-1] + (log_pz - log_qz).sum(2))
    iw = torch.logsumexp(torch.cat(log_w, 1).double(), 1) - math.log(k)
    kl = 0.5 * (mu * mu + logvar.exp() - 1 - logvar).sum(-1)
    elbo = torch.cat(log_px_z, 1).mean(1) - kl
    return iw.numpy(), elbo.numpy()


def evaluate(torch_model, x, y, generator=None) -> dict:
    x = check_images("twin VAE.evaluate", x)
    y = check_labels("twin VAE.evaluate", y, len(x), torch_model.num_classes)
    c = torch_model.config
    if c["eval_examples"] is not None:
        x, y = x[:c["eval_examples"]], y[:c["eval_examples"]]
    x = binarize_fixed(x, c["binarize_seed"])
    generator = resolve(generator)
    torch_model.eval()
    iw, elbo = [], []
    for start in range(0, len(x), c["eval_batch_size"]):
        sl = slice(start, start + c["eval_batch_size"])
        batch_iw, batch_elbo = _iw_log_likelihood(torch_model, x[sl], y[sl] if torch_model.conditional else None,
                                                  int(c["iw_samples"]), generator)
        iw.append(batch_iw)
        elbo.append(batch_elbo)
    return {"neg_elbo": float(-np.concatenate(elbo).mean()), "nll_nats": float(-np.concatenate(iw).mean()),
            "iw_samples": int(c["iw_samples"]), "examples": len(x)}
