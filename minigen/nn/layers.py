"""Layers: small Modules that hold parameters and call ops from `minigen.ops`.

Shapes use N for batch, C for channels, H and W for height and width.
Defaults (initialisation, eps, momentum) follow PyTorch's, so a model built
here and its PyTorch twin start from the same distribution.
"""
from __future__ import annotations

import math

import numpy as np

from minigen import ops
from minigen.errors import ConfigError, ShapeError
from minigen.nn import init
from minigen.nn.module import Buffer, Module, Parameter
from minigen.random import resolve
from minigen.tensor import Tensor

__all__ = ["Linear", "Sequential", "Embedding", "Dropout", "Flatten", "ReLU", "LeakyReLU", "SiLU", "Tanh",
           "Sigmoid", "Softplus", "Conv2d", "ConvTranspose2d", "MaskedConv2d", "BatchNorm", "GroupNorm",
           "LayerNorm", "MaxPool2d", "AvgPool2d", "Upsample", "spectral_normalize"]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_args(layer: str, positive: dict, non_negative: dict | None = None) -> None:
    """Raise ConfigError naming the first argument of `layer` that is not an integer (or a pair of them, for
    kernel sizes, strides and paddings) > 0, respectively >= 0: a zero size fails later and far away
    (a division by zero in the initialiser, an empty weight)."""
    for low, args in ((1, positive), (0, non_negative or {})):
        for name, value in args.items():
            values = value if isinstance(value, (tuple, list)) else (value,)
            if not values or len(values) > 2 or not all(_is_int(v) and v >= low for v in values):
                raise ConfigError(f"{layer}: {name} must be {'a positive' if low else 'a non-negative'} integer"
                                  f"{' (or a pair of them)' if isinstance(value, (tuple, list)) else ''}, "
                                  f"got {value!r}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def spectral_normalize(weight: Tensor, u: Buffer, update: bool) -> Tensor:
    """weight / sigma (Miyato et al. 2018, "Spectral Normalization for GANs"), any shape (out, ...):
    sigma is the largest singular value of the weight as an (out, prod(rest)) matrix W, estimated by
    power iteration from u (out,), a unit vector kept between calls (a Buffer, so it is saved).

    update=True (training): one power-iteration step first, u <- W v / |W v| with v = W^T u / |W^T u|,
    stored in u; the estimate sharpens as training goes on, one cheap step per call. update=False: u as
    it is, so the same weights give the same result. Then v = W^T u / |W^T u| and sigma = u^T W v, whose
    gradient u v^T (u, v held constant, as in the paper) is exact for the u used: sigma = |W^T u|."""
    w = weight.data.reshape(len(weight.data), -1)
    if update:
        u.data = _unit(w @ _unit(w.T @ u.data)).astype(u.data.dtype)
    v = _unit(w.T @ u.data)
    sigma = (weight.reshape(*w.shape) * Tensor(np.outer(u.data, v), dtype=weight.dtype)).sum()
    return weight / sigma


def _spectral_u(spectral_norm: bool, out_features: int, generator) -> Buffer | None:
    """The power iteration's start for a layer with `spectral_norm`: a random unit vector (out_features,)."""
    return Buffer(_unit(resolve(generator).normal((out_features,))).astype(np.float32)) if spectral_norm else None


class Linear(Module):
    """y = x W^T + b. x: (..., in_features) -> (..., out_features).
    spectral_norm=True: W is used divided by its largest singular value (`spectral_normalize`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, generator=None,
                 spectral_norm: bool = False):
        _check_args("Linear", {"in_features": in_features, "out_features": out_features})
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.kaiming_uniform((out_features, in_features), generator=generator))
        bound = 1 / math.sqrt(in_features)
        self.bias = Parameter(resolve(generator).uniform((out_features,), -bound, bound)) if bias else None
        self.weight_u = _spectral_u(spectral_norm, out_features, generator)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}): input has shape {x.shape}, "
                             f"expected last dimension {self.in_features}")
        weight = self.weight if self.weight_u is None else spectral_normalize(self.weight, self.weight_u,
                                                                               self.training)
        return ops.linear(x, weight, self.bias)       # x @ weight.T + bias

    def __repr__(self):
        return f"Linear({self.in_features}, {self.out_features})"


class Sequential(Module):
    """Run layers one after another."""

    def __init__(self, *layers: Module):
        self.layers = list(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i):
        return self.layers[i]

    def __len__(self):
        return len(self.layers)


class Embedding(Module):
    """A lookup table: integer ids (any shape) -> vectors (..., dim). Used for class labels."""

    def __init__(self, num_embeddings: int, dim: int, generator=None):
        _check_args("Embedding", {"num_embeddings": num_embeddings, "dim": dim})
        self.num_embeddings = num_embeddings
        self.weight = Parameter(resolve(generator).normal((num_embeddings, dim)))

    def forward(self, ids) -> Tensor:
        ids = np.asarray(ids.data if isinstance(ids, Tensor) else ids)
        if ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings)):
            raise ShapeError(f"Embedding({self.num_embeddings}): ids must be integers in [0, "
                             f"{self.num_embeddings}), got dtype {ids.dtype}"
                             + (f" with range [{ids.min()}, {ids.max()}]" if ids.size else ""))
        return self.weight[ids]


class Dropout(Module):
    """Zero each value with probability p in training, scaling the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5, generator=None):
        if not 0 <= p < 1:
            raise ConfigError(f"Dropout: p must be in [0, 1), got {p}")
        self.p, self.generator = p, generator

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = resolve(self.generator).bernoulli(np.full(x.shape, 1 - self.p), dtype=x.dtype)
        return x * (keep / (1 - self.p))


