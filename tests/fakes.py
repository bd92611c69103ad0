"""Small synthetic inputs and helpers shared by several test files."""
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


def assert_same_bits_on_one_and_all_threads(fn):
    """fn() run with one Numba thread, then with all of them (the count restored afterwards), must
    return the same arrays, bit for bit: results do not depend on the thread count."""
    import numba
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fn()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = fn()
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)
