"""Normalization ops: batch_norm, group_norm, layer_norm (kernels in `minigen.kernels.norm`).

weight and bias are optional (None means no affine part: 1 and 0).
"""
from __future__ import annotations

from minigen import kernels as K
from minigen.errors import ShapeError
from minigen.tensor import Tensor, as_tensor, make_result, register_op

__all__ = ["batch_norm", "group_norm", "layer_norm"]


def _parents(x, weight, bias):
    """(x, weight, bias) as tensors (None stays None) and the tuple of those that exist."""
    x = as_tensor(x)
    weight = None if weight is None else as_tensor(weight, like=x)
    bias = None if bias is None else as_tensor(bias, like=x)
    return x, weight, bias, tuple(t for t in (x, weight, bias) if t is not None)


def _grads(weight, bias, dx, dw, db):
    """One gradient per parent, in the order of `_parents`."""
    return (dx,) + ((dw,) if weight is not None else ()) + ((db,) if bias is not None else ())


def _data(t):
    return None if t is None else t.data


@register_op("batch_norm")
def batch_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, running_mean=None,
               running_var=None, training: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Normalise each channel of x (N, C, *) over the batch and the trailing dims.

    training: use the batch's statistics, and (if given) update the NumPy arrays
    running_mean / running_var (C,) in place: r = (1 - momentum) * r + momentum * batch_stat,
    with the unbiased variance, as PyTorch does. Eval: use running_mean / running_var.
    """
    x, weight, bias, parents = _parents(x, weight, bias)
    if training:
        out, mean, var = K.batch_norm_forward(x.data, _data(weight), _data(bias), eps)
        if running_mean is not None and running_var is not None:
            count = x.size // x.shape[1]
            running_mean *= 1 - momentum
            running_mean += momentum * mean
            running_var *= 1 - momentum
            running_var += momentum * var * count / max(count - 1, 1)
    else:
        if running_mean is None or running_var is None:
            raise ShapeError("batch_norm: eval mode (training=False) needs running_mean and running_var")
        out, mean, var = K.batch_norm_forward(x.data, _data(weight), _data(bias), eps, running_mean, running_var)

    def backward(g):
        dx, dw, db = K.batch_norm_backward(g, x.data, _data(weight), mean, var, eps, batch_stats=training)
        return _grads(weight, bias, dx, dw, db)
    return make_result(out, parents, backward, "batch_norm")


@register_op("group_norm")
def group_norm(x: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5, silu: bool = False) -> Tensor:
    """Normalise each sample's groups of C/num_groups channels. x: (N, C, *); weight, bias: (C,).
    silu=True: return silu(group_norm(...)), fused into one kernel pass forward and backward."""
    x, weight, bias, parents = _parents(x, weight, bias)
    out, mean, rstd = K.group_norm_forward(x.data, num_groups, _data(weight), _data(bias), eps, silu)
    # the SiLU's backward reads its sigmoid off the output (the next layer holds it anyway)
    silu_out = out if silu else None

    def backward(g):
        dx, dw, db = K.group_norm_backward(g, x.data, num_groups, _data(weight), mean, rstd, _data(bias), silu,
                                           silu_out)
        return _grads(weight, bias, dx, dw, db)
    return make_result(out, parents, backward, "group_norm")


@register_op("layer_norm")
def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5,
               normalized_shape=None) -> Tensor:
    """Normalise over the trailing dims `normalized_shape` (default: weight's shape), then
    apply weight and bias (of that shape)."""
    x, weight, bias, parents = _parents(x, weight, bias)
    if normalized_shape is None:
        if weight is None:
            raise ShapeError("layer_norm: give a weight or normalized_shape")
        normalized_shape = weight.shape
    out, mean, rstd = K.layer_norm_forward(x.data, normalized_shape, _data(weight), _data(bias), eps)

    def backward(g):
        dx, dw, db = K.layer_norm_backward(g, x.data, normalized_shape, _data(weight), mean, rstd)
        return _grads(weight, bias, dx, dw, db)
    return make_result(out, parents, backward, "layer_norm")
