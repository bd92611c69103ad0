"""Autoregressive vs non-autoregressive: the lecture's opening contrast, trained and measured.

Trains two small class-conditional models on the same binarized digits:

* NAR (minigen/models/nar.py): label -> all 784 pixel probabilities in one pass,
  pixels independent given the label;
* PixelCNN (minigen/models/pixelcnn.py): each pixel given the label and all pixels
  before it, so 784 sequential passes to draw one image;

then draws, for each digit 0-9, the NAR mean image, an NAR independent sample and a
PixelCNN sample into one figure, and prints each model's test NLL (nats per image,
same fixed binarization) and sampling time per image. The NAR sample is fast but
noisy and its mean is a blur; the PixelCNN's pixels agree with each other, at the
price of one network pass per pixel.
"""
from __future__ import annotations

import os
import time

import numpy as np

from minigen import data
from minigen.models.base import NUM_CLASSES
from minigen.models.nar import NAR
from minigen.models.pixelcnn import PixelCNN
from minigen.plots import save_rows
from minigen.random import Generator

__all__ = ["run"]


def _train(model, x, y, steps: int, batch_size: int, seed: int) -> float:
    """`steps` optimisation steps on shuffled batches; returns the seconds it took."""
    loader = data.DataLoader(x, y, batch_size, drop_last=True, generator=Generator(seed))
    noise = Generator(seed + 1)                 # binarization draws: their own stream
    optimizers = model.make_optimizers()
    start, done = time.perf_counter(), 0
    while done < steps:
        for xb, yb in loader:
            model.train_step(xb, yb, optimizers, noise)
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run(out_dir: str = "runs/ar-vs-nar", dataset: str = "mnist-5k", data_dir=None, seed: int = 0,
        pixelcnn_steps: int = 300, nar_steps: int = 300, batch_size: int = 32, channels: int = 32,
        num_blocks: int = 5, eval_examples: int = 500, verbose: bool = True) -> dict:
    """Train both models, write `ar_vs_nar.png` into out_dir, print and return the table.

    The defaults (a 32-channel, 5-block PixelCNN, 300 steps each) take a few minutes on 2 cores;
    the issue's full model is channels=64, num_blocks=7, trained for several epochs.
    Returns {"figure": path, "test_source": ..., "rows": [per-model dict]}.
    """
    os.makedirs(out_dir, exist_ok=True)
    train, test = data.load(dataset, "train", data_dir), data.load(dataset, "test", data_dir)
    x, y = data.to_float(train.images), train.labels
    x_test, y_test = data.to_float(test.images), test.labels
    models = {
        "NAR": NAR({"eval_examples": eval_examples}, generator=Generator(seed)),
        "PixelCNN": PixelCNN({"conditional": True, "channels": channels, "num_blocks": num_blocks,
                              "eval_examples": eval_examples}, generator=Generator(seed)),
    }
    steps = {"NAR": nar_steps, "PixelCNN": pixelcnn_steps}
    digits = np.arange(NUM_CLASSES)
    figure_rows, rows = {}, []
    for name, model in models.items():
        if verbose:
            print(f"ar-vs-nar: training {name} for {steps[name]} steps ...", flush=True)
        train_seconds = _train(model, x, y, steps[name], batch_size, seed + 1)
        nll = model.evaluate(x_test, y_test)["nll_nats"]
        samples, seconds = _timed(lambda: model.sample(NUM_CLASSES, digits, Generator(seed + 2)))
        if name == "NAR":
            figure_rows["NAR mean"] = model.sample(NUM_CLASSES, digits, mean=True)
        figure_rows[f"{name} sample"] = samples
        rows.append({"model": name, "parameters": model.num_parameters(), "train_steps": steps[name],
                     "train_seconds": train_seconds, "test_nll_nats": nll,
                     "sample_seconds_per_image": seconds / NUM_CLASSES})
    path = save_rows(figure_rows, os.path.join(out_dir, "ar_vs_nar.png"), col_labels=list(digits),
                     title="one pass (NAR) vs pixel by pixel (PixelCNN), one column per digit")
    result = {"figure": path, "test_source": test.source, "eval_examples": eval_examples, "rows": rows}
    if verbose:
        print(format_table(result))
    return result


def format_table(result: dict) -> str:
    lines = [f"{'model':<10}{'params':>10}{'steps':>7}{'train s':>9}{'test NLL (nats)':>17}{'sample s/image':>16}"]
    for r in result["rows"]:
        lines.append(f"{r['model']:<10}{r['parameters']:>10,}{r['train_steps']:>7}{r['train_seconds']:>9.1f}"
                     f"{r['test_nll_nats']:>17.1f}{r['sample_seconds_per_image']:>16.5f}")
    lines.append(f"test NLL on {result['eval_examples']} images of {result['test_source']}, fixed binarization; "
                 f"figure: {result['figure']}")
    return "\n".join(lines)
