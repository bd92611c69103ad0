"""PyTorch twin of `minigen.models.flow.RealNVP`: built layer by layer from the minigen model,
so the architecture (masks, and the glow variant's 1x1 convs and factored-out half, included) is
identical, and parameters share their names.

The dequantization noise and the sampling noise come from the minigen Generator with the
same calls as in the minigen model.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.models import flow as mg
from minigen.models.base import check_images, check_labels, condition_labels
from minigen.random import Generator, resolve


def _per_example_sum(t):
    return t.reshape(len(t), -1).sum(1)


def _standard_normal_log_prob(z):
    return _per_example_sum(-0.5 * (z * z + math.log(2 * math.pi)))


def _one_hot(labels, num_classes, dtype):
    return F.one_hot(torch.as_tensor(labels), num_classes).to(dtype)


class LogitTransform(nn.Module):
    def __init__(self, alpha):
        super().__init__()
        self.alpha = alpha

    def forward(self, x, labels=None):
        y = x * (1 - 2 * self.alpha) + self.alpha
        log_y, log_1my = y.log(), (1 - y).log()
        return log_y - log_1my, _per_example_sum(math.log(1 - 2 * self.alpha) - log_y - log_1my)

    def inverse(self, z, labels=None):
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)


class ActNorm(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.zeros(()))

    def forward(self, x, labels=None):
        if self.training and not self.initialized:
            axes = tuple(i for i, n in enumerate((1,) + tuple(self.bias.shape[1:])) if n == 1)
            with torch.no_grad():
                self.bias.copy_(-x.mean(dim=axes, keepdim=True))
                self.log_scale.copy_(-torch.log(x.std(dim=axes, keepdim=True, unbiased=False) + 1e-6))
                self.initialized.fill_(1)
        positions = x[0].numel() // self.log_scale.numel()
        log_det = (self.log_scale.sum() * positions).expand(len(x))
        return (x + self.bias) * self.log_scale.exp(), log_det

    def inverse(self, z, labels=None):
        return z * (-self.log_scale).exp() - self.bias


class Squeeze(nn.Module):
    def forward(self, x, labels=None):
        n, c, h, w = x.shape
        z = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, x.new_zeros(n)

    def inverse(self, z, labels=None):
        n, c4, h, w = z.shape
        return z.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c4 // 4, 2 * h, 2 * w)


class MLPCouplingNet(nn.Module):
    def __init__(self, shape, hidden, label_dim):
        super().__init__()
        self.shape, self.label_dim = tuple(shape), label_dim
        dim = int(np.prod(shape))
        self.hidden1 = nn.Linear(dim + label_dim, hidden)
        self.hidden2 = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 2 * dim)

    def forward(self, x_b, labels=None):
        h = x_b.reshape(len(x_b), -1)
        if self.label_dim:
            h = torch.cat([h, _one_hot(labels, self.label_dim, h.dtype)], 1)
        h = self.out(F.relu(self.hidden2(F.relu(self.hidden1(h))))).reshape(len(x_b), 2, *self.shape)
        return h[:, 0], h[:, 1]


class ConvCouplingNet(nn.Module):
    def __init__(self, channels, hidden, label_dim):
        super().__init__()
        self.label_dim = label_dim
        self.conv1 = nn.Conv2d(channels + label_dim, hidden, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, 2 * channels, 3, padding=1)

    def forward(self, x_b, labels=None):
        n, c, h, w = x_b.shape
        if self.label_dim:
            planes = _one_hot(labels, self.label_dim, x_b.dtype)[:, :, None, None].expand(n, self.label_dim, h, w)
            x_b = torch.cat([x_b, planes], 1)
        out = self.out(F.relu(self.conv2(F.relu(self.conv1(x_b)))))
        return out[:, :c], out[:, c:]


class AffineCoupling(nn.Module):
    def __init__(self, mask: np.ndarray, net: nn.Module):
        super().__init__()
        self.register_buffer("mask", torch.from_numpy(mask), persistent=False)
        self.net = net
        self.scale = nn.Parameter(torch.ones(1, mask.shape[1], 1, 1))

    def _scale_shift(self, x_b, labels):
        raw, shift = self.net(x_b, labels)
        changed = 1 - self.mask
        return self.scale * torch.tanh(raw) * changed, shift * changed

    def forward(self, x, labels=None):
        x_b = x * self.mask
        s, t = self._scale_shift(x_b, labels)
        return x_b + (x * s.exp() + t) * (1 - self.mask), _per_example_sum(s)

    def inverse(self, z, labels=None):
        z_b = z * self.mask
        s, t = self._scale_shift(z_b, labels)
        return z_b + ((z - t) * (-s).exp()) * (1 - self.mask)


class InvertibleConv1x1(nn.Module):
    """W = P L (U + diag(sign_s * exp(log_s))) at every pixel; P, sign_s, the masks copied from minigen."""

    def __init__(self, layer):
        super().__init__()
        c = len(layer.log_s.data)
        self.register_buffer("permutation", torch.zeros(c, c))
        self.register_buffer("sign_s", torch.zeros(c))
        self.lower = nn.Parameter(torch.zeros(c, c))
        self.upper = nn.Parameter(torch.zeros(c, c))
        self.log_s = nn.Parameter(torch.zeros(c))
        for name in ("lower_mask", "upper_mask", "eye"):
            self.register_buffer(name, torch.from_numpy(getattr(layer, name)), persistent=False)

    def weight(self):
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.upper_mask + (self.log_s.exp() * self.sign_s) * self.eye
        return self.permutation @ (lower @ upper)

    def forward(self, x, labels=None):
        n, c, h, w = x.shape
        z = torch.matmul(self.weight(), x.reshape(n, c, h * w)).reshape(n, c, h, w)
        return z, (self.log_s.sum() * (h * w)).expand(n)

    def inverse(self, z, labels=None):
        n, c, h, w = z.shape
        w_inverse = torch.linalg.inv(self.weight().detach().double()).to(z.dtype)
        return torch.matmul(w_inverse, z.reshape(n, c, h * w)).reshape(n, c, h, w)


class GlowCouplingNet(nn.Module):
    def __init__(self, in_channels, out_channels, hidden, label_dim):
        super().__init__()
        self.out_channels, self.label_dim = out_channels, label_dim
        self.conv1 = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.label_bias = nn.Linear(label_dim, hidden, bias=False) if label_dim else None
        self.conv2 = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, 2 * out_channels, 3, padding=1)

    def forward(self, x_a, labels=None):
        h = self.conv1(x_a)
        if self.label_dim:
            h = h + self.label_bias(_one_hot(labels, self.label_dim, x_a.dtype))[:, :, None, None]
        out = self.out(F.relu(self.conv2(F.relu(h))))
        c = self.out_channels
        return out[:, :c], out[:, c:]


class ChannelCoupling(nn.Module):
    def __init__(self, channels, net):
        super().__init__()
        self.half = channels // 2
        self.net = net
        self.scale = nn.Parameter(torch.ones(1, channels - self.half, 1, 1))

    def _scale_shift(self, x_a, labels):
        raw, shift = self.net(x_a, labels)
        return self.scale * torch.tanh(raw), shift

    def forward(self, x, labels=None):
        x_a, x_b = x[:, :self.half], x[:, self.half:]
        s, t = self._scale_shift(x_a, labels)
        return torch.cat([x_a, x_b * s.exp() + t], 1), _per_example_sum(s)

    def inverse(self, z, labels=None):
        z_a, z_b = z[:, :self.half], z[:, self.half:]
        s, t = self._scale_shift(z_a, labels)
        return torch.cat([z_a, (z_b - t) * (-s).exp()], 1)


class FactorOut(nn.Module):
    """z = concat(flatten(x[:, :C//2]), flatten(layers(x[:, C//2:]))), in minigen's order."""

    def __init__(self, layer):
        super().__init__()
        self.half, self.out_shape, self.inner_shape = layer.half, layer.out_shape, layer.inner_shape
        self.layers = nn.ModuleList([_twin_layer(inner) for inner in layer.layers])

    def forward(self, x, labels=None):
        n = len(x)
        out, h = x[:, :self.half], x[:, self.half:]
        log_det = x.new_zeros(n)
        for layer in self.layers:
            h, step = layer(h, labels)
            log_det = log_det + step
        return torch.cat([out.reshape(n, -1), h.reshape(n, -1)], 1), log_det

    def inverse(self, z, labels=None):
        n, split = len(z), int(np.prod(self.out_shape))
        out, h = z[:, :split].reshape(n, *self.out_shape), z[:, split:].reshape(n, *self.inner_shape)
        for layer in reversed(self.layers):
            h = layer.inverse(h, labels)
        return torch.cat([out, h], 1)


class ClassPrior(nn.Module):
    def __init__(self, num_classes, shape):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(num_classes, *shape))
        self.log_scale = nn.Parameter(torch.zeros(num_classes, *shape))
        self.register_buffer("initialized", torch.zeros(()))

    def log_prob(self, z, labels):
        labels = torch.as_tensor(labels)
        if self.training and not self.initialized:
            with torch.no_grad():
                overall = z.mean(0)
                for digit in range(len(self.mean)):
                    mine = z[labels == digit]
                    self.mean[digit] = mine.mean(0) if len(mine) else overall
                self.initialized.fill_(1)
        log_scale = self.log_scale[labels]
        return _standard_normal_log_prob((z - self.mean[labels]) * (-log_scale).exp()) - _per_example_sum(log_scale)


def _twin_layer(layer):
    """The torch layer of the same kind and shape as a minigen flow layer."""
    if isinstance(layer, mg.LogitTransform):
        return LogitTransform(layer.alpha)
    if isinstance(layer, mg.ActNorm):
        return ActNorm(tuple(layer.bias.shape))
    if isinstance(layer, mg.Squeeze):
        return Squeeze()
    if isinstance(layer, mg.AffineCoupling):
        net = layer.net
        if isinstance(net, mg.MLPCouplingNet):
            twin_net = MLPCouplingNet(net.shape, net.hidden1.out_features, net.label_dim)
        else:
            twin_net = ConvCouplingNet(net.channels, net.conv1.weight.shape[0], net.label_dim)
        return AffineCoupling(layer.mask, twin_net)
    if isinstance(layer, mg.InvertibleConv1x1):
        return InvertibleConv1x1(layer)
    if isinstance(layer, mg.ChannelCoupling):
        net = layer.net
        twin_net = GlowCouplingNet(layer.half, net.out_channels, net.conv1.weight.shape[0], net.label_dim)
        return ChannelCoupling(layer.half + net.out_channels, twin_net)
    if isinstance(layer, mg.FactorOut):
        return FactorOut(layer)
    raise TypeError(f"no torch twin for flow layer {type(layer).__name__}")


class TorchRealNVP(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.config = dict(model.config)
        self.conditional, self.num_classes = model.conditional, model.num_classes
        self.latent_shape = model.latent_shape
        self.layers = nn.ModuleList([_twin_layer(layer) for layer in model.layers])
        self.prior = None if model.prior is None else ClassPrior(model.num_classes, model.latent_shape)

    def forward(self, x, labels=None):
        log_det = x.new_zeros(len(x))
        for layer in self.layers:
            x, step = layer(x, labels)
            log_det = log_det + step
        return x, log_det

    def inverse(self, z, labels=None):
        for layer in reversed(self.layers):
            z = layer.inverse(z, labels)
        return z

    def log_prob(self, v, labels=None):
        z, log_det = self(v, labels)
        if self.prior is not None:
            return self.prior.log_prob(z, labels) + log_det
        return _standard_normal_log_prob(z) + log_det


def build(model) -> TorchRealNVP:
    return copy_weights(TorchRealNVP(model), model)


def make_optimizers(torch_model, config) -> dict:
    return {"model": torch.optim.Adam(torch_model.parameters(), lr=config["lr"])}


def _bits_per_dim(log_p, dims):
    return -(log_p - dims * math.log(256)) / (dims * math.log(2))


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    x = check_images("twin RealNVP.train_step", x)
    y = check_labels("twin RealNVP.train_step", y, len(x), torch_model.num_classes)
    torch_model.train()
    v = torch.from_numpy(mg.RealNVP.dequantize(x, resolve(generator)))
    loss = _bits_per_dim(torch_model.log_prob(v, y if torch_model.conditional else None), 784).mean()
    grad_norm = optimize(loss, optimizers["model"], torch_model.config["grad_clip"])
    return {"loss": loss.item(), "grad_norm": grad_norm}


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, temperature: float = 1.0):
    labels = condition_labels("twin RealNVP.sample", labels, n, torch_model.conditional, torch_model.num_classes)
    torch_model.eval()
    noise = resolve(generator).normal((n, *torch_model.latent_shape))
    if torch_model.prior is None:
        z = torch.from_numpy(noise * np.float32(temperature))
    else:
        prior, index = torch_model.prior, torch.as_tensor(labels)
        z = prior.mean[index] + float(temperature) * prior.log_scale[index].exp() * torch.from_numpy(noise)
    v = torch_model.inverse(z, labels).numpy()
    return (np.floor(v * 256).clip(0, 255) / 255).astype(np.float32)


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    x = check_images("twin RealNVP.evaluate", x)
    y = check_labels("twin RealNVP.evaluate", y, len(x), torch_model.num_classes)
    c = torch_model.config
    if c["eval_examples"] is not None:
        x, y = x[:c["eval_examples"]], y[:c["eval_examples"]]
    v = mg.RealNVP.dequantize(x, Generator(c["eval_seed"]))
    torch_model.eval()
    log_p = []
    for start in range(0, len(v), c["eval_batch_size"]):
        sl = slice(start, start + c["eval_batch_size"])
        log_p.append(torch_model.log_prob(torch.from_numpy(v[sl]), y[sl] if torch_model.conditional else None).numpy())
    log_p = np.concatenate(log_p).astype(np.float64)
    return {"bits_per_dim": float(_bits_per_dim(log_p, 784).mean()),
            "nll_nats": float(-(log_p - 784 * math.log(256)).mean()), "examples": len(x)}
