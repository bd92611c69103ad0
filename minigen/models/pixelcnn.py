"""PixelCNN: an autoregressive image model, one pixel at a time (van den Oord et al., 2016).

The idea. Write an image's probability with the chain rule over pixels in raster
order (row by row, left to right):

    p(x) = prod_i p(x_i | x_1, ..., x_{i-1})

and let ONE convolutional network output every factor at once: the logits at
pixel i may depend only on pixels before i. Masked convolutions enforce that:
the kernel is zeroed at and after its centre (type "A", first layer: a pixel
must not see itself) or after its centre (type "B", later layers: a feature at
i may use the features at i, which themselves only saw pixels before i).
Stacking them keeps the whole network causal, so

* training and the exact likelihood take ONE forward pass over the real image
  (teacher forcing): log p(x) is a sum of per-pixel log-likelihoods, and
* sampling takes one pass per pixel (784 for 28x28), each drawing the next
  pixel from its predicted distribution. That is the price of coherence.

The network (the paper's MNIST model):

    masked conv A 7x7, 1 -> C
    num_blocks x residual block: h = h + masked conv B 3x3 (ReLU(h)), C -> C
    ReLU, 1x1 conv C -> C, ReLU, 1x1 conv C -> out

with out = 1 Bernoulli logit per pixel on binarized MNIST ("bernoulli"), or
256 logits of a categorical over grey levels ("categorical256"). A
class-conditional model adds a learned per-class bias to every channel of every
layer's output. With `label_map` it also adds, after the first layer, a learned
per-class map over (channel, row, column): the "location-dependent conditioning"
of van den Oord et al., 2016 ("Conditional Image Generation with PixelCNN
Decoders") in its simplest form. A bias can say "more ink for a 7"; a map can say
"ink HERE for a 7", which is what a short run needs to draw the asked-for digit
(docs/recipes.md: 88% label accuracy after 765 steps, against 19% without).
Published reference: about 81.3 nats per image on binarized MNIST (van den Oord
et al., 2016, the full 10,000-image test set).

Fast sampling. A causal network's activations at position p (in every layer)
depend only on pixels strictly before p, so once those are drawn they are final.
Sampling therefore computes each layer at the current position only, reading
earlier positions from per-layer caches: each of the 784 steps costs one
"column" of the network instead of a full forward pass. `sample(fast=False)`
is the plain 784-full-passes version, kept because it is obviously right and
the tests hold the fast one to it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, eval_examples_knob, grad_clip_knob,
                            knob, lr_knob, seed_knob)
from minigen.data import binarize_dynamic, binarize_fixed
from minigen.errors import ConfigError
from minigen.kernels.conv import SERIAL_MULTIPLY_ADDS, serial_below
from minigen.models.base import (NUM_CLASSES, GenerativeModel, check_images, check_labels, evaluation_subset,
                                 check_temperature, labels_for_sampling, register_family)
from minigen.nn import MaskedConv2d, Module, Parameter
from minigen.optim import Adam
from minigen.plots import save_grid
from minigen.random import resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["PixelCNN", "PixelCNNConfig", "ConditionalConv", "inputs_and_targets", "draw_pixel", "sample_labels"]

OUTPUTS = {"bernoulli": 1, "categorical256": 256}   # output name -> logits per pixel
EVAL_BATCH = 250
SAMPLE_CHUNK = 128


# --- the hyper-parameters (`minigen train pixelcnn --help` lists them; --set KEY=VALUE changes one) ---------
@dataclass(frozen=True)
class PixelCNNConfig(HyperParameters):
    lr: float = lr_knob(1e-3)
    batch_size: int = batch_size_knob(64)
    conditional: bool = conditional_knob(doc="every layer adds a learned bias per digit")
    label_map: bool = knob(False, doc="conditional only: the first layer also adds a learned (channel, row, column) "
                                      "map per digit, so each pixel knows where in its digit it is")
    output: str = knob("bernoulli", doc="bernoulli: binarized pixels; categorical256: grey levels (bits/dim)",
                       choices=tuple(OUTPUTS))
    channels: int = knob(64, 1, 1024, "feature maps of every masked convolution")
    num_blocks: int = knob(7, 0, 64, "residual 3x3 type-B masked convolutions")
    image_size: int = knob(28, 4, 28, "side of the images modelled (14 makes the sampling benchmark's)")
    grad_clip: float | None = grad_clip_knob(None)
    eval_examples: int | None = eval_examples_knob(1000)
    eval_binarize_seed: int = seed_knob("the fixed binarization of the test set")

    def check(self) -> None:
        if self.label_map and not self.conditional:
            raise ConfigError("label_map=true needs conditional=true (the map is chosen by the digit label)")

    def memory_floats(self) -> tuple[int, int]:
        c, pixels = self.channels, self.image_size ** 2
        out = OUTPUTS[self.output]
        params = 49 * c + self.num_blocks * 9 * c * c + c * c + c * out
        params += NUM_CLASSES * c * pixels if self.label_map else 0
        return params, pixels * (3 * c * (self.num_blocks + 2) + 3 * out)


# --- data in, pixels out: shared with the PyTorch twin ----------------------------------------
def inputs_and_targets(x01: np.ndarray, output: str, generator=None, binarize_seed: int | None = None):
    """What the model sees and what it predicts, from images in [0, 1].

    Bernoulli: binarize (a fresh draw from `generator` in training; the fixed draw of `binarize_seed` for
    evaluation); the 0/1 image is both input and target. Categorical: the grey levels 0..255 (int64) are
    the targets and level / 255 the input."""
    if output == "bernoulli":
        xb = binarize_dynamic(x01, generator) if binarize_seed is None else binarize_fixed(x01, binarize_seed)
        return xb, xb
    levels = np.rint(x01 * 255).astype(np.int64)
    return (levels / np.float32(255)).astype(np.float32), levels


def draw_pixel(logits: np.ndarray, u: np.ndarray, temperature: float, output: str) -> np.ndarray:
    """One pixel per image from its logits (N, out), by inverse CDF with uniforms u: (N,).
    Returns the model input for that pixel: 0/1, or grey level / 255."""
    logits = logits.astype(np.float64) / temperature
    if output == "bernoulli":
        return (u < 1 / (1 + np.exp(-logits[:, 0]))).astype(np.float32)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs, axis=1)
    level = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), 255)
    return (level / 255).astype(np.float32)


def sample_labels(n, labels, temperature: float, conditional: bool):
    """Check sample()'s arguments; the labels to use (0..9 repeated by default; None if unconditional)."""
    labels = labels_for_sampling("pixelcnn.sample", n, labels, conditional)
    check_temperature("pixelcnn.sample", temperature, scales_noise=False)
    return labels