class Flatten(Module):
    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x)


class _Activation(Module):
    """An op with no parameters as a layer (so it can sit in a Sequential)."""
    op = None

    def forward(self, x):
        return type(self).op(x)


class ReLU(_Activation):
    op = ops.relu


class SiLU(_Activation):
    op = ops.silu


class Tanh(_Activation):
    op = ops.tanh


class Sigmoid(_Activation):
    op = ops.sigmoid


class Softplus(_Activation):
    op = ops.softplus


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01):
        self.negative_slope = negative_slope

    def forward(self, x):
        return ops.leaky_relu(x, self.negative_slope)


# --- convolutional layers (ops in minigen/ops/conv.py, kernels in minigen/kernels/) ------
class Conv2d(Module):
    """x: (N, C_in, H, W) -> (N, C_out, H', W'). weight: (C_out, C_in / groups, kH, kW).
    relu=True: a ReLU follows, fused into the op (ops.conv2d says why). spectral_norm=True: the weight
    is used divided by its largest singular value as a (C_out, C_in / groups * kH * kW) matrix
    (`spectral_normalize`)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, generator=None, relu: bool = False, spectral_norm: bool = False):
        _check_args("Conv2d", {"in_channels": in_channels, "out_channels": out_channels, "kernel_size": kernel_size,
                               "stride": stride, "dilation": dilation, "groups": groups}, {"padding": padding})
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"Conv2d: in_channels={in_channels} and out_channels={out_channels} must both be "
                              f"divisible by groups={groups}")
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.relu = relu
        shape = (out_channels, in_channels // groups, kh, kw)
        self.weight = Parameter(init.kaiming_uniform(shape, generator=generator))
        bound = 1 / math.sqrt(init.fan_in_and_out(shape)[0])
        self.bias = Parameter(resolve(generator).uniform((out_channels,), -bound, bound)) if bias else None
        self.weight_u = _spectral_u(spectral_norm, out_channels, generator)

    def forward(self, x):
        weight = self.weight if self.weight_u is None else spectral_normalize(self.weight, self.weight_u,
                                                                               self.training)
        return ops.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                          relu=self.relu)


class MaskedConv2d(Conv2d):
    """PixelCNN's causal convolution: the kernel sees only pixels before the centre in raster
    order (type "A", for the first layer) or up to and including it (type "B")."""

    def __init__(self, in_channels, out_channels, kernel_size, mask_type: str, bias=True, generator=None):
        if mask_type not in ("A", "B"):
            raise ConfigError(f"MaskedConv2d: mask_type must be 'A' or 'B', got {mask_type!r}")
        _check_args("MaskedConv2d", {"kernel_size": kernel_size})
        kh, kw = _pair(kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, padding=(kh // 2, kw // 2), bias=bias,
                         generator=generator)
        self.mask_type = mask_type

    def forward(self, x):
        return ops.masked_conv2d(x, self.weight, self.bias, self.mask_type)


class ConvTranspose2d(Module):
    """The gradient of a convolution as a layer: upsamples. weight: (C_in, C_out / groups, kH, kW)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0,
                 bias=True, generator=None):
        _check_args("ConvTranspose2d", {"in_channels": in_channels, "out_channels": out_channels,
                                        "kernel_size": kernel_size, "stride": stride},
                    {"padding": padding, "output_padding": output_padding})
        kh, kw = _pair(kernel_size)
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        shape = (in_channels, out_channels, kh, kw)
        # PyTorch computes fan_in from weight.shape[1] * kernel area for this layout too
        self.weight = Parameter(init.kaiming_uniform(shape, generator=generator))
        bound = 1 / math.sqrt(init.fan_in_and_out(shape)[0])
        self.bias = Parameter(resolve(generator).uniform((out_channels,), -bound, bound)) if bias else None

    def forward(self, x):
        return ops.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)


