"""Ops that move values around without changing them: reshape, transpose, index, join, pad."""
from __future__ import annotations

import numpy as np

from minigen.errors import DTypeError, ShapeError
from minigen.tensor import Tensor, make_result, register_op

__all__ = ["reshape", "transpose", "permute", "flatten", "getitem", "concat", "stack", "pad"]


@register_op("reshape")
def reshape(a: Tensor, *shape) -> Tensor:
    """reshape(a, 2, 3) or reshape(a, (2, 3)); one dimension may be -1."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"reshape: cannot reshape a tensor of shape {a.shape} ({a.size} values) "
                         f"into shape {shape}") from None
    return make_result(out, (a,), lambda g: (g.reshape(a.shape),), "reshape")


@register_op("permute")
def permute(a: Tensor, *axes) -> Tensor:
    """Reorder axes: out.shape[i] == a.shape[axes[i]]."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    if sorted(ax % a.ndim if -a.ndim <= ax < a.ndim else ax for ax in axes) != list(range(a.ndim)):
        raise ShapeError(f"permute: {axes} is not a permutation of the {a.ndim} axes of shape {a.shape}")
    inverse = np.argsort([ax % a.ndim for ax in axes])
    return make_result(a.data.transpose(axes), (a,), lambda g: (g.transpose(inverse),), "permute")


@register_op("transpose")
def transpose(a: Tensor, axis0: int = -2, axis1: int = -1) -> Tensor:
    """Swap two axes (by default the last two, i.e. the matrix transpose)."""
    if a.ndim < 2:
        raise ShapeError(f"transpose: needs at least 2 dimensions, got shape {a.shape}")
    axes = list(range(a.ndim))
    axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
    return permute(a, axes)


@register_op("flatten")
def flatten(a: Tensor, start_axis: int = 1) -> Tensor:
    """Merge the axes from start_axis on: (N, C, H, W) -> (N, C*H*W) by default."""
    return reshape(a, a.shape[:start_axis] + (-1,))


def _is_basic(idx) -> bool:
    """True for indices made of ints/slices/None/Ellipsis: they select each element at most once."""
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(isinstance(p, (int, np.integer, slice)) or p is None or p is Ellipsis for p in parts)


@register_op("getitem")
def getitem(a: Tensor, idx) -> Tensor:
    """a[idx] with NumPy's rules. Backward scatters the gradient back; with integer-array
    indices an element can be picked twice, so their gradients are added (np.add.at)."""
    if isinstance(idx, Tensor):
        idx = idx.data.astype(np.int64)
    elif isinstance(idx, tuple):
        idx = tuple(p.data.astype(np.int64) if isinstance(p, Tensor) else p for p in idx)
    try:
        out = a.data[idx]
    except IndexError as e:
        raise ShapeError(f"getitem: index {idx!r} does not fit a tensor of shape {a.shape} ({e})") from None
    basic = _is_basic(idx)

    def backward(g):
        ga = np.zeros_like(a.data)
        if basic:
            ga[idx] = g
        else:
            np.add.at(ga, idx, g)
        return (ga,)
    return make_result(np.asarray(out), (a,), backward, "getitem")


def _check_join(name: str, tensors, axis: int, same_shape: bool):
    tensors = list(tensors)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise ShapeError(f"{name}: expected a non-empty sequence of tensors")
    if len({t.dtype for t in tensors}) > 1:
        raise DTypeError(f"{name}: tensors have different dtypes {[str(t.dtype) for t in tensors]}")
    ref = tensors[0].shape
    for t in tensors[1:]:
        other = t.shape
        if same_shape:
            ok = other == ref
        else:
            ok = len(other) == len(ref) and all(x == y for i, (x, y) in enumerate(zip(ref, other))
                                                 if i != axis % len(ref))
        if not ok:
            raise ShapeError(f"{name}: shapes {ref} and {other} do not match (axis {axis})")
    return tensors


@register_op("concat")
def concat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; backward splits the gradient back."""
    tensors = _check_join("concat", tensors, axis, same_shape=False)
    splits = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    out = np.concatenate([t.data for t in tensors], axis=axis)
    return make_result(out, tuple(tensors), lambda g: tuple(np.split(g, splits, axis=axis)), "concat")


@register_op("stack")
def stack(tensors, axis: int = 0) -> Tensor:
    """Join same-shape tensors along a new axis."""
    tensors = _check_join("stack", tensors, axis, same_shape=True)
    out = np.stack([t.data for t in tensors], axis=axis)
    return make_result(out, tuple(tensors),
                       lambda g: tuple(np.moveaxis(g, axis, 0)), "stack")


@register_op("pad")
def pad(a: Tensor, pad_width, value: float = 0.0) -> Tensor:
    """Constant padding; pad_width as in np.pad: ((before, after), ...) per axis (or one pair for all)."""
    try:
        widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64), (a.ndim, 2))
    except ValueError:
        raise ShapeError(f"pad: pad_width {pad_width!r} does not fit a tensor of shape {a.shape}; "
                         f"expected (before, after) pairs for each of its {a.ndim} axes") from None
    if (widths < 0).any():
        raise ShapeError(f"pad: negative padding {pad_width!r} for shape {a.shape}")
    out = np.pad(a.data, widths, constant_values=value)
    inside = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, a.shape))
    return make_result(out, (a,), lambda g: (g[inside],), "pad")
