"""1x1 convolution as matrix products on the image itself: no im2col copy.

A 1x1 conv (stride 1, no padding, one group) mixes channels at every pixel on its own.
Viewing each image as a matrix, channels by pixels, it is one matrix product per image:

    x    (N, C_in, H, W)   seen as x3 (N, C_in, P), P = H*W (a view, no copy)
    w    (C_out, C_in, 1, 1) seen as w2 (C_out, C_in)
    out  (N, C_out, P)  = w2 @ x3[n] for each n   (+ bias[:, None])
    dx   (N, C_in, P)   = w2.T @ g3[n]
    dw   (C_out, C_in)  = sum over n of g3[n] @ x3[n].T

im2col would copy x into a (C_in, N*P) matrix that holds exactly the same numbers, and
write the product channel-major before regrouping it per image; here BLAS reads and
writes the images where they lie. The batch is shared out in chunks to `conv.py`'s
workers, each running one-thread BLAS, like the im2col path; dw is summed per chunk and
the chunks' partial sums are added in batch order. Accuracy: each output is the same
C_in-term dot product as the reference; dw sums over N*P in another order (float32:
about 1e-6 relative, tested).

`conv.py` sends a conv here when `applies` (kernel 1x1, stride 1, padding 0, groups 1).
"""
from __future__ import annotations

import numba
import numpy as np

from minigen.kernels import conv as C

__all__ = ["applies", "conv1x1_forward", "conv1x1_backward"]


def applies(kernel, stride, padding, groups) -> bool:
    return tuple(kernel) == (1, 1) and tuple(stride) == (1, 1) and tuple(padding) == (0, 0) and groups == 1


def _for_each_chunk(x, c_out, task):
    """Run task(n0, n1, scratch) over the batch of x in `conv.py`'s workers: there is no im2col
    buffer to keep small, so just a few chunks per thread (to balance them)."""
    geo = C.ConvGeometry(x.shape, x.shape[2:], (1, 1), (1, 1), (0, 0), (1, 1), 1)
    n = x.shape[0]
    step = max(1, -(-n // (2 * numba.get_num_threads())))
    return C._for_each_chunk([(n0, min(n, n0 + step)) for n0 in range(0, n, step)], task, C.conv_multiply_adds(geo, c_out))


def conv1x1_forward(x, w, b=None):
    """x (N, C_in, H, W) contiguous, w (C_out, C_in, 1, 1), b (C_out,) or None -> (N, C_out, H, W)."""
    n, c_in, h, wd = x.shape
    w2, x3 = w.reshape(len(w), c_in), x.reshape(n, c_in, h * wd)
    out = np.empty((n, len(w), h * wd), x.dtype)
    bias = None if b is None else np.asarray(b, x.dtype).reshape(-1, 1)

    def task(n0, n1, scratch):
        np.matmul(w2, x3[n0:n1], out=out[n0:n1])
        if bias is not None:
            out[n0:n1] += bias
    _for_each_chunk(x, len(w), task)
    return out.reshape(n, len(w), h, wd)


def conv1x1_backward(grad_out, x, w, input_grad=True, weight_grad=True):
    """(dx, dw) of conv1x1_forward given grad_out (N, C_out, H, W); each None when not asked for."""
    n, c_in, h, wd = x.shape
    c_out = len(w)
    w2, x3, g3 = w.reshape(c_out, c_in), x.reshape(n, c_in, h * wd), grad_out.reshape(n, c_out, h * wd)
    dx = np.empty_like(x3) if input_grad else None

    def task(n0, n1, scratch):
        if input_grad:
            np.matmul(w2.T, g3[n0:n1], out=dx[n0:n1])
        if weight_grad:
            # one partial sum per chunk, added in chunk order below (same seed, same bits)
            part = np.zeros((c_out, c_in), x.dtype)
            for i in range(n0, n1):
                part += g3[i] @ x3[i].T
            scratch.setdefault("dw", {})[n0] = part
    scratches = _for_each_chunk(x, c_out, task)
    dw = None
    if weight_grad:
        parts = {n0: part for s in scratches for n0, part in s.get("dw", {}).items()}
        dw = sum(parts[n0] for n0 in sorted(parts)).reshape(w.shape)
    return (None if dx is None else dx.reshape(x.shape)), dw
