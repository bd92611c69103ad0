# %% [markdown]
# # A convolution three ways: Python loops, the NumPy reference, and the fast Numba kernel. Same numbers
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""A convolution three ways: Python loops, the NumPy reference, and the fast Numba kernel. Same numbers.

A 2-d convolution (a cross-correlation, as in every deep-learning library) slides each
filter over the image and takes a dot product at every position:

    out[n, o, r, c] = b[o] + sum over channels k and taps (i, j) of w[o, k, i, j] * x[n, k, r + i, c + j]

1. `conv2d_loops` below: that formula as four Python loops (plus NumPy's sum of the window).
2. `minigen/kernels/reference.py: conv2d`: one loop per kernel tap; each tap multiplies a
   shifted view of the whole batch at once (einsum). Obviously right, reasonably fast.
3. `minigen/kernels/im2col.py`: im2col (copy every window into a matrix row, in Numba) and
   one BLAS matrix product, the general algorithm, forced here with `conv.forced("im2col")`.
   Left to choose, `ops.conv2d` would run these 4 filters of 1 channel on `planar.py`'s loops:
   the table in `minigen/kernels/conv.py` picks an algorithm per conv (MINIGEN_CONV forces one).

The filters are hand-made edge and blob detectors, so the feature maps mean something.
"""
from __future__ import annotations

import os
import time

import numpy as np
from common import digits, parser

from minigen import kernels
from minigen.kernels import conv, reference
from minigen.plots import save_rows


# %% [markdown]
# ## `conv2d_loops`
# The convolution as six nested loops: the definition, slow and obvious.

# %%
def conv2d_loops(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding: int) -> np.ndarray:
    """x: (N, C, H, W), w: (O, C, kH, kW), b: (O,) -> (N, O, H + 2p - kH + 1, W + 2p - kW + 1); stride 1."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, _, h, width = x.shape
    o, _, kh, kw = w.shape
    out = np.zeros((n, o, h - kh + 1, width - kw + 1), x.dtype)
    for img in range(n):
        for f in range(o):
            for r in range(out.shape[2]):
                for c in range(out.shape[3]):
                    out[img, f, r, c] = b[f] + np.sum(w[f] * x[img, :, r:r + kh, c:c + kw])
    return out


# %% [markdown]
# ## `hand_made_filters`
# Four 3x3 filters, (4, 1, 3, 3): vertical edges, horizontal edges, a blob (Laplacian), a blur.

# %%
def hand_made_filters() -> np.ndarray:
    """Four 3x3 filters, (4, 1, 3, 3): vertical edges, horizontal edges, a blob (Laplacian), a blur."""
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)
    return np.stack([sobel, sobel.T, laplacian, np.full((3, 3), 1 / 9, np.float32)])[:, None]


# %% [markdown]
# ## `timed`
# Time a function: its result and best wall time.

# %%
def timed(fn, repeats: int) -> tuple[np.ndarray, float]:
    """fn's result and its best wall time over `repeats` runs, in seconds."""
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--repeats 1`).

# %%
def main(argv=None) -> dict:
    p = parser(__doc__, "conv_by_hand", epochs=None)
    p.add_argument("--batch", type=int, default=256, help="digits for the reference and kernel timings")
    p.add_argument("--loop-batch", type=int, default=4, help="digits for the (slow) Python loops")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    x = digits("test", args.data_dir)[0][:args.batch]
    w, b = hand_made_filters(), np.zeros(4, np.float32)
    one = (1, 1)
    loops, t_loops = timed(lambda: conv2d_loops(x[:args.loop_batch], w, b, padding=1), 1)
    ref, t_ref = timed(lambda: reference.conv2d(x, w, b, one, one, one, 1), args.repeats)
    with conv.forced("im2col"):
        kernels.conv2d_forward(x[:1], w, b, 1, 1)      # compile the Numba kernel before timing it
        fast, t_fast = timed(lambda: kernels.conv2d_forward(x, w, b, 1, 1), args.repeats)

    k = args.loop_batch
    print(f"largest difference: loops vs reference {np.abs(loops - ref[:k]).max():.2e}, "
          f"reference vs kernel {np.abs(ref - fast).max():.2e} (float32 rounding)")
    per_image = {"python loops": t_loops / k, "numpy reference": t_ref / len(x), "numba kernel": t_fast / len(x)}
    for name, seconds in per_image.items():
        print(f"{name:>16}: {seconds * 1e6:10.1f} us per image  ({per_image['python loops'] / seconds:7.0f}x loops)")
    # the four feature maps of one digit, computed each way, each map rescaled to [0, 1] for display
    def show(maps):
        low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
        return ((maps - low) / (high - low + 1e-8))[:, None]

    rows = {"digit": np.repeat(x[:1], 4, axis=0), "python loops": show(loops[0]),
            "reference": show(ref[0]), "numba kernel": show(fast[0])}
    path = save_rows(rows, os.path.join(args.out, "feature_maps.png"),
                     title="one digit through 4 hand-made filters, computed three ways",
                     col_labels=["vertical edges", "horizontal edges", "blobs", "blur"])
    print("figures:", path)
    return per_image


# %%
if __name__ == "__main__":
    main()
