"""PyTorch twin of `minigen.models.nar.NAR`: same layers under the same names, same random draws."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.twins import copy_weights, optimize
from minigen.data import binarize_dynamic, binarize_fixed
from minigen.models.base import NUM_CLASSES, check_images, check_labels, evaluation_subset, labels_for_sampling
from minigen.models.nar import IMAGE_SIZE
from minigen.random import resolve


class TorchNAR(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        self.conditional = bool(config["conditional"])
        hidden = int(config["hidden"])
        self.label_embedding = nn.Embedding(NUM_CLASSES if self.conditional else 1, hidden)
        self.hidden = nn.Linear(hidden, hidden)
        self.output = nn.Linear(hidden, IMAGE_SIZE * IMAGE_SIZE)

    def condition(self, y, n):
        ids = check_labels("nar", y, n) if self.conditional else np.zeros(n, np.int64)
        return torch.from_numpy(ids)

    def forward(self, ids):
        h = F.relu(self.hidden(F.relu(self.label_embedding(ids))))
        return self.output(h).reshape(len(ids), 1, IMAGE_SIZE, IMAGE_SIZE)

    def nll_per_image(self, xb: np.ndarray, ids):
        per_pixel = F.binary_cross_entropy_with_logits(self(ids), torch.from_numpy(xb), reduction="none")
        return per_pixel.reshape(len(xb), -1).sum(1)


def build(model) -> TorchNAR:
    return copy_weights(TorchNAR(model.config), model)


def make_optimizers(torch_model, config) -> dict:
    return {"model": torch.optim.Adam(torch_model.parameters(), lr=config["lr"])}


def train_step(torch_model, optimizers, x, y, generator) -> dict:
    torch_model.train()
    x = check_images("twin nar", x, IMAGE_SIZE)
    ids = torch_model.condition(y, len(x))
    loss = torch_model.nll_per_image(binarize_dynamic(x, resolve(generator)), ids).mean()
    grad_norm = optimize(loss, optimizers["model"], torch_model.config["grad_clip"])
    return {"loss": loss.item(), "grad_norm": grad_norm}


@torch.no_grad()
def evaluate(torch_model, x, y, generator=None) -> dict:
    torch_model.eval()
    x = check_images("twin nar", x, IMAGE_SIZE)
    x, y = evaluation_subset(x, y, torch_model.config["eval_examples"])
    xb = binarize_fixed(x, torch_model.config["eval_binarize_seed"])
    nats = torch_model.nll_per_image(xb, torch_model.condition(y, len(x))).mean().item()
    return {"nll_nats": nats, "examples": len(x)}


@torch.no_grad()
def sample(torch_model, n, labels=None, generator=None, mean: bool = False) -> np.ndarray:
    labels = labels_for_sampling("nar.sample", n, labels, torch_model.conditional)
    torch_model.eval()
    probs = torch.sigmoid(torch_model(torch_model.condition(labels, n))).numpy()
    return probs if mean else resolve(generator).bernoulli(probs)
