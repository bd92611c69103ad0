"""PyTorch twin of `minigen.models.pixelcnn.PixelCNN`: same layers under the same names, same random draws.

Masked convolutions are `F.conv2d` with the kernel multiplied by the same causal mask. Binarization
and the sampling uniforms come from the minigen Generator with the same calls as the minigen model,
and the pixel draw is minigen's own `draw_pixel`, so both frameworks see identical numbers. Sampling
uses the same per-position caching as minigen's fast sampler (and `fast=False` the full passes), so the
benchmark compares the same algorithm.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.models.base import NUM_CLASSES, check_images, check_labels, evaluation_subset
from minigen.models.pixelcnn import EVAL_BATCH, OUTPUTS, draw_pixel, inputs_and_targets, sample_labels
from minigen.ops import causal_mask
from minigen.random import resolve


class ConditionalConv(nn.Module):
    def __init__(self, c_in, c_out, k, mask_type, conditional):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
        self.register_buffer("mask", torch.from_numpy(causal_mask(k, k, mask_type)), persistent=False)
        self.label_bias = nn.Parameter(torch.zeros(NUM_CLASSES, c_out)) if conditional else None

    def forward(self, x, y):
        h = F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=self.conv.padding)
        return h if self.label_bias is None else h + self.label_bias[y][:, :, None, None]

    def weight_matrix(self):
        w = self.conv.weight * self.mask
        return w.reshape(len(w), -1).T

    def at(self, window, matrix, y):
        h = window.reshape(len(window), -1) @ matrix + self.conv.bias
        return h if self.label_bias is None else h + self.label_bias[y]


class TorchPixelCNN(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        c, cond = int(config["channels"]), bool(config["conditional"])
        self.conditional, self.image_size = cond, int(config["image_size"])
        self.input = ConditionalConv(1, c, 7, "A", cond)
        self.blocks = nn.ModuleList([ConditionalConv(c, c, 3, "B", cond) for _ in range(int(config["num_blocks"]))])
        self.hidden = ConditionalConv(c, c, 1, "B", cond)
        self.output = ConditionalConv(c, OUTPUTS[config["output"]], 1, "B", cond)
        s = self.image_size
        self.label_map = nn.Parameter(torch.zeros(NUM_CLASSES, c, s, s)) if config["label_map"] else None

    def forward(self, x, y=None):
        h = self.input(x, y)
        if self.label_map is not None:
            h = h + self.label_map[y]
        for block in self.blocks:
            h = h + block(F.relu(h), y)
        h = self.hidden(F.relu(h), y)
        return self.output(F.relu(h), y)

    def nll_per_image(self, inputs: np.ndarray, targets: np.ndarray, y):
        logits = self(torch.from_numpy(inputs), y)
        n = len(inputs)
        if self.config["output"] == "bernoulli":
            per_pixel = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(targets), reduction="none")
        else:
            per_pixel = F.cross_entropy(logits, torch.from_numpy(targets[:, 0]), reduction="none")
        return per_pixel.reshape(n, -1).sum(1)


def build(model) -> TorchPixelCNN:
    return copy_weights(TorchPixelCNN(model.config), model)


def make_optimizers(torch_model, config) -> dict:
    return {"model": torch.optim.Adam(torch_model.parameters(), lr=config["lr"])}


def _labels(torch_model, y, n):
    return torch.from_numpy(check_labels("pixelcnn", y, n)) if torch_model.conditional else None


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    torch_model.train()
    x = check_images("twin pixelcnn", x, torch_model.image_size)
    inputs, targets = inputs_and_targets(x, torch_model.config["output"], resolve(generator))
    loss = torch_model.nll_per_image(inputs, targets, _labels(torch_model, y, len(x))).mean()
    grad_norm = optimize(loss, optimizers["model"], torch_model.config["grad_clip"])
    return {"loss": loss.item(), "grad_norm": grad_norm}


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    torch_model.eval()
    config = torch_model.config
    x = check_images("twin pixelcnn", x, torch_model.image_size)
    x, y = evaluation_subset(x, y, config["eval_examples"])
    labels = _labels(torch_model, y, len(x))
    inputs, targets = inputs_and_targets(x, config["output"], binarize_seed=config["eval_binarize_seed"])
    total = 0.0
    for s in range(0, len(x), EVAL_BATCH):
        part = slice(s, s + EVAL_BATCH)
        total += torch_model.nll_per_image(inputs[part], targets[part],
                                           None if labels is None else labels[part]).sum().item()
    nats = total / len(x)
    metrics = {"nll_nats": nats, "examples": len(x)}
    if config["output"] == "categorical256":
        metrics["bits_per_dim"] = nats / (torch_model.image_size ** 2 * math.log(2))
    return metrics


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, temperature: float = 1.0, fast: bool = True) -> np.ndarray:
    labels = sample_labels(n, labels, temperature, torch_model.conditional)
    labels = None if labels is None else torch.from_numpy(labels)
    torch_model.eval()
    m, s, output = torch_model, torch_model.image_size, torch_model.config["output"]
    uniforms = resolve(generator).uniform((n, s * s), dtype=np.float64)
    if not fast:
        x = torch.zeros(n, 1, s, s)
        for t in range(s * s):
            i, j = divmod(t, s)
            logits = m(x, labels)[:, :, i, j].numpy()
            x[:, 0, i, j] = torch.from_numpy(draw_pixel(logits, uniforms[:, t], temperature, output))
        return x.numpy()
    c = int(m.config["channels"])
    x_pad = torch.zeros(n, 1, s + 6, s + 6)
    relu_pads = [torch.zeros(n, c, s + 2, s + 2) for _ in m.blocks]
    layers = [m.input, *m.blocks, m.hidden, m.output]
    matrices = {id(layer): layer.weight_matrix() for layer in layers}
    maps = None if m.label_map is None else m.label_map[labels]

    def at(layer, window):
        return layer.at(window, matrices[id(layer)], labels)

    for t in range(s * s):
        i, j = divmod(t, s)
        h = at(m.input, x_pad[:, :, i:i + 7, j:j + 7])
        if maps is not None:
            h = h + maps[:, :, i, j]
        for block, pad in zip(m.blocks, relu_pads):
            pad[:, :, i + 1, j + 1] = F.relu(h)
            h = h + at(block, pad[:, :, i:i + 3, j:j + 3])
        h = at(m.hidden, F.relu(h))
        logits = at(m.output, F.relu(h)).numpy()
        x_pad[:, 0, i + 3, j + 3] = torch.from_numpy(draw_pixel(logits, uniforms[:, t], temperature, output))
    return x_pad[:, :, 3:-3, 3:-3].numpy().copy()
