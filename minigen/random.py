"""One source of randomness for the whole library.

Every random draw in minigen (weight init, dropout masks, data shuffling,
binarization, noise for VAEs, flows, diffusion and GANs) goes through a
`Generator`. `manual_seed(s)` reseeds the default one, so the same seed gives
bit-identical results. Pass an explicit `Generator` where two streams must not
interfere (e.g. data order vs. model noise).
"""
from __future__ import annotations

import numpy as np

__all__ = ["Generator", "manual_seed", "default_generator", "resolve"]


class Generator:
    """A seeded random stream (PCG64 under the hood).

    Methods return NumPy arrays; `dtype` defaults to float32 like the rest of minigen.
    """

    def __init__(self, seed: int | None = 0):
        self.seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))

    # --- draws -------------------------------------------------------------
    def normal(self, shape, mean=0.0, std=1.0, dtype=np.float32) -> np.ndarray:
        return (self._rng.standard_normal(shape, dtype=np.float64) * std + mean).astype(dtype)

    def uniform(self, shape, low=0.0, high=1.0, dtype=np.float32) -> np.ndarray:
        return self._rng.uniform(low, high, size=shape).astype(dtype)

    def integers(self, low, high=None, shape=None) -> np.ndarray:
        return self._rng.integers(low, high, size=shape)

    def bernoulli(self, p, dtype=np.float32) -> np.ndarray:
        """Draw 0/1 with probability `p` (an array of any shape)."""
        p = np.asarray(p)
        return (self._rng.random(p.shape) < p).astype(dtype)

    def permutation(self, n: int) -> np.ndarray:
        return self._rng.permutation(n)

    def choice(self, a, size=None, replace=True, p=None):
        return self._rng.choice(a, size=size, replace=replace, p=p)

    # --- state, so checkpoints can resume the exact same stream ------------
    def get_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    def __repr__(self):
        return f"Generator(seed={self.seed})"


_default = Generator(0)


def manual_seed(seed: int) -> Generator:
    """Reseed the default generator; returns it."""
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    global _default
    _default = Generator(int(seed))
    return _default


def default_generator() -> Generator:
    return _default


def resolve(generator: Generator | None) -> Generator:
    """The generator to use: the one given, or the default."""
    return _default if generator is None else generator
