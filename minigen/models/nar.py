"""The non-autoregressive (NAR) baseline: all 784 pixels at once, from the label alone.

The idea. Drop the chain rule: model each pixel as independent given only the
class label,

    p(x | y) = prod_i Bernoulli(x_i; sigmoid(f(y)_i)),

with f one small network from the label to 784 logits, trained by maximum
likelihood like the PixelCNN (same binarized data, same nats per image). One
pass produces every pixel, so it is as fast as generation gets. What it cannot
do is make pixels agree with each other: the best it can learn is each class's
per-pixel mean. Its "samples" show the lecture's point:

* the mean image (`sample(mean=True)`) is a blurry average of all the 7s, and
* an independent draw per pixel (`sample()`) is that blur sprinkled as noise:
  no strokes, because nothing ties a pixel to its neighbours.

The PixelCNN's extra cost buys exactly that dependence between pixels.

Network: label embedding (10 -> hidden), ReLU, Linear hidden -> hidden, ReLU,
Linear hidden -> 784. With conditional=False the label is ignored and the model
learns one mean image for all digits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, eval_examples_knob, grad_clip_knob,
                            knob, lr_knob, seed_knob)
from minigen.data import binarize_dynamic, binarize_fixed
from minigen.models.base import (NUM_CLASSES, GenerativeModel, check_images, check_labels, evaluation_subset,
                                 labels_for_sampling, register_family)
from minigen.nn import Embedding, Linear
from minigen.optim import Adam
from minigen.plots import save_rows
from minigen.random import resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["NAR", "NARConfig"]

IMAGE_SIZE = 28


# --- the hyper-parameters (`minigen train nar --help` lists them; --set KEY=VALUE changes one) --------------
@dataclass(frozen=True)
class NARConfig(HyperParameters):
    lr: float = lr_knob(1e-3)
    batch_size: int = batch_size_knob(64)
    conditional: bool = conditional_knob(True, "one pixel distribution per digit (false: one for all)")
    hidden: int = knob(256, 1, 16384, "width of the label embedding and the hidden layer")
    grad_clip: float | None = grad_clip_knob(None)
    eval_examples: int | None = eval_examples_knob(None)   # all: it is cheap
    eval_binarize_seed: int = seed_knob("the fixed binarization of the test set (same as PixelCNN's)")

    def memory_floats(self) -> tuple[int, int]:
        h = self.hidden
        return NUM_CLASSES * h + h * h + h * IMAGE_SIZE ** 2, 4 * h + 4 * IMAGE_SIZE ** 2


@register_family("nar")
class NAR(GenerativeModel):
    """Label -> independent Bernoulli logits for all pixels. forward: y (N,) -> logits (N, 1, 28, 28)."""

    likelihood_metric = "nll_nats"
    Config = NARConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config)
        config = self.hparams
        hidden = config.hidden
        # an unconditional model has one "class": every image gets the same input
        self.label_embedding = Embedding(NUM_CLASSES if self.conditional else 1, hidden, generator=generator)
        self.hidden = Linear(hidden, hidden, generator=generator)
        self.output = Linear(hidden, IMAGE_SIZE * IMAGE_SIZE, generator=generator)

    def _condition(self, y, n: int) -> np.ndarray:
        return check_labels("nar", y, n) if self.conditional else np.zeros(n, np.int64)

    def forward(self, y) -> Tensor:
        """y: (N,) int64 condition ids -> logits (N, 1, 28, 28)."""
        h = ops.relu(self.hidden(ops.relu(self.label_embedding(y))))
        return self.output(h).reshape(len(y), 1, IMAGE_SIZE, IMAGE_SIZE)

    def nll_per_image(self, xb: np.ndarray, y) -> Tensor:
        """-log p(x | y) in nats, one per image: (N,). xb: (N, 1, 28, 28) binary."""
        per_pixel = ops.binary_cross_entropy_with_logits(self(y), Tensor(xb), reduction="none")
        return per_pixel.reshape(len(xb), -1).sum(axis=1)

    # --- the family interface -----------------------------------------------------------------
    def make_optimizers(self) -> dict:
        return {"model": Adam(self.parameters(), lr=self.hparams.lr)}

    def train_step(self, x, y, optimizers, generator=None) -> dict:
        """Maximum likelihood on freshly binarized images: loss = mean NLL in nats per image."""
        self.train()
        x = check_images("nar", x, IMAGE_SIZE)
        cond = self._condition(y, len(x))
        loss = self.nll_per_image(binarize_dynamic(x, resolve(generator)), cond).mean()
        grad_norm = self.optimize(loss, optimizers["model"], self.hparams.grad_clip)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def evaluate(self, x, y, generator=None) -> dict:
        """Test NLL in nats per image on the fixed-seed binarized test set (the one PixelCNN uses), so
        the two models' numbers compare directly. A conditional model reports -log p(x | y)."""
        self.eval()
        x = check_images("nar", x, IMAGE_SIZE)
        x, y = evaluation_subset(x, y, self.hparams.eval_examples)
        xb = binarize_fixed(x, self.hparams.eval_binarize_seed)
        with no_grad():
            nats = float(self.nll_per_image(xb, self._condition(y, len(x))).data.mean())
        return {"nll_nats": nats, "examples": len(x)}

    def sample(self, n: int, labels=None, generator=None, mean: bool = False) -> np.ndarray:
        """(n, 1, 28, 28) in [0, 1] from one forward pass.

        labels: (n,) digits for a conditional model (default 0..9 repeated); must be None otherwise.
        mean: return the per-pixel probabilities (the blurry class average) instead of 0/1 draws.
        """
        labels = labels_for_sampling("nar.sample", n, labels, self.conditional)
        self.eval()
        with no_grad():
            probs = ops.sigmoid(self(self._condition(labels, n))).data
        return probs if mean else resolve(generator).bernoulli(probs)

    def figures(self, out_dir, x, y, generator=None) -> list:
        """Per digit: the mean image and one independent draw (the lecture's blur and noise)."""
        labels = np.arange(NUM_CLASSES) if self.conditional else None
        n = NUM_CLASSES
        rows = {"mean": self.sample(n, labels, generator, mean=True),
                "independent sample": self.sample(n, labels, generator)}
        path = os.path.join(out_dir, "nar_mean_and_sample.png")
        return [save_rows(rows, path, title="NAR baseline: per-pixel mean and independent draw",
                          col_labels=list(range(NUM_CLASSES)) if self.conditional else None)]
