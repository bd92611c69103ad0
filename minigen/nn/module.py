"""`Module` and `Parameter`: the bookkeeping every layer and model shares.

A Module finds its parameters, buffers (non-trained state such as BatchNorm's
running mean) and sub-modules by looking at its attributes, so a model is just
a class that assigns layers in `__init__` and uses them in `forward`.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict

import numpy as np

from minigen.errors import CheckpointError
from minigen.tensor import Tensor

__all__ = ["Parameter", "Module", "Buffer", "frozen"]


class Parameter(Tensor):
    """A tensor that a Module trains: requires_grad is on."""
    __slots__ = ()

    def __init__(self, data, dtype=None):
        super().__init__(data, requires_grad=True, dtype=dtype)


class Buffer:
    """Non-trained state saved with the model (e.g. running statistics): wraps a NumPy array."""
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = np.asarray(data)


class Module:
    """Base class of layers and models. Subclasses define `forward`; call the module to run it."""

    training: bool = True

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    # --- walking the tree -------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{name}.{i}", v

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def _named(self, kind, prefix=""):
        for name, value in vars(self).items():
            if isinstance(value, kind):
                yield prefix + name, value
        for name, child in self.named_children():
            yield from child._named(kind, prefix + name + ".")

    def named_parameters(self):
        """(dotted name, Parameter) for every parameter, in definition order."""
        return self._named(Parameter)

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self):
        return self._named(Buffer)

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # --- modes and gradients ---------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # --- saving and loading ----------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter and buffer as a NumPy array (copies), by dotted name."""
        state = OrderedDict((n, p.data.copy()) for n, p in self.named_parameters())
        state.update((n, b.data.copy()) for n, b in self.named_buffers())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into this module's parameters and buffers.

        Raises CheckpointError naming every missing, unexpected or mis-shaped key;
        nothing is changed unless everything fits.
        """
        own = dict(self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        misshaped = [f"{k}: checkpoint {np.shape(state[k])} vs model {own[k].data.shape}"
                     for k in own if k in state and np.shape(state[k]) != own[k].data.shape]
        if missing or unexpected or misshaped:
            parts = []
            if missing:
                parts.append("missing keys: " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected keys: " + ", ".join(unexpected))
            if misshaped:
                parts.append("mis-shaped: " + "; ".join(misshaped))
            raise CheckpointError(f"load_state_dict into {type(self).__name__}: " + " | ".join(parts))
        for k, target in own.items():
            target.data = np.array(state[k], dtype=target.data.dtype)

    def __repr__(self):
        lines = [f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in self.named_children()]
        return type(self).__name__ + ("(\n" + "\n".join(lines) + "\n)" if lines else "()")


@contextlib.contextmanager
def frozen(module: Module):
    """Inside the block (forward AND backward) the module's weights get no gradient: for a backward pass
    whose gradients are wanted elsewhere (the GAN's generator step through a fixed judge; the gradient
    with respect to the input, for a divergence), so computing the weights' would be wasted work."""
    params = module.parameters()
    for p in params:
        p.requires_grad = False
    try:
        yield
    finally:
        for p in params:
            p.requires_grad = True
