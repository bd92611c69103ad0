"""Turn uint8 images into model inputs, and iterate over them in batches.

Transforms (each model family wants its own input range):

    to_float            uint8 (N, 28, 28)    -> float32 (N, 1, 28, 28) in [0, 1]
    to_symmetric        [0, 1]               -> [-1, 1]             (DDPM, GAN)
    binarize_dynamic    [0, 1]               -> {0, 1}, fresh draw each call (VAE, PixelCNN training)
    binarize_fixed      [0, 1]               -> {0, 1}, same draw every call (evaluation sets)
    dequantize_uniform  uint8 (N, 28, 28)    -> float32 (N, 1, 28, 28) in (0, 1)   (flows)

`DataLoader` yields shuffled mini-batches and can save and restore its exact
position, so a resumed training run sees bit-identical batches.
"""
from __future__ import annotations

import numpy as np

from minigen.errors import CheckpointError, DTypeError, ShapeError
from minigen.random import Generator, resolve

__all__ = ["to_float", "to_symmetric", "binarize_dynamic", "binarize_fixed",
           "dequantize_uniform", "DataLoader"]


def _check_uint8_images(images: np.ndarray, op: str) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise DTypeError(f"{op}: expected uint8 images (0..255), got dtype {images.dtype}")
    if images.ndim != 3:
        raise ShapeError(f"{op}: expected images of shape (N, H, W), got {images.shape}")
    return images


def to_float(images: np.ndarray) -> np.ndarray:
    """images: (N, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1] (one channel axis added)."""
    images = _check_uint8_images(images, "to_float")
    return (images[:, None] / np.float32(255)).astype(np.float32)


def to_symmetric(x01: np.ndarray) -> np.ndarray:
    """x01: float in [0, 1] -> same shape in [-1, 1]."""
    return (2 * np.asarray(x01, dtype=np.float32) - 1).astype(np.float32)


def binarize_dynamic(x01: np.ndarray, generator: Generator | None = None) -> np.ndarray:
    """Each pixel becomes 1 with probability = its intensity; a new draw every call.

    Re-drawing every epoch acts as data augmentation for Bernoulli-likelihood
    models. x01: float in [0, 1], any shape -> float32 0/1, same shape.
    """
    return resolve(generator).bernoulli(x01)


def binarize_fixed(x01: np.ndarray, seed: int = 0) -> np.ndarray:
    """Like `binarize_dynamic` but with its own generator seeded with `seed`.

    The same input always gives the same 0/1 images, so test-set likelihoods of
    different models (and runs) are measured on identical data.
    """
    return Generator(seed).bernoulli(x01)


def dequantize_uniform(images: np.ndarray, generator: Generator | None = None) -> np.ndarray:
    """(x + u) / 256 with u ~ Uniform[0, 1): turns 256 pixel levels into a continuous density.

    images: (N, H, W) uint8 -> (N, 1, H, W) float32 strictly inside (0, 1), so a
    flow's logit(x) is always finite.
    """
    images = _check_uint8_images(images, "dequantize_uniform")
    u = resolve(generator).uniform(images[:, None].shape, dtype=np.float64)
    x = ((images[:, None] + u) / 256).astype(np.float32)
    # u can be exactly 0, and 255 + u close to 256 rounds to 1.0 in float32.
    return np.clip(x, np.float32(2 ** -24), np.float32(1 - 2 ** -24))


class DataLoader:
    """Mini-batches `(xb, yb)` of NumPy arrays, reshuffled every epoch.

    x: (N, ...) array, y: (N,) array; batches are `x[idx], y[idx]`.
    len(loader) is the number of batches per epoch. `epoch` counts finished epochs.

    Iteration picks up where it stopped: breaking out of a loop (or
    `load_state_dict`) and iterating again continues the same epoch at its next
    batch. Each epoch's order is a permutation drawn from `generator` when the
    epoch starts; give the loader its own Generator so model noise and data
    order don't shift each other.
    """

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, drop_last: bool = False,
                 generator: Generator | None = None):
        x, y = np.asarray(x), np.asarray(y)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ShapeError(f"DataLoader: x and y must have the same length, got shapes {x.shape} and {y.shape}")
        if len(x) == 0 or (drop_last and len(x) < batch_size):
            raise ShapeError(f"DataLoader: {len(x)} examples with batch_size={batch_size} and "
                             f"drop_last={drop_last} would give no batches")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = resolve(generator)
        self.epoch = 0
        self._order = None   # this epoch's example order; None between epochs
        self._position = 0   # batches of this epoch already handed out

    def __len__(self) -> int:
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        if self._order is None:
            self._order = self.generator.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        order = self._order
        for batch in range(self._position, len(self)):
            idx = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            self._position = batch + 1
            if self._position == len(self):
                # Close the epoch before handing out its last batch, so a state_dict
                # saved while the caller uses that batch resumes at the next epoch.
                self.epoch, self._order, self._position = self.epoch + 1, None, 0
            yield self.x[idx], self.y[idx]

    def state_dict(self) -> dict:
        """Everything needed to resume: epoch, position, this epoch's order, generator state."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "order": None if self._order is None else self._order.copy(),
            "generator": self.generator.get_state(),
            "num_examples": len(self.x),
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`: the next batches are exactly those the saved run saw next."""
        missing = {"epoch", "position", "order", "generator", "num_examples", "batch_size", "drop_last"} - set(state)
        if missing:
            raise CheckpointError(f"DataLoader.load_state_dict: state lacks {', '.join(sorted(missing))}")
        saved = (state["num_examples"], state["batch_size"], state["drop_last"])
        if saved != (len(self.x), self.batch_size, self.drop_last):
            raise CheckpointError(
                f"DataLoader.load_state_dict: state is for {saved[0]} examples, batch_size={saved[1]}, "
                f"drop_last={saved[2]}; this loader has {len(self.x)}, {self.batch_size}, {self.drop_last}")
        self.epoch, self._position = int(state["epoch"]), int(state["position"])
        self._order = None if state["order"] is None else np.array(state["order"])
        self.generator.set_state(state["generator"])
