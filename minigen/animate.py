"""Generation, animated: a family's `generation_frames` written as an animated GIF.

Each family that has something to show over time defines `generation_frames(...)` returning
`Frames`: a row of images per frame (DDPM denoising every digit side by side, flow matching
following its ODE from noise, PixelCNN drawing pixel by pixel, the VAE walking between two codes,
the flow's temperature sweep, the GAN's fixed-noise samples across training). This module turns any of them into a GIF with
matplotlib's animation writer and Pillow (which matplotlib already installs).

    minigen sample RUN_DIR --animate out.gif
"""
from __future__ import annotations

import os
import tempfile
from typing import NamedTuple

import numpy as np

from minigen.errors import MinigenError
from minigen.serialize import new_file_mode

__all__ = ["Frames", "save_gif", "animate"]


class Frames(NamedTuple):
    """images: (F, K, 1, H, W) float in [0, 1]: F frames of a row of K images.
    captions: F strings, one per frame; columns: K labels (e.g. digits) or None; title: one line."""
    images: np.ndarray
    captions: list
    columns: list | None
    title: str


def save_gif(frames: Frames, path, fps: float = 6.0, hold_last: int = 6) -> str:
    """Write `frames` as an animated GIF at `path` (atomically: a temp file renamed into place).
    The last frame is shown `hold_last` extra times so the loop pauses on the result."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    from minigen.plots import image_grid
    images = np.asarray(frames.images, np.float32)
    if images.ndim != 5 or len(images) == 0 or len(frames.captions) != len(images):
        raise MinigenError(f"save_gif: expected frames of shape (F, K, 1, H, W) with F >= 1 and F captions, got "
                           f"{images.shape} and {len(frames.captions)} captions")
    k = images.shape[1]
    grids = [image_grid(row, nrow=k) for row in images]
    fig = plt.figure(figsize=(0.55 * k + 0.3, 1.35), dpi=90)
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.62 if frames.columns is not None else 0.7))
    ax.set_axis_off()
    shown = ax.imshow(grids[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    if frames.columns is not None:
        w = images.shape[-1] + 2
        for j, label in enumerate(frames.columns):
            ax.text(2 + j * w + w / 2 - 1, -2, str(label), ha="center", va="bottom", fontsize=7)
    fig.suptitle(frames.title, fontsize=8, y=0.98)
    caption = fig.text(0.5, 0.8, frames.captions[0], ha="center", fontsize=7, color="#333333")
    order = list(range(len(grids))) + [len(grids) - 1] * hold_last

    def show(i):
        shown.set_data(grids[order[i]])
        caption.set_text(frames.captions[order[i]])
        return shown, caption

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise MinigenError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".gif", dir=folder)
    os.close(fd)
    try:
        FuncAnimation(fig, show, frames=len(order), blit=False).save(tmp, writer=PillowWriter(fps=fps))
        os.chmod(tmp, new_file_mode())     # readable by others like any new file, not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def animate(model, path, **options) -> str:
    """model.generation_frames(**options) as a GIF at path (a family without one raises MinigenError)."""
    frames = model.generation_frames(**options)
    return save_gif(frames, path)
