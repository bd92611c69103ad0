"""Synthetic training data shared by the model tests."""
import numpy as np

from minigen.random import Generator


def bar_digits(n, seed=0):
    """Blocky fake digits in [0, 1]: a bright bar at a random place on a dark background.
    Returns (images (n, 1, 28, 28) float32, labels (n,) int64 derived from the bar's row)."""
    g = Generator(seed)
    x = np.zeros((n, 1, 28, 28), np.float32)
    rows = g.integers(4, 20, (n,))
    for i, r in enumerate(rows):
        x[i, 0, r:r + 6, 8:20] = 1.0
    return x, (rows % 10).astype(np.int64)