class BatchNorm(Module):
    """Normalise each channel over the batch (and space). x: (N, C) or (N, C, H, W).

    Training uses the batch's statistics and updates running ones; eval uses the running ones.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        _check_args("BatchNorm", {"num_features": num_features})
        self.eps, self.momentum = eps, momentum
        self.weight = Parameter(np.ones(num_features, np.float32))
        self.bias = Parameter(np.zeros(num_features, np.float32))
        self.running_mean = Buffer(np.zeros(num_features, np.float32))
        self.running_var = Buffer(np.ones(num_features, np.float32))

    def forward(self, x):
        return ops.batch_norm(x, self.weight, self.bias, self.running_mean.data, self.running_var.data,
                              self.training, self.momentum, self.eps)


class GroupNorm(Module):
    """Normalise over groups of channels within each example. x: (N, C, H, W).
    silu=True: followed by SiLU, fused into the same kernel."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, silu: bool = False):
        _check_args("GroupNorm", {"num_groups": num_groups, "num_channels": num_channels})
        if num_channels % num_groups:
            raise ShapeError(f"GroupNorm: {num_channels} channels cannot be split into {num_groups} groups")
        self.num_groups, self.eps, self.silu = num_groups, eps, silu
        self.weight = Parameter(np.ones(num_channels, np.float32))
        self.bias = Parameter(np.zeros(num_channels, np.float32))

    def forward(self, x):
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.silu)


class LayerNorm(Module):
    """Normalise over the last dimension(s) given by `shape`."""

    def __init__(self, shape, eps: float = 1e-5):
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not shape or not all(_is_int(n) and n > 0 for n in shape):
            raise ConfigError(f"LayerNorm: shape must be a positive integer or a tuple of them, got {shape!r}")
        self.eps = eps
        self.weight = Parameter(np.ones(shape, np.float32))
        self.bias = Parameter(np.zeros(shape, np.float32))

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        _check_args(type(self).__name__, {"kernel_size": kernel_size, "stride": stride or kernel_size},
                    {"padding": padding})
        self.kernel_size, self.stride, self.padding = kernel_size, stride or kernel_size, padding

    def forward(self, x):
        return ops.max_pool2d(x, self.kernel_size, self.stride, self.padding)


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return ops.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class Upsample(Module):
    """Nearest-neighbour upsampling by an integer factor."""

    def __init__(self, scale_factor: int = 2):
        _check_args("Upsample", {"scale_factor": scale_factor})
        self.scale_factor = scale_factor

    def forward(self, x):
        return ops.upsample_nearest(x, self.scale_factor)
