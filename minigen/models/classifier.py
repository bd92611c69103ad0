"""The yardstick network: a small LeNet-style MNIST classifier.

It is not a generative model; it judges them. Its 128-d penultimate features
are what `minigen.metrics.fid_mnist` compares between generated and real
digits ("FID-MNIST"), and its predictions are what `label_accuracy` checks
("asked for a 7, got a 7"). It is registered as family "classifier" so the
same trainer (`minigen train classifier`) trains it; `sample` refuses.

    conv 1->32 3x3, ReLU, max-pool 2      (N, 1, 28, 28) -> (N, 32, 13, 13)
    conv 32->64 3x3, ReLU, max-pool 2     -> (N, 64, 5, 5)
    fc 1600->128, ReLU                    -> (N, 128)   the features
    fc 128->10                            -> (N, 10)    class logits

Trained on the full MNIST training set it reaches > 98% test accuracy.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, eval_examples_knob, grad_clip_knob,
                            lr_knob)
from minigen.errors import MinigenError
from minigen.models.base import (GenerativeModel, check_images, check_labels, evaluation_subset,
                                 register_family)
from minigen.nn import Conv2d, Linear, MaxPool2d
from minigen.optim import Adam
from minigen.tensor import Tensor, no_grad

__all__ = ["Classifier", "ClassifierConfig", "FEATURE_DIM"]

FEATURE_DIM = 128
EVAL_BATCH = 500

# --- the hyper-parameters (`minigen train classifier --help` lists them; --set KEY=VALUE changes one) -------
@dataclass(frozen=True)
class ClassifierConfig(HyperParameters):
    lr: float = lr_knob(1e-3)
    batch_size: int = batch_size_knob(64)
    conditional: bool = conditional_knob(doc="the interface asks; a classifier has no condition")
    grad_clip: float | None = grad_clip_knob(None)
    eval_examples: int | None = eval_examples_knob(None)

    def memory_floats(self) -> tuple[int, int]:
        params = 9 * 32 + 9 * 32 * 64 + 64 * 25 * FEATURE_DIM + FEATURE_DIM * 10
        return params, 3 * (32 * 26 * 26 + 64 * 24 * 24) + 2 * (64 * 144 + FEATURE_DIM)


@register_family("classifier")
class Classifier(GenerativeModel):
    """LeNet-style digit classifier. forward: x (N, 1, 28, 28) in [0, 1] -> logits (N, 10)."""

    likelihood_metric = None
    generates = False
    Config = ClassifierConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config)
        self.conv1 = Conv2d(1, 32, 3, generator=generator)
        self.conv2 = Conv2d(32, 64, 3, generator=generator)
        self.pool = MaxPool2d(2)
        self.fc1 = Linear(64 * 5 * 5, FEATURE_DIM, generator=generator)
        self.fc2 = Linear(FEATURE_DIM, 10, generator=generator)

    def _features(self, x: Tensor) -> Tensor:
        h = self.pool(ops.relu(self.conv1(x)))
        h = self.pool(ops.relu(self.conv2(h)))
        return ops.relu(self.fc1(ops.flatten(h)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self._features(x))

    # --- what the metrics use ------------------------------------------------------------------
    def features(self, x) -> np.ndarray:
        """x: (N, 1, 28, 28) float in [0, 1] -> (N, 128) float32 penultimate features (eval mode, no graph)."""
        return self._predict(x, self._features)

    def predict(self, x) -> np.ndarray:
        """x: (N, 1, 28, 28) float in [0, 1] -> (N,) int64 predicted digits."""
        return self._predict(x, self.forward).argmax(axis=1)

    def _predict(self, x, fn) -> np.ndarray:
        self.eval()
        x = check_images("classifier", x, 28)
        with no_grad():
            return np.concatenate([fn(Tensor(x[s:s + EVAL_BATCH])).data for s in range(0, len(x), EVAL_BATCH)])

    # --- the family interface -------------------------------------------------------------------
    def make_optimizers(self) -> dict:
        return {"model": Adam(self.parameters(), lr=self.hparams.lr)}

    def train_step(self, x, y, optimizers, generator=None) -> dict:
        """One cross-entropy step on real grey-level digits."""
        self.train()
        x = check_images("classifier", x, 28)
        logits = self(Tensor(x))
        loss = ops.cross_entropy(logits, check_labels("classifier", y, len(x)))
        grad_norm = self.optimize(loss, optimizers["model"], self.hparams.grad_clip)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def evaluate(self, x, y, generator=None) -> dict:
        """{"accuracy": fraction of test digits classified correctly}."""
        x = check_images("classifier", x, 28)
        x, y = evaluation_subset(x, y, self.hparams.eval_examples)
        y = check_labels("classifier", y, len(x))
        return {"accuracy": float((self.predict(x) == y).mean()), "examples": len(x)}

    def sample(self, n, labels=None, generator=None, **options):
        raise MinigenError("classifier: a classifier does not generate images; it is the yardstick that "
                           "judges generated ones (see minigen.metrics)")
