"""Pictures: image grids, strips and loss curves, written atomically as PNG.

Images are (N, 1, H, W) or (N, H, W) float arrays in [0, 1].
"""
from __future__ import annotations

import os

import numpy as np

from minigen.serialize import atomic_write

__all__ = ["image_grid", "save_grid", "save_rows", "save_loss_curve", "save_metric_curves"]


def _as_images(images) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"expected single-channel images (N, 1, H, W), got shape {images.shape}")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, 1, H, W) or (N, H, W), got {images.shape}")
    return np.clip(images, 0, 1)


def image_grid(images, nrow: int, pad: int = 2) -> np.ndarray:
    """Tile N images into one (rows*(H+pad)+pad, nrow*(W+pad)+pad) array, row by row."""
    images = _as_images(images)
    n, h, w = images.shape
    rows = -(-n // nrow)
    grid = np.ones((rows * (h + pad) + pad, nrow * (w + pad) + pad), np.float32) * 0.5
    for i, img in enumerate(images):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def _save_figure(fig, path):
    import matplotlib.pyplot as plt
    ext = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=ext, bbox_inches="tight", dpi=100))
    plt.close(fig)


def save_grid(images, path, nrow: int = 8, title: str | None = None) -> str:
    """Save images as one grid picture."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grid = image_grid(images, nrow)
    fig = plt.figure(figsize=(grid.shape[1] / 30, grid.shape[0] / 30 + (0.4 if title else 0)))
    plt.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    plt.axis("off")
    if title:
        plt.title(title, fontsize=9)
    _save_figure(fig, path)
    return os.fspath(path)


def save_rows(rows: dict, path, title: str | None = None, col_labels=None) -> str:
    """One labelled row of images per entry: {"row name": (K, 1, H, W) images}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(rows)
    ncol = max(len(_as_images(r)) for r in rows.values())
    fig, axes = plt.subplots(len(names), ncol, figsize=(ncol * 0.8 + 1.5, len(names) * 0.85 + 0.5), squeeze=False)
    for i, name in enumerate(names):
        imgs = _as_images(rows[name])
        for j in range(ncol):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(imgs):
                ax.imshow(imgs[j], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(str(col_labels[j]), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    _save_figure(fig, path)
    return os.fspath(path)


def save_loss_curve(history: dict, path, xlabel: str = "step") -> str:
    """history: {"loss": [(step, value), ...], ...}: one line per series."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(6, 3.5))
    for name, points in history.items():
        if points:
            steps, values = zip(*points)
            plt.plot(steps, values, label=name)
    plt.xlabel(xlabel)
    plt.legend()
    plt.grid(alpha=0.3)
    _save_figure(fig, path)
    return os.fspath(path)


def save_metric_curves(series: dict, path, xlabel: str = "step") -> str:
    """series: {"loss": [(step, value), ...], "grad_norm": [...], ...}: one small plot per series."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(series)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = zip(*series[name])
        ax.plot(steps, values, lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    fig.tight_layout()
    _save_figure(fig, path)
    return os.fspath(path)
