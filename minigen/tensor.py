"""The autograd core: a `Tensor` over a NumPy array, and reverse-mode autodiff.

How it works (the whole idea fits on a screen):

* Each op (see `minigen/ops/`) computes its output array and hands `make_result`
  the input tensors (its *parents*) and a `backward(g)` closure that maps the
  gradient of the loss w.r.t. the output to one gradient per parent.
* `Tensor.backward()` sorts the graph topologically from the loss and walks it
  in reverse, calling each node's closure once. Gradients that were broadcast
  in the forward pass are summed back to each parent's shape here, in one
  place (`unbroadcast`), so no op has to think about broadcasting.
* Only leaves (tensors you made with `requires_grad=True`, e.g. parameters)
  keep a `.grad`; it accumulates across backward calls until you zero it.
"""
from __future__ import annotations

import contextlib
import functools
import sys

import numpy as np

from minigen.errors import DTypeError, ShapeError
from minigen.random import resolve

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "make_result", "unbroadcast", "as_tensor",
           "register_op", "OPS", "tensor", "zeros", "ones", "randn", "rand", "set_detect_anomaly"]

DEFAULT_DTYPE = np.float32
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_grad_enabled = True
_detect_anomaly = False

# name -> op function. Every op registers itself, so tests can enumerate them
# (e.g. to check that each op has a gradcheck case).
OPS: dict[str, object] = {}


def register_op(name: str):
    """Decorator: record `fn` in the op registry under `name`."""
    def deco(fn):
        if name in OPS:
            raise RuntimeError(f"op {name!r} registered twice")
        OPS[name] = fn
        fn.op_name = name
        return fn
    return deco


@contextlib.contextmanager
def _grad_mode(enabled: bool):
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, enabled
    try:
        yield
    finally:
        _grad_enabled = previous


def no_grad():
    """Context manager (and decorator) under which no graph is recorded."""
    return _grad_mode(False)


def is_grad_enabled() -> bool:
    return _grad_enabled


def set_detect_anomaly(enabled: bool) -> None:
    """When on, backward checks every gradient and names the op that first made a NaN/Inf."""
    global _detect_anomaly
    _detect_anomaly = bool(enabled)


def _to_array(data, dtype) -> np.ndarray:
    arr = np.asarray(data)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise DTypeError(f"Tensor: dtype {dtype} is not supported; use float32 or float64")
        return arr.astype(dtype, copy=False)
    if arr.dtype in FLOAT_DTYPES:
        return arr
    if arr.dtype.kind in "biuf":   # bools, ints and other floats become the default float
        return arr.astype(DEFAULT_DTYPE)
    raise DTypeError(f"Tensor: cannot make a tensor from dtype {arr.dtype}; expected a float, int or bool array")