# --- the causal layer ------------------------------------------------------------------------
class ConditionalConv(Module):
    """A masked convolution; for a class-conditional model, plus a learned bias per (class, channel).

    x: (N, C_in, H, W), y: (N,) int64 or None -> (N, C_out, H, W).
    The class bias starts at zero, so a conditional model starts as the unconditional one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str,
                 conditional: bool, generator=None):
        self.conv = MaskedConv2d(in_channels, out_channels, kernel_size, mask_type, generator=generator)
        self.label_bias = Parameter(np.zeros((NUM_CLASSES, out_channels), np.float32)) if conditional else None

    def forward(self, x: Tensor, y) -> Tensor:
        h = self.conv(x)
        if self.label_bias is None:
            return h
        return h + self.label_bias[y].reshape(len(y), -1, 1, 1)

    # -- the same layer evaluated at one position, for fast sampling --------------------------
    def weight_matrix(self) -> tuple:
        """(taps, matrix): the kernel taps (rows, cols) the mask keeps, and the weights there as a
        (C_in*T, C_out) matrix that multiplies those taps of one window (the masked-out taps are
        zeros, so they are skipped, as minigen/kernels/masked.py does)."""
        w = self.conv.weight.data
        taps = np.nonzero(ops.causal_mask(w.shape[2], w.shape[3], self.conv.mask_type, w.dtype))
        return taps, w[:, :, taps[0], taps[1]].reshape(len(w), -1).T

    def at(self, window: np.ndarray, weights: tuple, y) -> np.ndarray:
        """The layer's output at one position. window: (N, C_in, k, k) inputs around it,
        weights: `weight_matrix()` -> (N, C_out)."""
        taps, matrix = weights
        h = window[:, :, taps[0], taps[1]].reshape(len(window), -1) @ matrix + self.conv.bias.data
        return h if self.label_bias is None else h + self.label_bias.data[y]


# --- the model -----------------------------------------------------------------------------------
def pixel_by_pixel_strip(image: np.ndarray, frames: int) -> np.ndarray:
    """Canvases of a raster-order sampler after 0, ..., all pixels: a sampled image with the
    not-yet-drawn pixels blank. Exact, because raster sampling never revisits a pixel.
    image: (1, H, W) -> (frames, 1, H, W)."""
    flat = image.reshape(-1)
    counts = np.linspace(0, flat.size, frames).round().astype(int)
    return np.stack([np.where(np.arange(flat.size) < k, flat, 0).reshape(image.shape) for k in counts])


@register_family("pixelcnn")
class PixelCNN(GenerativeModel):
    """PixelCNN on binarized ("bernoulli") or 256-level ("categorical256") MNIST.

    config: see PixelCNNConfig. forward: x (N, 1, S, S) model inputs -> logits (N, out, S, S).
    """

    Config = PixelCNNConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config)
        config = self.hparams
        self.likelihood_metric = "nll_nats" if config.output == "bernoulli" else "bits_per_dim"
        c, cond = config.channels, self.conditional
        self.input = ConditionalConv(1, c, 7, "A", cond, generator)
        self.blocks = [ConditionalConv(c, c, 3, "B", cond, generator) for _ in range(config.num_blocks)]
        # A 1x1 conv is causal as it is; as type-B masked convs these layers share the code above.
        self.hidden = ConditionalConv(c, c, 1, "B", cond, generator)
        self.output = ConditionalConv(c, OUTPUTS[config.output], 1, "B", cond, generator)
        # The class bias above is the same at every position: it can say "more ink" but not "ink HERE".
        # A per-digit map over positions (zero at first) tells each pixel where in a digit of its class it
        # sits. It depends on the label alone, never on pixels, so the network stays causal.
        s = self.image_size
        self.label_map = Parameter(np.zeros((NUM_CLASSES, c, s, s), np.float32)) if config.label_map else None

    @property
    def image_size(self) -> int:
        return self.hparams.image_size

    def forward(self, x: Tensor, y=None) -> Tensor:
        """x: (N, 1, S, S) model inputs (0/1, or grey level / 255); y: (N,) labels if conditional."""
        h = self.input(x, y)
        if self.label_map is not None:
            h = h + self.label_map[y]
        for block in self.blocks:
            h = h + block(ops.relu(h), y)
        h = self.hidden(ops.relu(h), y)
        return self.output(ops.relu(h), y)

    def nll_per_image(self, inputs: np.ndarray, targets: np.ndarray, y) -> Tensor:
        """-log p(x) in nats, one per image: (N,). The exact likelihood, in one forward pass."""
        logits = self(Tensor(inputs), y)
        n = len(inputs)
        if self.hparams.output == "bernoulli":
            per_pixel = ops.binary_cross_entropy_with_logits(logits, Tensor(targets), reduction="none")
            return per_pixel.reshape(n, -1).sum(axis=1)
        per_pixel = ops.cross_entropy(logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1]),
                                      targets.reshape(-1), reduction="none")
        return per_pixel.reshape(n, -1).sum(axis=1)

    def _labels(self, y, n):
        return check_labels("pixelcnn", y, n) if self.conditional else None

    # --- the family interface -----------------------------------------------------------------
    def make_optimizers(self) -> dict:
        return {"model": Adam(self.parameters(), lr=self.hparams.lr)}

    def train_step(self, x, y, optimizers, generator=None) -> dict:
        """Maximum likelihood: the loss is the mean NLL in nats per image."""
        self.train()
        x = check_images("pixelcnn", x, self.image_size)
        inputs, targets = inputs_and_targets(x, self.hparams.output, resolve(generator))
        loss = self.nll_per_image(inputs, targets, self._labels(y, len(x))).mean()
        grad_norm = self.optimize(loss, optimizers["model"], self.hparams.grad_clip)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def evaluate(self, x, y, generator=None) -> dict:
        """Exact test NLL. Bernoulli: nats per image on the fixed-seed binarized test set (the paper's
        81.3 is over all 10,000 images: set eval_examples=None). Categorical: also bits per dimension.
        A conditional model reports -log p(x | y). `eval_examples` evenly spaced images keep it cheap."""
        self.eval()
        x = check_images("pixelcnn", x, self.image_size)
        x, y = evaluation_subset(x, y, self.hparams.eval_examples)
        labels = self._labels(y, len(x))
        inputs, targets = inputs_and_targets(x, self.hparams.output,
                                             binarize_seed=self.hparams.eval_binarize_seed)
        total = 0.0
        with no_grad():
            for s in range(0, len(x), EVAL_BATCH):
                part = slice(s, s + EVAL_BATCH)
                total += float(self.nll_per_image(inputs[part], targets[part],
                                                  None if labels is None else labels[part]).data.sum())
        nats = total / len(x)
        metrics = {"nll_nats": nats, "examples": len(x)}
        if self.hparams.output == "categorical256":
            metrics["bits_per_dim"] = nats / (self.image_size ** 2 * math.log(2))
        return metrics

    def sample(self, n: int, labels=None, generator=None, temperature: float = 1.0, fast: bool = True) -> np.ndarray:
        """n images (n, 1, S, S) in [0, 1], drawn pixel by pixel in raster order.

        labels: (n,) digits for a conditional model (default 0..9 repeated); must be None otherwise.
        temperature: divides the logits (< 1 sharper, > 1 noisier).
        fast: compute only the current position of each layer (see the module docstring); False runs
            the full network once per pixel. Both use the same random numbers, so they agree.
        """
        labels = sample_labels(n, labels, temperature, self.conditional)
        self.eval()
        s = self.image_size
        # One uniform number per pixel, drawn up front: both samplers consume the same ones.
        uniforms = resolve(generator).uniform((n, s * s), dtype=np.float64)
        sampler = self._sample_fast if fast else self._sample_naive
        chunks = []
        with no_grad():   # in chunks: the fast sampler's caches hold n * channels * S^2 floats per block
            for k in range(0, n, SAMPLE_CHUNK):
                part = slice(k, k + SAMPLE_CHUNK)
                chunks.append(sampler(uniforms[part], None if labels is None else labels[part], temperature))
        return np.concatenate(chunks)

    def _sample_naive(self, uniforms, labels, temperature):
        n, s = len(uniforms), self.image_size
        x = np.zeros((n, 1, s, s), np.float32)
        for t in range(s * s):
            i, j = divmod(t, s)
            logits = self(Tensor(x), labels).data[:, :, i, j]
            x[:, 0, i, j] = draw_pixel(logits, uniforms[:, t], temperature, self.hparams.output)
        return x

    def _sample_fast(self, uniforms, labels, temperature):
        """Per step, each layer at the current position only. Caches (zero-padded, as the convs pad):
        the image for the 7x7 input layer, and ReLU(h) before each 3x3 block, filled in as we go."""
        n, s, c = len(uniforms), self.image_size, self.hparams.channels
        x_pad = np.zeros((n, 1, s + 6, s + 6), np.float32)
        relu_pads = [np.zeros((n, c, s + 2, s + 2), np.float32) for _ in self.blocks]
        layers = [self.input, *self.blocks, self.hidden, self.output]
        matrices = {id(layer): layer.weight_matrix() for layer in layers}
        maps = None if self.label_map is None else self.label_map.data[labels]

        def at(layer, window):
            return layer.at(window, matrices[id(layer)], labels)

        # each step's products are far too small to share between threads (see kernels.conv.serial_below)
        with serial_below(n * c * c * 9, SERIAL_MULTIPLY_ADDS):
            for t in range(s * s):
                i, j = divmod(t, s)
                h = at(self.input, x_pad[:, :, i:i + 7, j:j + 7])
                if maps is not None:
                    h = h + maps[:, :, i, j]
                for block, pad in zip(self.blocks, relu_pads):
                    pad[:, :, i + 1, j + 1] = np.maximum(h, 0)
                    h = h + at(block, pad[:, :, i:i + 3, j:j + 3])
                h = at(self.hidden, np.maximum(h, 0)[:, :, None, None])
                logits = at(self.output, np.maximum(h, 0)[:, :, None, None])
                x_pad[:, 0, i + 3, j + 3] = draw_pixel(logits, uniforms[:, t], temperature, self.hparams.output)
        return x_pad[:, :, 3:-3, 3:-3].copy()

    def generation_frames(self, generator=None, frames: int = 29, temperature: float = 1.0, samples=None):
        """10 samples (the digits 0-9 when conditional) drawn pixel by pixel: a minigen.animate.Frames.
        samples: (10, 1, S, S) already drawn by this model (skips sampling them again)."""
        from minigen.animate import Frames
        labels = np.arange(10) if self.conditional else None
        if samples is None:
            samples = self.sample(10, labels, generator, temperature=temperature)
        canvases = np.stack([pixel_by_pixel_strip(image, frames) for image in samples], axis=1)
        pixels = np.linspace(0, self.image_size ** 2, frames).round().astype(int)
        return Frames(canvases, [f"{p} of {self.image_size ** 2} pixels drawn" for p in pixels],
                      None if labels is None else list(labels), "PixelCNN: one pixel at a time")

    def figures(self, out_dir, x, y, generator=None) -> list:
        """A grid of samples: one row per digit for a conditional model."""
        per_row = 8
        labels = np.repeat(np.arange(NUM_CLASSES), per_row) if self.conditional else None
        images = self.sample(NUM_CLASSES * per_row, labels, generator)
        title = "PixelCNN samples" + (" (row = digit 0..9)" if self.conditional else "")
        return [save_grid(images, os.path.join(out_dir, "pixelcnn_samples.png"), nrow=per_row, title=title)]
