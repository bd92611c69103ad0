"""What every generative model family offers, so one trainer, one CLI and one benchmark serve all.

A family is one module in `minigen/models/` (vae.py, flow.py, pixelcnn.py, nar.py,
ddpm.py, flow_matching.py, gan.py) defining a subclass of `GenerativeModel` and registering it with
`@register_family("name")`. Images reach a model as `x: (N, 1, H, W) float32` in
[0, 1] (pixel / 255) with labels `y: (N,) int64`; each family turns them into
what it models (binarized, dequantized, scaled to [-1, 1]) itself, because that
choice is part of the model.
"""
from __future__ import annotations

import math

import numpy as np

from minigen.config import HyperParameters, check_memory
from minigen.errors import DTypeError, MinigenError, ShapeError
from minigen.nn import Module
from minigen.optim import Optimizer, clip_grad_norm

__all__ = ["GenerativeModel", "FAMILIES", "register_family", "get_family", "NUM_CLASSES",
           "check_images", "check_labels", "condition_labels", "labels_for_sampling", "evaluation_subset", "one_hot",
           "check_temperature", "check_guidance", "animated_families"]

FAMILIES: dict[str, type] = {}


def register_family(name: str):
    def deco(cls):
        cls.family = name
        FAMILIES[name] = cls
        return cls
    return deco


def get_family(name: str) -> type:
    """The model class registered under `name` (importing minigen.models.base runs minigen/models/__init__.py
    first, which imports every family module, so the registry is full by the time this is called)."""
    if name not in FAMILIES:
        raise MinigenError(f"unknown model {name!r}; expected one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def animated_families() -> list[str]:
    """The families whose models define generation_frames (the others have nothing to animate)."""
    return sorted(name for name, cls in FAMILIES.items()
                  if cls.generation_frames is not GenerativeModel.generation_frames)


# --- what every family checks on the way in (the one home of these checks) ---------------------------
NUM_CLASSES = 10   # the digits 0..9


def check_images(where: str, x, image_size: int = 28) -> np.ndarray:
    """x: (N, 1, S, S) float array in [0, 1] with N >= 1 -> float32 array, or a clear error.

    DTypeError for a non-float dtype, ShapeError for a wrong shape, MinigenError for values outside [0, 1]."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise DTypeError(f"{where}: images must be floats in [0, 1] (pixel / 255), got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1:] != (1, image_size, image_size) or len(x) == 0:
        raise ShapeError(f"{where}: images must have shape (N, 1, {image_size}, {image_size}) with N >= 1, "
                         f"got {x.shape}")
    if x.min() < 0 or x.max() > 1:
        raise MinigenError(f"{where}: pixel values must be in [0, 1], got range [{x.min():g}, {x.max():g}]")
    return x.astype(np.float32, copy=False)


def check_labels(where: str, labels, n: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """labels: (n,) integers in [0, num_classes) -> int64 array, or a clear error.

    ShapeError when it is not an integer array of shape (n,), MinigenError for a label out of range."""
    labels = np.asarray(labels)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ShapeError(f"{where}: labels must be an integer array of shape ({n},), "
                         f"got dtype {labels.dtype}, shape {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise MinigenError(f"{where}: labels must be in [0, {num_classes}), "
                           f"got range [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def condition_labels(where: str, labels, n: int, conditional: bool, num_classes: int = NUM_CLASSES):
    """The labels a model is conditioned on for n images: None for an unconditional model (which must
    not be given any), check_labels(...) for a conditional one (which must be given them)."""
    if not conditional:
        if labels is not None:
            raise MinigenError(f"{where}: this model is unconditional (config conditional=False); "
                               f"it cannot take labels")
        return None
    if labels is None:
        raise MinigenError(f"{where}: this model is conditional (config conditional=True); pass labels, "
                           f"an integer array of shape ({n},) in [0, {num_classes})")
    return check_labels(where, labels, n, num_classes)


def labels_for_sampling(where: str, n, labels, conditional: bool, num_classes: int = NUM_CLASSES):
    """Check sample()'s n (a positive integer) and labels, for the families whose conditional models
    have default labels: those to use, 0..num_classes-1 repeated when none are given; None if unconditional."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise MinigenError(f"{where}: n must be a positive integer, got {n!r}")
    if conditional and labels is None:
        return np.arange(n) % num_classes
    return condition_labels(where, labels, n, conditional, num_classes)


def check_temperature(where: str, temperature, scales_noise: bool) -> float:
    """A sampling temperature as a float: finite and > 0, or >= 0 where it scales the latent noise
    (scales_noise: VAE, flow, GAN), since there 0 is meaningful: z = 0, the mode. Where it divides
    logits (PixelCNN), 0 is not."""
    value = _finite_number(temperature)
    if value is None or value < 0 or (value == 0 and not scales_noise):
        allowed = ">= 0 (0: the mode)" if scales_noise else "> 0"
        raise MinigenError(f"{where}: temperature must be a finite number {allowed}, got {temperature!r}")
    return value


def check_guidance(where: str, guidance) -> float:
    """A classifier-free guidance scale: a finite number >= 0 (1: no guidance), as a float."""
    value = _finite_number(guidance)
    if value is None or value < 0:
        raise MinigenError(f"{where}: guidance must be a finite number >= 0 (1: no guidance), got {guidance!r}")
    return value


def _finite_number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value) if math.isfinite(value) else None


