"""What every generative model family offers, so one trainer, one CLI and one benchmark serve all.

A family is one module in `minigen/models/` (vae.py, flow.py, pixelcnn.py, nar.py,
ddpm.py, gan.py) defining a subclass of `GenerativeModel` and registering it with
`@register_family("name")`. Images reach a model as `x: (N, 1, H, W) float32` in
[0, 1] (pixel / 255) with labels `y: (N,) int64`; each family turns them into
what it models (binarized, dequantized, scaled to [-1, 1]) itself, because that
choice is part of the model.
"""
from __future__ import annotations

import numpy as np

from minigen.nn import Module
from minigen.optim import Optimizer

__all__ = ["GenerativeModel", "FAMILIES", "register_family", "get_family"]

FAMILIES: dict[str, type] = {}


def register_family(name: str):
    def deco(cls):
        cls.family = name
        FAMILIES[name] = cls
        return cls
    return deco


def get_family(name: str) -> type:
    """The model class registered under `name`; imports the model modules on first use."""
    import minigen.models  # noqa: F401  (registers every family)
    if name not in FAMILIES:
        from minigen.errors import MinigenError
        raise MinigenError(f"unknown model {name!r}; expected one of: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


class GenerativeModel(Module):
    """The interface. `config` is a flat dict of JSON-able hyper-parameters (saved in the run directory).

    Subclasses implement the methods that raise NotImplementedError below.
    """

    family: str = "?"
    #: the metric `evaluate` returns that summarises the model's fit, e.g. "nll_nats" or "bits_per_dim"
    likelihood_metric: str | None = None

    def __init__(self, config: dict):
        self.config = dict(config)

    @classmethod
    def default_config(cls) -> dict:
        """Hyper-parameters with their defaults, e.g. {"lr": 1e-3, "batch_size": 128, "conditional": False}.
        Must include "lr", "batch_size" and "conditional"."""
        raise NotImplementedError

    @property
    def conditional(self) -> bool:
        return bool(self.config.get("conditional", False))

    def make_optimizers(self) -> dict[str, Optimizer]:
        """Named optimisers, e.g. {"model": Adam(...)} or {"generator": ..., "discriminator": ...}."""
        raise NotImplementedError

    def train_step(self, x: np.ndarray, y: np.ndarray, optimizers: dict, generator) -> dict[str, float]:
        """One optimisation step on a batch: forward, backward, optimiser step(s).

        Returns the logged numbers, at least {"loss": float}. Also returns "grad_norm" when cheap.
        """
        raise NotImplementedError

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

    def figures(self, out_dir: str, x: np.ndarray, y: np.ndarray, generator=None) -> list[str]:
        """Write the family's own pictures (reconstructions, strips, ...) into out_dir; return their paths."""
        return []
