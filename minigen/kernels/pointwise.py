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
writes the images where they lie. The batch is shared out in chunks to `convbase.py`'s
workers, each running one-thread BLAS, like the im2col path; dw is summed per chunk and
the chunks' partial sums are added in batch order. Accuracy: each output is the same
C_in-term dot product as the reference; dw sums over N*P in another order (float32:
about 1e-6 relative, tested).

It takes any part of a conv with kernel 1x1, stride 1, padding 0 and one group (`takes`).
"""
from __future__ import annotations

import numba
import numpy as np

from minigen.kernels import convbase

__all__ = ["takes", "preferred", "forward", "input_grad", "weight_grad"]


def takes(geo, part: str) -> bool:
    return (geo.kernel == (1, 1) and geo.stride == (1, 1) and geo.padding == (0, 0) and geo.groups == 1
            and geo.taps is None)


def preferred(geo, part: str) -> bool:
    """Always, where it takes the conv: it does im2col's product without im2col's copy."""
    return True


def _for_each_chunk(n, multiply_adds, task):
    """Run task(n0, n1, scratch) over a batch of n in `convbase.py`'s workers: there is no im2col
    buffer to keep small, so just a few chunks per thread (to balance them)."""
    step = max(1, -(-n // (2 * numba.get_num_threads())))
    return convbase.for_each_chunk([(n0, min(n, n0 + step)) for n0 in range(0, n, step)], task, multiply_adds)


def forward(x, w, b, geo):
    """x (N, C_in, H, W) contiguous, w (C_out, C_in, 1, 1), b (C_out,) or None -> (N, C_out, H, W)."""
    n, c_in, h, wd = x.shape
    w2, x3 = w.reshape(len(w), c_in), x.reshape(n, c_in, h * wd)
    out = np.empty((n, len(w), h * wd), x.dtype)
    bias = None if b is None else np.asarray(b, x.dtype).reshape(-1, 1)

    def task(n0, n1, scratch):
        np.matmul(w2, x3[n0:n1], out=out[n0:n1])
        if bias is not None:
            out[n0:n1] += bias
    _for_each_chunk(n, x.size * len(w), task)
    return out.reshape(n, len(w), h, wd)


def input_grad(g, w, b, geo):
    """dx (N, C_in, H, W) = w2.T @ g3[n] for each image, + b unless None (a transposed conv)."""
    c_out, c_in = w.shape[:2]
    return forward(g, np.ascontiguousarray(w.reshape(c_out, c_in).T), b, geo)


def weight_grad(g, x, geo):
    """dw (C_out, C_in, 1, 1) = sum over images of g3[n] @ x3[n].T: one partial sum per chunk,
    added in chunk order (same seed, same bits)."""
    n, c_in, h, wd = x.shape
    c_out = g.shape[1]
    x3, g3 = x.reshape(n, c_in, h * wd), g.reshape(n, c_out, h * wd)

    def task(n0, n1, scratch):
        part = np.zeros((c_out, c_in), x.dtype)
        for i in range(n0, n1):
            part += g3[i] @ x3[i].T
        scratch.setdefault("dw", {})[n0] = part
    return convbase.chunk_sum(_for_each_chunk(n, x.size * c_out, task), (c_out, c_in, 1, 1))
