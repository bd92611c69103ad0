"""Check analytic gradients against central finite differences (in float64).

    gradcheck(lambda x, w: (x @ w).tanh(), x, w)

For a random upstream gradient `v`, compares each input's backward result with
(f(x + eps e_i) - f(x - eps e_i)) / (2 eps) . v, element by element.
"""
from __future__ import annotations

import numpy as np

from minigen.tensor import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError"]


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def _as_output(out) -> Tensor:
    if isinstance(out, (tuple, list)):   # ops like flows return (z, log_det): check the first
        out = out[0]
    return out


def gradcheck(fn, *inputs: Tensor, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-4,
              seed: int = 0) -> bool:
    """Raise GradcheckError naming the input and the worst element if gradients disagree.

    fn: maps the tensors to a Tensor (any shape). inputs: float64 tensors; those with
    requires_grad=True are checked. Returns True when all agree.
    """
    for i, t in enumerate(inputs):
        if t.dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} is {t.dtype}; use float64 so finite differences are accurate")
    checked = [t for t in inputs if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input has requires_grad=True, nothing to check")

    out = _as_output(fn(*inputs))
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    for t in checked:
        t.grad = None
    out.backward(upstream)
    analytic = [np.zeros_like(t.data) if t.grad is None else t.grad.copy() for t in checked]

    def projected(t_index, flat_index, delta):
        data = checked[t_index].data.reshape(-1)
        saved = data[flat_index]
        data[flat_index] = saved + delta
        with no_grad():
            value = float((_as_output(fn(*inputs)).data * upstream).sum())
        data[flat_index] = saved
        return value

    for k, t in enumerate(checked):
        numeric = np.empty(t.size)
        for j in range(t.size):
            numeric[j] = (projected(k, j, eps) - projected(k, j, -eps)) / (2 * eps)
        numeric = numeric.reshape(t.shape)
        bad = ~np.isclose(analytic[k], numeric, atol=atol, rtol=rtol)
        if bad.any():
            worst = np.unravel_index(np.argmax(np.abs(analytic[k] - numeric)), t.shape)
            raise GradcheckError(
                f"gradcheck: checked input {k} of shape {t.shape}: {bad.sum()} of {t.size} "
                f"gradient entries disagree; worst at {worst}: analytic {analytic[k][worst]:.6g} vs "
                f"numerical {numeric[worst]:.6g}")
    return True
