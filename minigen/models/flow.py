"""RealNVP (Dinh et al. 2017): a normalizing flow, an invertible map with an exact likelihood.

The idea. Push a data point x through an invertible map f to a code z = f(x)
with a simple density p(z) = N(0, I). The change-of-variables formula gives
the exact density of x:

    log p(x) = log p(f(x)) + log |det df/dx|.

f is a stack of layers, each invertible with a cheap log-determinant, and the
log-determinants add up. Every layer here offers `forward(x) -> (z, log_det)`
(log_det: (N,), one per example) and `inverse(z) -> x`, and so does the flow.

The layers, in the order the data meets them:

* `LogitTransform`: images live in (0, 1); the flow wants all of R. With
  y = alpha + (1 - 2 alpha) x (alpha = 0.05 keeps y away from 0 and 1),
  z = logit(y) = log y - log(1 - y), and log|dz/dx| = log(1 - 2 alpha) - log y - log(1 - y).
* `ActNorm` (optional, Glow): a per-channel (conv) or per-pixel (mlp) affine
  map whose scale and shift start at the first batch's statistics, so every
  layer starts with zero-mean, unit-variance activations.
* `AffineCoupling`: split the dimensions with a binary mask b. The kept half
  x_b = b * x passes unchanged; it drives a network giving a scale s and a
  shift t for the other half:
      z = b * x + (1 - b) * (x * exp(s) + t),   log_det = sum((1 - b) * s).
  The Jacobian is triangular, hence the cheap determinant; the inverse just
  undoes the affine map, because s and t depend only on the unchanged half.
  s = scale * tanh(raw) keeps exp(s) bounded, which keeps training stable.
  Masks alternate so every pixel is transformed: a *checkerboard* over the
  pixels, and (conv variant) a *channel* mask after a `Squeeze`, which
  folds each 2x2 block of pixels into 4 channels.
* `InvertibleConv1x1` (glow variant, Kingma & Dhariwal 2018): z = W x at every pixel, a learned
  C x C matrix mixing the channels, in place of a fixed alternation of masks; its log-determinant
  is H * W * log|det W|, cheap because W is kept as an LU product.
* `ChannelCoupling` (glow variant): the affine coupling above with the mask "first half of the
  channels" written as a split, so the network only sees (and only pays for) the kept half.
* `FactorOut` (glow variant, the multi-scale architecture of Dinh et al. 2017): after a level, half
  the channels are final and leave the flow; only the other half goes on to the next level.

Likelihood in bits per dimension. Pixels are integers 0..255. Uniform
dequantization, v = (pixel + u) / 256 with u ~ U[0, 1), gives a continuous
variable whose density bounds the discrete likelihood from below. On the
0..255 scale the density of pixel + u is p(v) / 256^D, so

    bits/dim = -(log p(v) - D log 256) / (D log 2),    D = 784,

where log p(v) includes the logit transform's Jacobian. (The logit maps (0, 1)
onto the box (-b, b), b = logit(1 - alpha), not onto all of R, so the model's
density on (0, 1)^D integrates to slightly less than 1 and the bits/dim it
reports are a slightly conservative bound.) Published RealNVP on MNIST: about
1.06 bits/dim.

Variants (config "variant"): "mlp", 8 couplings with alternating checkerboard
masks and coupling networks 784-512-512 -> (scale, shift); "conv", 4 checkerboard
couplings on the 1x28x28 image, a squeeze, and 4 channel-mask couplings on 4x14x14,
with small convolutional networks; "glow", the multi-scale architecture: a squeeze to 4x14x14,
K steps of [ActNorm, InvertibleConv1x1, ChannelCoupling], half the channels factored out, a squeeze
to 8x7x7 and K more steps (K = num_couplings / 2), z flattened to (N, 784) (`glow_layers`).
"conditional" feeds the one-hot label to every coupling network, so `sample(labels=...)` draws a
chosen digit.

The prior (config "prior"). "standard": p(z) = N(0, I), the same for every digit, so the
coupling networks alone must carry the label into x. "class" (conditional models only, Glow's
class-conditional prior): p(z | y) = N(mu_y, diag(sigma_y^2)), a learned mean and log-scale per
digit, with

    log p(z | y) = log N((z - mu_y) / sigma_y; 0, I) - sum(log sigma_y).

The label then also decides *where in z-space* a digit lives, which a short run learns much
sooner than label-dependent couplings: mu_y starts at the first training batch's mean code of
digit y (a data-dependent start, like ActNorm's), and sampling draws z = mu_y + T sigma_y eps.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, eval_examples_knob, excluded,
                            grad_clip_knob, knob, lr_knob, seed_knob)
from minigen.errors import ConfigError
from minigen.data import dequantize_uniform
from minigen.models.base import (GenerativeModel, check_images, check_labels, check_temperature, condition_labels,
                                 one_hot, register_family)
from minigen.nn import Buffer, Conv2d, Linear, Module, Parameter
from minigen.optim import Adam
from minigen.random import Generator, resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["RealNVP", "FlowConfig", "LogitTransform", "ActNorm", "AffineCoupling", "Squeeze", "MLPCouplingNet",
           "ConvCouplingNet", "InvertibleConv1x1", "GlowCouplingNet", "ChannelCoupling", "FactorOut", "glow_steps",
           "glow_layers", "through_layers", "back_through_layers", "ClassPrior", "checkerboard_mask", "channel_mask",
           "standard_normal_log_prob", "bits_per_dim"]

IMAGE_SHAPE = (1, 28, 28)


# --- the hyper-parameters (`minigen train flow --help` lists them; --set KEY=VALUE changes one) -------------
@dataclass(frozen=True)
class FlowConfig(HyperParameters):
    variant: str = knob("mlp", doc="mlp: checkerboard couplings; conv: checkerboard, squeeze, channel; "
                        "glow: ActNorm, 1x1 conv, channel coupling at two scales", choices=("mlp", "conv", "glow"))
    conditional: bool = conditional_knob(doc="every coupling network also sees the one-hot label")
    num_couplings: int = knob(8, 2, 64, "affine coupling layers (even for conv and glow: half per scale)")
    hidden_dim: int = knob(512, 1, 16384, "mlp coupling networks: D-hidden-hidden-2D")
    hidden_channels: int = knob(64, 1, 1024, "conv and glow coupling networks: convs with this many channels")
    actnorm: bool = knob(False, doc="an ActNorm layer before every coupling (glow: always)")
    prior: str = knob("standard", doc="standard: z ~ N(0, I); class: a learned N(mu_y, sigma_y^2) per digit "
                      "(conditional models)", choices=("standard", "class"))
    alpha: float = knob(0.05, 0.0, excluded(0.5), "logit transform margin")
    num_classes: int = knob(10, 10, 1000, "label classes of a conditional model (digits: 10)")
    lr: float = lr_knob(1e-4)                 # 1e-3 gives loss spikes in the first hundred steps
    batch_size: int = batch_size_knob(128)
    grad_clip: float | None = grad_clip_knob(100.0)
    # Evaluation: the literature uses all 10,000 test images. The dequantization noise is drawn
    # from eval_seed, so numbers are comparable.
    eval_examples: int | None = eval_examples_knob(2000)
    eval_batch_size: int = knob(500, 1, 100_000, "test images per evaluation batch")
    eval_seed: int = seed_knob("the dequantization noise of evaluation")

    def check(self) -> None:
        if self.variant in ("conv", "glow") and self.num_couplings % 2:
            raise ConfigError(f"num_couplings={self.num_couplings} must be even for variant={self.variant} "
                              f"(half the couplings come after the squeeze)")
        if self.prior == "class" and not self.conditional:
            raise ConfigError("prior=class needs conditional=true (a prior per digit needs the digit)")

    def memory_floats(self) -> tuple[int, int]:
        d, k = 784, self.num_couplings
        label = self.num_classes if self.conditional else 0
        if self.variant == "glow":
            hc, half = self.hidden_channels, k // 2
            params, activations = 0, 0
            for c, pixels in ((4, 196), (8, 49)):      # the two scales: 4x14x14, then 8x7x7
                step = (2 * c + 2 * c * c + c                         # ActNorm, the 1x1 conv's L, U, log_s
                        + (9 * (c // 2) + label + hc + 2) * hc + (9 * hc + 1) * c + c // 2)    # the coupling
                params += half * step
                activations += half * pixels * (4 * hc + 12 * c)
        elif self.variant == "conv":
            hc = self.hidden_channels
            params = k * 9 * ((4 + label) * hc + hc * hc + hc * 8)        # up to 4 channels after the squeeze
            activations = k * (2 * 2 * hc * d + 8 * d)
        else:
            h = self.hidden_dim
            params = k * ((d + label) * h + h * h + h * 2 * d)
            activations = k * (2 * 2 * h + 8 * d)
        if self.prior == "class":
            params += 2 * self.num_classes * d
        return params, activations

    def eval_memory_floats(self) -> tuple[int, str]:
        # log_prob of one evaluation batch without gradients: about half a training example's activations each
        n = min(self.eval_batch_size, self.eval_examples or self.eval_batch_size)
        return n * self.memory_floats()[1] // 2, f"eval_batch_size={self.eval_batch_size}"


def _per_example_sum(t: Tensor) -> Tensor:
    """(N, ...) -> (N,): the sum over everything but the batch axis."""
    return t.reshape(len(t), -1).sum(axis=1)


# --- masks ----------------------------------------------------------------------------------------
def checkerboard_mask(channels: int, height: int, width: int, parity: int) -> np.ndarray:
    """(1, C, H, W) float32: 1 where (row + col) % 2 == parity (those pixels are kept), else 0."""
    rows, cols = np.indices((height, width))
    board = ((rows + cols) % 2 == parity).astype(np.float32)
    return np.broadcast_to(board, (1, channels, height, width)).copy()


def channel_mask(channels: int, parity: int) -> np.ndarray:
    """(1, C, 1, 1) float32: 1 on the first half of the channels (parity 0) or the second (parity 1)."""
    mask = np.zeros((1, channels, 1, 1), np.float32)
    half = channels // 2
    mask[:, :half] = 1
    return mask if parity == 0 else 1 - mask


# --- layers: each has forward(x, labels) -> (z, log_det) and inverse(z, labels) -> x ------------
class LogitTransform(Module):
    """(0, 1) -> R: z = logit(alpha + (1 - 2 alpha) x). No parameters. x: (N, ...)."""

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        y = x * (1 - 2 * self.alpha) + self.alpha
        log_y, log_1my = y.log(), (1 - y).log()
        log_det = _per_example_sum(math.log(1 - 2 * self.alpha) - log_y - log_1my)
        return log_y - log_1my, log_det

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        return (ops.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)


class ActNorm(Module):
    """z = (x + bias) * exp(log_scale), bias and log_scale of shape `shape` (e.g. (1, C, 1, 1)),
    broadcast over the other axes. The first forward pass in training mode sets them so that
    this batch comes out with zero mean and unit variance over the broadcast axes (Glow's
    data-dependent initialisation); `initialized` records that, also in checkpoints.
    """

    def __init__(self, shape):
        self.bias = Parameter(np.zeros(shape, np.float32))
        self.log_scale = Parameter(np.zeros(shape, np.float32))
        self.initialized = Buffer(np.zeros((), np.float32))

    def _initialize(self, x: np.ndarray) -> None:
        axes = tuple(i for i, n in enumerate((1,) + self.bias.shape[1:]) if n == 1)
        self.bias.data[...] = -x.mean(axis=axes, keepdims=True)
        self.log_scale.data[...] = -np.log(x.std(axis=axes, keepdims=True) + 1e-6)
        self.initialized.data = np.ones((), np.float32)

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized.data:
            self._initialize(x.data)
        positions = int(np.prod(x.shape[1:])) // self.log_scale.size      # how often each log_scale entry is applied
        log_det = self.log_scale.sum() * positions
        return (x + self.bias) * self.log_scale.exp(), log_det * Tensor(np.ones(len(x), x.dtype))

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        return z * (-self.log_scale).exp() - self.bias


class Squeeze(Module):
    """(N, C, H, W) -> (N, 4C, H/2, W/2): each 2x2 block of pixels becomes 4 channels. Volume-preserving."""

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        z = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return z, Tensor(np.zeros(n, x.dtype))

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        n, c4, h, w = z.shape
        return z.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c4 // 4, 2 * h, 2 * w)


class MLPCouplingNet(Module):
    """x_b (N, C, H, W) [+ one-hot label] -> flattened -> hidden -> hidden -> (raw scale, shift), each (N, C, H, W)."""

    def __init__(self, shape, hidden: int, label_dim: int = 0):
        self.shape, self.label_dim = tuple(shape), label_dim
        dim = int(np.prod(shape))
        self.hidden1 = Linear(dim + label_dim, hidden)
        self.hidden2 = Linear(hidden, hidden)
        self.out = Linear(hidden, 2 * dim)
        # start as the identity map (s = t = 0): deep flows train far more stably that way
        self.out.weight.data[...] = 0
        self.out.bias.data[...] = 0

    def forward(self, x_b: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        h = x_b.reshape(len(x_b), -1)
        if self.label_dim:
            h = ops.concat([h, Tensor(one_hot(labels, self.label_dim, h.dtype))], axis=1)
        h = self.out(ops.relu(self.hidden2(ops.relu(self.hidden1(h))))).reshape(len(x_b), 2, *self.shape)
        return h[:, 0], h[:, 1]


class ConvCouplingNet(Module):
    """x_b (N, C, H, W) [+ one-hot label as constant planes] -> 3x3 convs (ReLU after the first two)
    -> (raw scale, shift), each (N, C, H, W)."""

    def __init__(self, channels: int, hidden: int, label_dim: int = 0):
        self.channels, self.label_dim = channels, label_dim
        self.conv1 = Conv2d(channels + label_dim, hidden, 3, padding=1, relu=True)   # conv + ReLU in one op
        self.conv2 = Conv2d(hidden, hidden, 3, padding=1, relu=True)
        self.out = Conv2d(hidden, 2 * channels, 3, padding=1)
        self.out.weight.data[...] = 0       # identity at the start, as in MLPCouplingNet
        self.out.bias.data[...] = 0

    def forward(self, x_b: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        n, c, h, w = x_b.shape
        if self.label_dim:
            planes = np.broadcast_to(one_hot(labels, self.label_dim, x_b.dtype)[:, :, None, None],
                                     (n, self.label_dim, h, w))
            x_b = ops.concat([x_b, Tensor(planes)], axis=1)
        out = self.out(self.conv2(self.conv1(x_b)))
        return out[:, :c], out[:, c:]


class AffineCoupling(Module):
    """z = b * x + (1 - b) * (x * exp(s) + t), with (s, t) = net(b * x) and s = scale * tanh(raw).

    mask b: (1, C, H, W) or broadcastable (1, C, 1, 1), 1 = kept. x: (N, C, H, W).
    """

    def __init__(self, mask: np.ndarray, net: Module):
        self.mask = mask
        self.net = net
        self.scale = Parameter(np.ones((1, mask.shape[1], 1, 1), np.float32))

    def _scale_shift(self, x_b: Tensor, labels) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(x_b, labels)
        changed = 1 - self.mask
        return self.scale * ops.tanh(raw) * changed, shift * changed   # zero on the kept half

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        # BEGIN SOLUTION flow: (s, t) from the kept half x * mask; other half -> x * exp(s) + t; log-det per example
        x_b = x * self.mask
        s, t = self._scale_shift(x_b, labels)
        return x_b + (x * s.exp() + t) * (1 - self.mask), _per_example_sum(s)
        # END SOLUTION

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        # BEGIN SOLUTION flow: the kept half is unchanged, so recompute (s, t) from it and solve forward for x
        z_b = z * self.mask
        s, t = self._scale_shift(z_b, labels)
        return z_b + ((z - t) * (-s).exp()) * (1 - self.mask)
        # END SOLUTION


def through_layers(layers, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
    """x through every layer in turn -> (the output, the layers' log-determinants summed, (N,))."""
    log_det = Tensor(np.zeros(len(x), x.dtype))
    for layer in layers:
        x, layer_log_det = layer(x, labels)
        log_det = log_det + layer_log_det
    return x, log_det


def back_through_layers(layers, z: Tensor, labels=None) -> Tensor:
    """z through every layer's inverse, last layer first: undoes `through_layers`."""
    for layer in reversed(layers):
        z = layer.inverse(z, labels)
    return z


# --- Glow's layers (variant "glow") --------------------------------------------------------------
class InvertibleConv1x1(Module):
    """Glow's invertible 1x1 convolution: z[:, :, i, j] = W x[:, :, i, j] at every pixel, W a C x C matrix.

    A fixed alternation of masks (checkerboard, first half, second half) decides by hand which
    dimensions a coupling changes; a learned W mixes the channels instead, so the next coupling's
    "first half" is whatever combination of channels training finds useful. x, z: (N, C, H, W).

    The log-determinant. The map acts on each of the H * W pixels with the same W, so its Jacobian
    is block-diagonal with H * W copies of W and log|det| = H * W * log|det W|, per example. A
    determinant costs O(C^3) in general; Glow keeps W in LU form so that it costs O(C):

        W = P L (U + diag(sign_s * exp(log_s))),

    P a fixed permutation, L unit lower-triangular (ones on the diagonal), U strictly upper
    triangular, sign_s fixed signs +-1. det P = +-1, det L = 1 and the bracket is upper triangular
    with diagonal sign_s * exp(log_s), so log|det W| = sum(log_s). The trained parameters are L's
    and U's free entries (`lower`, `upper`, kept triangular by masks) and log_s; P and sign_s are
    buffers: they never change, but a checkpoint must keep them.

    W starts as a random rotation (orthogonal, log|det W| = 0): the layer starts volume-preserving,
    mixing the channels without stretching them. The inverse uses the inverse matrix, x = W^-1 z,
    computed in float64 from the current weights; sampling needs no gradient through it.
    """

    def __init__(self, channels: int, generator=None):
        import scipy.linalg                                    # scipy is a dependency; only this layer needs it
        rotation, _ = np.linalg.qr(resolve(generator).normal((channels, channels), dtype=np.float64))
        p, lower, upper = scipy.linalg.lu(rotation)             # rotation = p @ lower @ upper
        diagonal = np.diag(upper)
        self.permutation = Buffer(p.astype(np.float32))
        self.sign_s = Buffer(np.sign(diagonal).astype(np.float32))
        self.lower = Parameter(np.tril(lower, -1).astype(np.float32))
        self.upper = Parameter(np.triu(upper, 1).astype(np.float32))
        self.log_s = Parameter(np.log(np.abs(diagonal)).astype(np.float32))
        # masks keep L and U triangular: the entries outside get no gradient, so they stay as they are
        self.lower_mask = np.tril(np.ones((channels, channels), np.float32), -1)
        self.upper_mask = np.triu(np.ones((channels, channels), np.float32), 1)
        self.eye = np.eye(channels, dtype=np.float32)

    def weight(self) -> Tensor:
        """W = P L (U + diag(sign_s * exp(log_s))): (C, C)."""
        lower = self.lower * self.lower_mask + self.eye
        # (C,) * (C, C) scales column j of the identity by entry j: the diagonal matrix
        upper = self.upper * self.upper_mask + (self.log_s.exp() * self.sign_s.data) * self.eye
        return ops.matmul(self.permutation.data, ops.matmul(lower, upper))

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        # (C, C) @ (N, C, H*W): the matrix product broadcasts W over the batch, one W x per pixel
        z = ops.matmul(self.weight(), x.reshape(n, c, h * w)).reshape(n, c, h, w)
        log_det = self.log_s.sum() * (h * w)
        return z, log_det * Tensor(np.ones(n, x.dtype))

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        n, c, h, w = z.shape
        with no_grad():
            w_inverse = np.linalg.inv(self.weight().data.astype(np.float64)).astype(z.dtype)
        return ops.matmul(w_inverse, z.reshape(n, c, h * w)).reshape(n, c, h, w)


class GlowCouplingNet(Module):
    """x_a (N, C_a, H, W) [+ label] -> 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv -> (raw scale, shift),
    each (N, C_b, H, W): Glow's coupling network (the 1x1 conv in the middle keeps it cheap).

    The label enters as a learned per-channel bias of the first conv, one vector per digit
    (a Linear of the one-hot label). That equals ConvCouplingNet's constant one-hot planes
    through the first 3x3 conv except at the zero-padded border, and the first conv reads C_a
    channels instead of C_a + 10 (here C_a is 2 or 4)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int, label_dim: int = 0):
        self.out_channels, self.label_dim = out_channels, label_dim
        self.conv1 = Conv2d(in_channels, hidden, 3, padding=1, relu=not label_dim)
        self.label_bias = Linear(label_dim, hidden, bias=False) if label_dim else None
        self.conv2 = Conv2d(hidden, hidden, 1, relu=True)
        self.out = Conv2d(hidden, 2 * out_channels, 3, padding=1)
        self.out.weight.data[...] = 0       # identity at the start, as in MLPCouplingNet
        self.out.bias.data[...] = 0

    def forward(self, x_a: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        h = self.conv1(x_a)
        if self.label_dim:
            bias = self.label_bias(Tensor(one_hot(labels, self.label_dim, x_a.dtype)))     # (N, hidden)
            h = ops.relu(h + bias.reshape(len(x_a), -1, 1, 1))
        out = self.out(self.conv2(h))
        c = self.out_channels
        return out[:, :c], out[:, c:]


class ChannelCoupling(Module):
    """The affine coupling on a channel split: x = (x_a, x_b), the first C_a = C // 2 channels and the rest.

        z_a = x_a,   z_b = x_b * exp(s) + t,   (s, t) = net(x_a),   s = scale * tanh(raw),
        log_det = sum(s).

    AffineCoupling with channel_mask(C, 0), written as a split so that the network only sees the
    C_a kept channels and only produces the C - C_a changed ones. Always the first half: the
    InvertibleConv1x1 before it decides what the first half holds. x, z: (N, C, H, W).
    """

    def __init__(self, channels: int, net: Module):
        self.half = channels // 2
        self.net = net
        self.scale = Parameter(np.ones((1, channels - self.half, 1, 1), np.float32))

    def _scale_shift(self, x_a: Tensor, labels) -> tuple[Tensor, Tensor]:
        raw, shift = self.net(x_a, labels)
        return self.scale * ops.tanh(raw), shift

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        x_a, x_b = x[:, :self.half], x[:, self.half:]
        s, t = self._scale_shift(x_a, labels)
        return ops.concat([x_a, x_b * s.exp() + t], axis=1), _per_example_sum(s)

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        z_a, z_b = z[:, :self.half], z[:, self.half:]
        s, t = self._scale_shift(z_a, labels)     # z_a = x_a: the same (s, t) as on the way forward
        return ops.concat([z_a, (z_b - t) * (-s).exp()], axis=1)


class FactorOut(Module):
    """The multi-scale step: (N, C, H, W) -> (N, D) flat, D = C * H * W.

    The first C // 2 channels are final here: they leave the flow as they are. The rest go on
    through `layers` (e.g. a squeeze and more steps), which end in shape `inner_shape` (per example).
    z = concat(flatten(x[:, :C//2]), flatten(layers(x[:, C//2:]))) in that fixed order, so the
    prior sees one flat vector. The map is a split and a flow on one part: log_det = that of
    `layers`. Half the dimensions thus skip the deeper layers, which halves their cost, and the
    deeper layers model coarse structure at a lower resolution.
    """

    def __init__(self, channels: int, height: int, width: int, layers: list, inner_shape):
        self.half = channels // 2
        self.out_shape = (self.half, height, width)
        self.layers = layers
        self.inner_shape = tuple(inner_shape)

    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        n = len(x)
        h, log_det = through_layers(self.layers, x[:, self.half:], labels)
        return ops.concat([x[:, :self.half].reshape(n, -1), h.reshape(n, -1)], axis=1), log_det

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        n, split = len(z), int(np.prod(self.out_shape))
        h = back_through_layers(self.layers, z[:, split:].reshape(n, *self.inner_shape), labels)
        return ops.concat([z[:, :split].reshape(n, *self.out_shape), h], axis=1)


# --- the prior and the units ----------------------------------------------------------------------
def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) per example: (N, ...) -> (N,)."""
    return _per_example_sum((z * z + math.log(2 * math.pi)) * -0.5)


class ClassPrior(Module):
    """p(z | y) = N(mu_y, diag(sigma_y^2)) with a learned mean and log sigma per class, each of the
    latent shape: mean, log_scale (num_classes, *shape). z: (N, *shape), labels: (N,) int.

    The first log_prob in training mode sets mu_y to that batch's mean z of class y (the batch mean
    for a class the batch lacks), so a short run starts with every digit at its own place in z-space
    instead of waiting for Adam to carry the means there at lr-sized steps; `initialized` records
    that, also in checkpoints (as in ActNorm)."""

    def __init__(self, num_classes: int, shape):
        self.mean = Parameter(np.zeros((num_classes, *shape), np.float32))
        self.log_scale = Parameter(np.zeros((num_classes, *shape), np.float32))
        self.initialized = Buffer(np.zeros((), np.float32))

    def _initialize(self, z: np.ndarray, labels: np.ndarray) -> None:
        overall = z.mean(axis=0)
        for digit in range(len(self.mean.data)):
            mine = z[labels == digit]
            self.mean.data[digit] = mine.mean(axis=0) if len(mine) else overall
        self.initialized.data = np.ones((), np.float32)

    def log_prob(self, z: Tensor, labels: np.ndarray) -> Tensor:
        """log N(z; mu_y, sigma_y^2) per example: (N, *shape) -> (N,)."""
        if self.training and not self.initialized.data:
            self._initialize(z.data, labels)
        log_scale = self.log_scale[labels]
        return standard_normal_log_prob((z - self.mean[labels]) * (-log_scale).exp()) - _per_example_sum(log_scale)

    def latent(self, noise: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
        """z = mu_y + temperature * sigma_y * noise, noise ~ N(0, I) of shape (N, *shape)."""
        scale = np.exp(self.log_scale.data[labels]) * np.float32(temperature)
        return (self.mean.data[labels] + scale * noise).astype(np.float32)


def bits_per_dim(log_prob_01, num_dims: int):
    """log density of dequantized images on [0, 1]^D (nats) -> bits/dim on the 0..255 pixel scale."""
    return -(log_prob_01 - num_dims * math.log(256)) / (num_dims * math.log(2))


# --- the model ------------------------------------------------------------------------------------
def glow_steps(channels: int, steps: int, hidden: int, label_dim: int) -> list[Module]:
    """`steps` Glow steps on `channels` channels: each ActNorm, InvertibleConv1x1, ChannelCoupling."""
    layers: list[Module] = []
    for _ in range(steps):
        net = GlowCouplingNet(channels // 2, channels - channels // 2, hidden, label_dim)
        layers += [ActNorm((1, channels, 1, 1)), InvertibleConv1x1(channels), ChannelCoupling(channels, net)]
    return layers


def glow_layers(steps: int, hidden: int, label_dim: int) -> list[Module]:
    """The glow variant after the logit transform: two scales, z flat (N, 784) at the end.

        (N, 1, 28, 28) -squeeze-> (N, 4, 14, 14) -steps-> FactorOut: channels 0-1 -> z[:, :392]
                                                                      channels 2-3 -squeeze-> (N, 8, 7, 7)
                                                                      -steps-> z[:, 392:]
    """
    inner = [Squeeze(), *glow_steps(8, steps, hidden, label_dim)]
    return [Squeeze(), *glow_steps(4, steps, hidden, label_dim), FactorOut(4, 14, 14, inner, (8, 7, 7))]


@register_family("flow")
class RealNVP(GenerativeModel):
    """The flow: logit transform, then (ActNorm +) affine couplings (variant glow: `glow_layers`); prior
    N(0, I) on the output, or a ClassPrior N(mu_y, sigma_y^2) with config prior="class"."""

    likelihood_metric = "bits_per_dim"
    Config = FlowConfig

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        c = self.hparams
        n_couplings = c.num_couplings
        self.num_classes = c.num_classes
        label_dim = self.num_classes if self.conditional else 0
        layers: list[Module] = [LogitTransform(c.alpha)]
        shape = IMAGE_SHAPE
        if c.variant == "glow":
            layers.extend(glow_layers(n_couplings // 2, c.hidden_channels, label_dim))
            shape = (int(np.prod(IMAGE_SHAPE)),)          # z comes out flat, (N, 784)
        else:
            for i in range(n_couplings):
                if c.variant == "mlp":
                    mask = checkerboard_mask(*shape, parity=i % 2)
                    net = MLPCouplingNet(shape, c.hidden_dim, label_dim)
                else:
                    if i == n_couplings // 2:             # second half: 4 x 14 x 14 with channel masks
                        layers.append(Squeeze())
                        shape = (4 * shape[0], shape[1] // 2, shape[2] // 2)
                    first_half = i < n_couplings // 2
                    mask = checkerboard_mask(*shape, parity=i % 2) if first_half else channel_mask(shape[0], i % 2)
                    net = ConvCouplingNet(shape[0], c.hidden_channels, label_dim)
                if c.actnorm:
                    layers.append(ActNorm((1, shape[0], 1, 1) if c.variant == "conv" else (1, *shape)))
                layers.append(AffineCoupling(mask, net))
        self.layers = layers
        self.latent_shape = shape
        self.prior = ClassPrior(self.num_classes, shape) if c.prior == "class" else None

    # --- the flow -------------------------------------------------------------------------
    def forward(self, x: Tensor, labels=None) -> tuple[Tensor, Tensor]:
        """x: (N, 1, 28, 28) in (0, 1) -> z (N, *latent_shape), log|det dz/dx| (N,)."""
        return through_layers(self.layers, x, labels)

    def inverse(self, z: Tensor, labels=None) -> Tensor:
        """z: (N, *latent_shape) -> x (N, 1, 28, 28) in (0, 1)."""
        return back_through_layers(self.layers, z, labels)

    def log_prob(self, v: Tensor, labels=None) -> Tensor:
        """log p(v) in nats per example, v: (N, 1, 28, 28) dequantized images in (0, 1) -> (N,)."""
        z, log_det = self(v, labels)
        return (standard_normal_log_prob(z) if self.prior is None else self.prior.log_prob(z, labels)) + log_det

    @staticmethod
    def dequantize(x: np.ndarray, generator) -> np.ndarray:
        """x (N, 1, 28, 28) = pixel / 255 -> (pixel + u) / 256, u ~ U[0, 1), strictly inside (0, 1)."""
        pixels = np.rint(x[:, 0] * 255).astype(np.uint8)
        return dequantize_uniform(pixels, generator)

    # --- training -------------------------------------------------------------------------
    def make_optimizers(self) -> dict:
        return {"model": Adam(self.parameters(), lr=self.hparams.lr)}

    def train_step(self, x, y, optimizers, generator=None) -> dict:
        """Minimise bits/dim (the NLL, rescaled) on a freshly dequantized batch."""
        x = check_images("RealNVP.train_step", x)
        y = check_labels("RealNVP.train_step", y, len(x), self.num_classes)
        self.train()
        v = Tensor(self.dequantize(x, resolve(generator)))
        loss = bits_per_dim(self.log_prob(v, y if self.conditional else None), int(np.prod(IMAGE_SHAPE))).mean()
        grad_norm = self.optimize(loss, optimizers["model"], self.hparams.grad_clip)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    # --- sampling -------------------------------------------------------------------------
    def sample(self, n: int, labels=None, generator=None, temperature: float = 1.0) -> np.ndarray:
        """n images (n, 1, 28, 28) in [0, 1]: z from the prior with its noise scaled by temperature
        (N(0, T^2 I), or mu_y + T sigma_y eps), x = inverse(z), rounded to the 256 pixel levels.
        Temperatures below 1 trade variety for cleaner digits."""
        temperature = check_temperature("RealNVP.sample", temperature, scales_noise=True)
        labels = condition_labels("RealNVP.sample", labels, n, self.conditional, self.num_classes)
        noise = resolve(generator).normal((n, *self.latent_shape))
        return self.images_from_latent(self.latent_from_noise(noise, labels, temperature), labels)

    def latent_from_noise(self, noise: np.ndarray, labels, temperature: float) -> np.ndarray:
        """The prior's z for standard normal noise (n, *latent_shape) at a temperature."""
        if self.prior is None:
            return noise * np.float32(temperature)
        return self.prior.latent(noise, labels, temperature)

    def images_from_latent(self, z: np.ndarray, labels=None) -> np.ndarray:
        """x = inverse(z) rounded to the 256 pixel levels: z (n, *latent_shape) -> (n, 1, 28, 28) in [0, 1]."""
        self.eval()
        with no_grad():
            v = self.inverse(Tensor(z), labels).data
        pixels = np.floor(v * 256).clip(0, 255)      # v is (pixel + u) / 256
        return (pixels / 255).astype(np.float32)

    def generation_frames(self, generator=None, frames: int = 16, max_temperature: float = 1.2):
        """The temperature sweep: one z per column (the digits 0-9 when conditional) scaled by a
        temperature from 0 (the mode) to max_temperature: a minigen.animate.Frames."""
        from minigen.animate import Frames
        labels = np.arange(10) if self.conditional else None
        z = resolve(generator).normal((10, *self.latent_shape))
        temperatures = np.linspace(0, max_temperature, frames, dtype=np.float32)
        images = np.stack([self.images_from_latent(self.latent_from_noise(z, labels, t), labels) for t in temperatures])
        return Frames(images, [f"temperature {t:.2f}" for t in temperatures],
                      None if labels is None else list(labels), "Flow: the same z at rising temperature")

    # --- evaluation -----------------------------------------------------------------------
    def evaluate(self, x, y, generator=None) -> dict:
        """Test metrics: bits_per_dim (0..255 scale) and nll_nats (per image, same scale).

        Exact given the dequantization noise, which comes from the fixed seed config.eval_seed
        (so `generator` is not needed). Uses the first config.eval_examples examples (None: all);
        the literature reports the whole 10,000-image test set.
        """
        x = check_images("RealNVP.evaluate", x)
        y = check_labels("RealNVP.evaluate", y, len(x), self.num_classes)
        c = self.hparams
        if c.eval_examples is not None:
            x, y = x[:c.eval_examples], y[:c.eval_examples]
        v = self.dequantize(x, Generator(c.eval_seed))
        self.eval()
        log_p = []
        with no_grad():
            for start in range(0, len(v), c.eval_batch_size):
                sl = slice(start, start + c.eval_batch_size)
                log_p.append(self.log_prob(Tensor(v[sl]), y[sl] if self.conditional else None).data)
        log_p = np.concatenate(log_p).astype(np.float64)
        dims = int(np.prod(IMAGE_SHAPE))
        return {"bits_per_dim": float(bits_per_dim(log_p, dims).mean()),
                "nll_nats": float(-(log_p - dims * math.log(256)).mean()), "examples": len(x)}

    # --- pictures -------------------------------------------------------------------------
    def figures(self, out_dir, x, y, generator=None) -> list[str]:
        """Samples at temperatures 1.0, 0.8, 0.6 (one row of 10 each; with labels 0..9 when conditional),
        and test images beside inverse(forward(x)) as a visible invertibility check."""
        from minigen.plots import save_rows
        x = check_images("RealNVP.figures", x)
        y = check_labels("RealNVP.figures", y, len(x), self.num_classes)
        generator = resolve(generator)
        os.makedirs(out_dir, exist_ok=True)
        labels = np.arange(10) % self.num_classes if self.conditional else None
        rows = {f"T = {t}": self.sample(10, labels, generator, temperature=t) for t in (1.0, 0.8, 0.6)}
        paths = [save_rows(rows, os.path.join(out_dir, "samples_by_temperature.png"),
                           title="samples at three temperatures", col_labels=labels)]
        self.eval()
        with no_grad():
            v = self.dequantize(x[:10], Generator(self.hparams.eval_seed))
            cond = y[:10] if self.conditional else None
            back = self.inverse(self(Tensor(v), cond)[0], cond).data
        paths.append(save_rows({"x": v, "inverse(forward(x))": back}, os.path.join(out_dir, "invertibility.png"),
                               title="dequantized test images and their round trip through the flow"))
        return paths