class Tensor:
    """An n-dimensional float array that remembers how it was computed.

    data: np.ndarray, float32 (default) or float64.
    """
    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "_op", "__weakref__")
    __array_priority__ = 1000  # make `np_array * tensor` call Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        if isinstance(data, Tensor):
            data = data.data
        self.data = _to_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._parents = ()
        self._backward = None
        self._op = "leaf"

    # --- basic facts -------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}, dtype={self.dtype}{grad})"

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        if self.data.size != 1:
            raise ShapeError(f"item: only a tensor with one element can become a Python number, got shape {self.shape}")
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no gradient flows through it)."""
        return Tensor(self.data)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        self.requires_grad = flag
        return self

    def astype(self, dtype) -> "Tensor":
        return OPS["cast"](self, dtype)

    # --- autodiff ------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`.

        grad: the upstream gradient, same shape as self; omitted only for a scalar.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input had requires_grad=True, "
                               "or it was made under no_grad())")
        if grad is None:
            if self.data.size != 1:
                raise ShapeError(f"backward: a gradient must be given for a non-scalar tensor of shape {self.shape}")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise ShapeError(f"backward: gradient shape {grad.shape} does not match tensor shape {self.shape}")

        grads = {self: grad}                   # node -> d(self)/d(node); Tensors hash by identity
        for node in reversed(_topological_order(self)):
            g = grads.pop(node, None)
            if g is None:
                continue
            if node._op == "leaf":            # a leaf: keep its gradient
                node.grad = (g if _unshared(g) else g.copy()) if node.grad is None else node.grad + g
                continue
            if node._backward is None:
                raise RuntimeError(f"backward: the graph through op '{node._op}' was already freed by an earlier "
                                   "backward; pass retain_graph=True to the first backward to go through it twice")
            _pass_to_parents(node, g, grads)
            if not retain_graph:              # free the closures (and the arrays they hold)
                node._backward, node._parents = None, ()

    # --- operators: defined in minigen/ops, found in the op registry (ops import this module, not back)
    def __add__(self, o): return OPS["add"](self, o)
    def __radd__(self, o): return OPS["add"](o, self)
    def __sub__(self, o): return OPS["sub"](self, o)
    def __rsub__(self, o): return OPS["sub"](o, self)
    def __mul__(self, o): return OPS["mul"](self, o)
    def __rmul__(self, o): return OPS["mul"](o, self)
    def __truediv__(self, o): return OPS["div"](self, o)
    def __rtruediv__(self, o): return OPS["div"](o, self)
    def __pow__(self, o): return OPS["pow"](self, o)
    def __rpow__(self, o): return OPS["pow"](o, self)
    def __neg__(self): return OPS["neg"](self)
    def __matmul__(self, o): return OPS["matmul"](self, o)
    def __rmatmul__(self, o): return OPS["matmul"](o, self)
    def __getitem__(self, idx): return OPS["getitem"](self, idx)

    # comparisons give plain boolean arrays: they have no gradient
    def __lt__(self, o): return self.data < _data(o)
    def __le__(self, o): return self.data <= _data(o)
    def __gt__(self, o): return self.data > _data(o)
    def __ge__(self, o): return self.data >= _data(o)

    def __getattr__(self, name):
        # t.exp(), t.sum(axis=1), t.reshape(...): any registered op as a method
        op = OPS.get(name)
        if op is None:
            raise AttributeError(f"'Tensor' object has no attribute {name!r}")
        return functools.partial(op, self)

    @property
    def T(self) -> "Tensor":
        return OPS["transpose"](self)


def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _pass_to_parents(node: "Tensor", g: np.ndarray, grads: dict) -> None:
    """Run node's backward on g, its output's gradient, and add what each parent gets into
    grads[parent] (summed over broadcast axes to the parent's shape). (A function of its own so
    that no loop variable outlives it holding a gradient: `_unshared` counts references.)"""
    for parent, pg in zip(node._parents, node._backward(g)):
        if pg is None or not parent.requires_grad:
            continue
        if pg.shape != parent.data.shape:
            pg = unbroadcast(pg, parent.data.shape)
        if _detect_anomaly and not np.all(np.isfinite(pg)):
            raise FloatingPointError(
                f"detect_anomaly: the backward of op '{node._op}' produced a non-finite gradient "
                f"for an input of shape {parent.shape}")
        grads[parent] = pg if parent not in grads else grads[parent] + pg


def _unshared(a: np.ndarray) -> bool:
    """Whether nothing but the backward loop refers to the array `a`: it owns its memory, is
    writeable, and CPython counts no other reference (the loop's variable, this argument and
    getrefcount's own). A leaf may then keep it as its .grad; anything else (the gradient an add
    hands to both its inputs, a user's array, a view) is copied, so a .grad never aliases another
    array (docs/measurements.md#unshared-gradients)."""
    return a.base is None and a.flags.writeable and sys.getrefcount(a) <= 3


def _topological_order(root: Tensor, every_parent: bool = False) -> list:
    """Nodes reachable from root, each after all of its parents (iterative DFS: no recursion limit).
    Through the parents that need a gradient (what backward visits), or through every parent
    (every_parent: what a drawing of the graph shows)."""
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, finished = stack.pop()
        if finished:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        for parent in node._parents:
            if (every_parent or parent.requires_grad) and parent not in seen:
                stack.append((parent, False))
    return order


def make_result(data: np.ndarray, parents: tuple, backward, op: str) -> Tensor:
    """Wrap an op's output; record the graph edge only if some parent needs a gradient."""
    out = Tensor.__new__(Tensor)
    out.data = data
    out.grad = None
    out._op = op
    if _grad_enabled:
        for p in parents:
            if p.requires_grad:
                out.requires_grad = True
                out._parents = parents
                out._backward = backward
                return out
    out.requires_grad = False
    out._parents = ()
    out._backward = None
    return out


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum `grad` over the axes that broadcasting added or stretched, so it has `shape`."""
    # BEGIN SOLUTION autograd: sum grad over the axes broadcasting added (leading) or stretched (1 in shape)
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad
    # END SOLUTION


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """x as a Tensor; Python numbers and arrays take `like`'s dtype."""
    if isinstance(x, Tensor):
        return x
    if like is not None and type(x) in (int, float):
        # the common `t * 0.5`: skip the general checks of Tensor(), it is a hot path
        constant = Tensor.__new__(Tensor)
        constant.data, constant.grad, constant.requires_grad = np.array(x, like.data.dtype), None, False
        constant._parents, constant._backward, constant._op = (), None, "leaf"
        return constant
    return Tensor(x, dtype=like.dtype if like is not None else None)


# --- creation ------------------------------------------------------------------
def tensor(data, requires_grad=False, dtype=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def zeros(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.zeros(shape, dtype), requires_grad)


def ones(*shape, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(np.ones(shape, dtype), requires_grad)


def randn(*shape, generator=None, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(resolve(generator).normal(shape, dtype=dtype), requires_grad)


def rand(*shape, generator=None, dtype=DEFAULT_DTYPE, requires_grad=False) -> Tensor:
    return Tensor(resolve(generator).uniform(shape, dtype=dtype), requires_grad)