def evaluation_subset(x: np.ndarray, y: np.ndarray, n: int | None):
    """n evenly spaced examples (all of them if n is None): deterministic, and balanced over digits
    even when the set is sorted by label (the offline mnist-5k test split is)."""
    if n is None or n >= len(x):
        return x, y
    idx = np.linspace(0, len(x) - 1, int(n)).round().astype(np.int64)
    return x[idx], y[idx]


def one_hot(labels: np.ndarray, num_classes: int, dtype=np.float32) -> np.ndarray:
    """labels: (N,) ints -> (N, num_classes) with a single 1 per row."""
    return np.eye(num_classes, dtype=dtype)[labels]


class GenerativeModel(Module):
    """The interface. `config` is a flat dict of JSON-able hyper-parameters (saved in the run directory),
    checked against the family's `Config` declaration; `hparams` is the same as a frozen dataclass.

    Subclasses implement the methods that raise NotImplementedError below.
    """

    family: str = "?"
    #: the metric `evaluate` returns that summarises the model's fit, e.g. "nll_nats" or "bits_per_dim"
    likelihood_metric: str | None = None
    #: False for a model that does not generate images (the yardstick classifier): no sample grid
    generates: bool = True

    #: the family's hyper-parameter declaration (a frozen HyperParameters dataclass at the top of its module)
    Config: type[HyperParameters]

    def __init__(self, config: dict | None = None):
        """Check `config` against the family's declaration (defaults fill in what it leaves out) and refuse a
        model too big for the memory available, before any layer is allocated."""
        self.hparams = self.Config.build(self.family, config)
        self.config = self.hparams.as_dict()     # the same as a JSON-able dict: config.json, checkpoints
        check_memory(self.family, self.hparams, self.hparams.batch_size)

    @classmethod
    def default_config(cls) -> dict:
        """Hyper-parameters with their defaults, from the family's declaration, e.g.
        {"lr": 1e-3, "batch_size": 128, "conditional": False, ...}."""
        return cls.Config.defaults()

    @property
    def conditional(self) -> bool:
        return self.hparams.conditional

    def make_optimizers(self) -> dict[str, Optimizer]:
        """Named optimisers, e.g. {"model": Adam(...)} or {"generator": ..., "discriminator": ...}."""
        raise NotImplementedError

    def train_step(self, x: np.ndarray, y: np.ndarray, optimizers: dict, generator) -> dict[str, float]:
        """One optimisation step on a batch: forward, backward, optimiser step(s).

        Returns the logged numbers, at least {"loss": float}. Also returns "grad_norm" when cheap.
        """
        raise NotImplementedError

    def optimize(self, loss, optimizer: Optimizer, grad_clip: float | None = None) -> float:
        """One optimiser step on `loss`: zero the gradients, backpropagate, clip the gradients of the
        optimiser's parameters to norm grad_clip (None or 0: no clipping), step.

        Returns the gradient norm before clipping (computed with or without clipping)."""
        optimizer.zero_grad()
        loss.backward()
        grad_norm = clip_grad_norm(optimizer.params, grad_clip or math.inf)
        optimizer.step()
        return grad_norm

    def sample(self, n: int, labels: np.ndarray | None = None, generator=None, **options) -> np.ndarray:
        """n new images: (n, 1, H, W) float32 in [0, 1]. labels: (n,) ints, for conditional models."""
        raise NotImplementedError

    def evaluate(self, x: np.ndarray, y: np.ndarray, generator=None) -> dict[str, float]:
        """Test-set metrics (likelihood in nats or bits/dim where the family has one)."""
        return {}

    def extra_state(self) -> dict:
        """State beyond parameters and buffers that a checkpoint must keep (e.g. an EMA)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def generation_frames(self, generator=None, **options):
        """How this family generates, frame by frame: a minigen.animate.Frames (a row of images per frame)
        for `minigen sample --animate` and the run's generation.gif. Families without one raise."""
        raise MinigenError(f"{self.family}: nothing to animate; the families with an animation are: "
                           f"{', '.join(animated_families())}")

    def figures(self, out_dir: str, x: np.ndarray, y: np.ndarray, generator=None) -> list[str]:
        """Write the family's own pictures (reconstructions, strips, ...) into out_dir; return their paths."""
        return []
