"""What every conv kernel shares: argument checks, the conv geometry, im2col's copy loops, and the
worker threads with their scratch buffers. The algorithms (`im2col.py`, `direct.py`, `planar.py`,
`stride2.py`, `winograd.py`, `pointwise.py`, `subpixel.py`) import this module and nothing else of
the conv family; only the dispatcher, `conv.py`, imports them.

Parallelism is coarse: each worker thread takes whole chunks of the batch (or of Winograd tiles) and
runs its kernel on them alone, with BLAS held to one thread. Measured on a busy 2-core machine, that
is several times faster than alternating between Numba's parallel loops and OpenBLAS's own threads,
whose every hand-over waits for a descheduled thread (one thread per matmul was 3-4x faster than two
there). Work below SERIAL_MULTIPLY_ADDS stays on the calling thread (`serial_below`). Where every
kernel of a network pass is that small (DDPM sampling at 16 images), `map_batch_parts` shares the
batch instead: each thread runs the whole pass on its part of the images, serially.

Shapes follow PyTorch: x (N, C_in, H, W); conv weight (C_out, C_in/groups, kH, kW);
transposed-conv weight (C_in, C_out/groups, kH, kW). float32 or float64.

The argument checks are shared with `pool.py` and `norm.py` too.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

from threadpoolctl import ThreadpoolController     # a declared dependency (setup.cfg): BLAS's thread count

from minigen.errors import DTypeError, ShapeError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Work too small to share: below these sizes a kernel runs on the calling thread alone (Numba loops and BLAS
# both), because waiting for a second thread to be scheduled costs more than such work. Sizes count elements
# an elementwise kernel touches, or a conv's multiply-adds. Measurements: docs/measurements.md#serial-work.
SERIAL_ELEMENTS = 1 << 22
SERIAL_MULTIPLY_ADDS = 1 << 27

# Size of each worker's im2col buffer, in elements (256K float32 = 1 MB: one core's L2 cache, so col2im reads
# back what the matrix product just wrote). Measurements: docs/measurements.md#cols-budget.
COLS_BUDGET = 1 << 18


# --- argument checks shared by all kernels ------------------------------------------------
def pair(value, op: str, name: str) -> tuple[int, int]:
    """An int or a pair of ints, as an (h, w) tuple of Python ints."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    try:
        h, w = value
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ShapeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") from None


def check_float(op: str, **arrays) -> np.dtype:
    """All given arrays (None entries skipped) are float32, or all float64; return that dtype."""
    dtypes = {name: np.asarray(a).dtype for name, a in arrays.items() if a is not None}
    for name, dt in dtypes.items():
        if dt not in FLOAT_DTYPES:
            raise DTypeError(f"{op}: {name} has dtype {dt}; expected float32 or float64")
    if len(set(dtypes.values())) > 1:
        listing = ", ".join(f"{name} {dt}" for name, dt in dtypes.items())
        raise DTypeError(f"{op}: all arrays must have the same dtype, got {listing}")
    return next(iter(dtypes.values()))


def check_4d(op: str, name: str, x: np.ndarray) -> None:
    if np.ndim(x) != 4:
        raise ShapeError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {np.shape(x)}")


def check_vector(op: str, name: str, v, length: int) -> None:
    """v is None or has shape (length,)."""
    if v is not None and np.shape(v) != (length,):
        raise ShapeError(f"{op}: {name} must have shape ({length},), got {np.shape(v)}")


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a sliding window along one axis (rounded down, like PyTorch)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def conv_transpose_output_size(size, kernel, stride, padding, dilation, output_padding) -> int:
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def check_grad(op, grad, shape, dtype):
    """grad_out has the forward output's shape and the input's dtype."""
    if grad.shape != tuple(shape):
        raise ShapeError(f"{op}: grad_out has shape {grad.shape} but the forward output has shape {tuple(shape)}")
    if grad.dtype != dtype:
        raise DTypeError(f"{op}: grad_out has dtype {grad.dtype} but the input has dtype {dtype}")


def check_window(op: str, shape, kernel, stride, padding, dilation) -> tuple[int, int]:
    """Validate a sliding window over images of `shape` (N, C, H, W); return (H_out, W_out)."""
    if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
        raise ShapeError(f"{op}: kernel size {kernel}, stride {stride} and dilation {dilation} must be >= 1")
    if min(padding) < 0:
        raise ShapeError(f"{op}: padding must be >= 0, got {padding}")
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    padded = tuple(s + 2 * p for s, p in zip(shape[2:], padding))
    if span[0] > padded[0] or span[1] > padded[1]:
        raise ShapeError(f"{op}: kernel {kernel} (dilated span {span}) is larger than the padded input "
                         f"{padded}: input shape {tuple(shape)}, padding {padding}")
    return tuple(conv_output_size(*a) for a in zip(shape[2:], kernel, stride, padding, dilation))


# --- geometry ------------------------------------------------------------------------------
class ConvGeometry(NamedTuple):
    """Everything about one conv that is not data. `image` is the shape (N, C, H, W) of the
    conv's *input* and `out_hw` its output size; a transposed conv is described by the conv
    it is the transpose of (its output is that conv's input)."""
    image: tuple
    out_hw: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    c_out: int                       # the conv's output channels
    taps: tuple | None = None        # the kernel taps (i, j) in use, row-major; None: all kH*kW
    zero_tap: bool = False           # some tap of the weight is zero in every channel (a mask applied by hand)

    @property
    def tap_list(self) -> tuple:
        return self.taps if self.taps is not None else tuple(np.ndindex(*self.kernel))

    @property
    def offsets(self) -> np.ndarray:
        """(T, 2) int64: where each tap reads, relative to the window's corner output*stride."""
        return np.array([(i * self.dilation[0] - self.padding[0], j * self.dilation[1] - self.padding[1])
                         for i, j in self.tap_list], np.int64).reshape(-1, 2)

    @property
    def window(self):
        """The arguments `unfold` and `fold` take after the arrays."""
        return self.out_hw, self.offsets, self.stride

    @property
    def weight_shape(self) -> tuple:
        """The conv weight's shape (C_out, C_in/groups, kH, kW)."""
        return (self.c_out, self.image[1] // self.groups) + tuple(self.kernel)

    @property
    def rows(self) -> int:
        """Rows of cols: C_in*T (T = kH*kW unless only some taps are used)."""
        return self.image[1] * len(self.tap_list)

    def chunks(self):
        """Batch ranges [n0, n1) whose im2col buffer fits in COLS_BUDGET elements."""
        per_image = self.rows * self.out_hw[0] * self.out_hw[1]
        step = max(1, COLS_BUDGET // per_image)
        n = self.image[0]
        return [(n0, min(n, n0 + step)) for n0 in range(0, n, step)]


def _conv_geometry(op, image_shape, c_out, w_shape, stride, padding, dilation, groups, names):
    """Validate a conv from images `image_shape` (N, C, H, W) to c_out channels with a
    conv-layout weight (C_out, C/groups, kH, kW) of shape `w_shape`. `names` are what the
    error messages call the image and the weight."""
    stride, padding, dilation = (pair(v, op, name) for v, name in
                                 ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    groups = int(groups)
    c = image_shape[1]
    if image_shape[0] < 1:
        raise ShapeError(f"{op}: the batch is empty: {names[0]} shape {tuple(image_shape)}")
    if groups < 1 or c % groups or c_out % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({c}) and the output "
                         f"channels ({c_out}); {names[0]} shape {tuple(image_shape)}, "
                         f"{names[1]} shape {tuple(w_shape)}")
    out_hw = check_window(op, image_shape, tuple(w_shape[2:]), stride, padding, dilation)
    return ConvGeometry(tuple(image_shape), out_hw, tuple(w_shape[2:]), stride, padding, dilation, groups, c_out)


# --- the Numba pieces ----------------------------------------------------------------------
@njit(cache=True, inline="always")
def _valid_range(size, out_size, offset, stride):
    """The output positions o in [0, out_size) with 0 <= o*stride + offset < size, as [lo, hi)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = 0 if size - offset <= 0 else min(out_size, (size - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def unfold(x, cols, out_hw, offsets, stride):
    """im2col: copy the windows of x (Nc, C, H, W) into cols (C*T, Nc*H_out*W_out), with 0 where
    a window hangs over the padding. Row (c, t) holds tap t of every window: output (oh, ow)
    reads x[n, c, oh*stride_h + offsets[t, 0], ow*stride_w + offsets[t, 1]]. A plain conv's
    taps are all (i*dilation - padding, j*dilation - padding); `masked.py` and `subpixel.py`
    pass other tap lists."""
    nc, c_in, h, w = x.shape
    taps = len(offsets)
    h_out, w_out = out_hw
    plane = h_out * w_out
    for row in range(c_in * taps):
        c, t = row // taps, row % taps
        off_h, off_w = offsets[t, 0], offsets[t, 1]
        lo_h, hi_h = _valid_range(h, h_out, off_h, stride[0])
        lo_w, hi_w = _valid_range(w, w_out, off_w, stride[1])
        for n in range(nc):
            dst = cols[row, n * plane:(n + 1) * plane]
            dst[:lo_h * w_out] = 0
            dst[hi_h * w_out:] = 0
            for oh in range(lo_h, hi_h):
                src = x[n, c, oh * stride[0] + off_h]
                line = dst[oh * w_out:(oh + 1) * w_out]
                line[:lo_w] = 0
                line[hi_w:] = 0
                for ow in range(lo_w, hi_w):
                    line[ow] = src[ow * stride[1] + off_w]


@njit(cache=True, nogil=True)
def fold(cols, image, out_hw, offsets, stride):
    """col2im, the adjoint of `unfold`: image (Nc, C, H, W) = every window of
    cols (C*T, Nc*H_out*W_out) added back where it came from (overlaps add up)."""
    nc, c_in, h, w = image.shape
    taps = len(offsets)
    h_out, w_out = out_hw
    plane = h_out * w_out
    image[:] = 0
    for n in range(nc):
        for c in range(c_in):
            dst = image[n, c]
            for t in range(taps):
                off_h, off_w = offsets[t, 0], offsets[t, 1]
                lo_h, hi_h = _valid_range(h, h_out, off_h, stride[0])
                lo_w, hi_w = _valid_range(w, w_out, off_w, stride[1])
                src = cols[c * taps + t, n * plane:(n + 1) * plane]
                for oh in range(lo_h, hi_h):
                    line = dst[oh * stride[0] + off_h]
                    for ow in range(lo_w, hi_w):
                        line[ow * stride[1] + off_w] += src[oh * w_out + ow]


@njit(cache=True, nogil=True)
def to_batch_major(y, out, bias):
    """out (Nc, C, P) = y (C, Nc*P) regrouped image by image, plus bias (C,) unless None."""
    nc, c, p = out.shape
    for n in range(nc):
        for k in range(c):
            src = y[k, n * p:(n + 1) * p]
            if bias is None:
                out[n, k] = src
            else:
                out[n, k] = src + bias[k]


@njit(cache=True, nogil=True)
def to_channel_major(g, out):
    """out (C, Nc*P) = g (Nc, C, P) regrouped channel by channel (the inverse of `to_batch_major`)."""
    nc, c, p = g.shape
    for n in range(nc):
        for k in range(c):
            out[k, n * p:(n + 1) * p] = g[n, k]


# --- running chunks on worker threads --------------------------------------------------------
_BLAS = ThreadpoolController()
_pool: dict = {}                                         # process id -> its worker pool


def _workers() -> ThreadPoolExecutor:
    """This process's worker pool. Keyed by process id because threads do not survive a
    fork(): a forked child (e.g. a data-loading worker) must start its own."""
    pid = os.getpid()
    if pid not in _pool:
        _pool.clear()
        _pool[pid] = ThreadPoolExecutor(numba.config.NUMBA_NUM_THREADS, thread_name_prefix="minigen-conv")
    return _pool[pid]


def blas_kernels() -> str:
    """Which BLAS does the matrix products and which kernel set it chose, e.g. "openblas 0.3.31, SkylakeX
    kernels". OpenBLAS picks the kernels for the CPU it finds unless OPENBLAS_CORETYPE names others (some
    VMs set it, e.g. Haswell on an AVX-512 CPU, because old OpenBLAS builds misbehave there): that can
    halve its float32 GFLOP/s, so benchmarks and the tour record it."""
    blas = [i for i in _BLAS.info() if i.get("user_api") == "blas"]
    if not blas:
        return "unknown"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"{blas[0]['internal_api']} {blas[0]['version']}, {blas[0].get('architecture') or 'default'} kernels"
            + (f" (forced by OPENBLAS_CORETYPE={forced})" if forced else ""))


def _single_threaded_blas():
    """While the workers run, each matmul uses one thread (they are already parallel)."""
    return _BLAS.limit(limits=1, user_api="blas")


# .active: this thread runs one part of a batch split by `map_batch_parts`; its kernels are
# already serial (Numba held to one thread here, BLAS to one thread in the whole process)
_batch_part = threading.local()


def _in_batch_part() -> bool:
    return getattr(_batch_part, "active", False)


@contextlib.contextmanager
def serial_below(size: int, threshold: int):
    """Within the block, Numba's parallel loops and BLAS use the calling thread only, if
    size < threshold (see SERIAL_ELEMENTS); otherwise nothing changes. Inside a part of
    `map_batch_parts` everything is serial already, and nothing changes either."""
    if size >= threshold or _in_batch_part():
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with _single_threaded_blas():
            yield
    finally:
        numba.set_num_threads(before)


def bias_grad(grad_out: np.ndarray) -> np.ndarray:
    """db (C,) = grad_out (N, C, H, W) summed over N, H and W: each image's channel sums first (one
    einsum pass), then those over the batch: faster than grad_out.sum(axis=(0, 2, 3)), with the same
    float32 error (docs/measurements.md#smaller-choices)."""
    return np.einsum("nchw->nc", grad_out).sum(axis=0)


def conv_multiply_adds(geo: ConvGeometry) -> int:
    """The multiply-adds of a conv's im2col product: geo's im2col size times its output channels."""
    return geo.image[0] * geo.rows * geo.out_hw[0] * geo.out_hw[1] * geo.c_out


def for_each_chunk(chunk_list: list, task, multiply_adds: int, threshold: int = SERIAL_MULTIPLY_ADDS) -> list:
    """Call task(n0, n1, scratch) for every chunk [n0, n1) (of a batch, or of Winograd tiles)
    and return the workers' scratch dicts. Workers (as many as Numba's thread count) claim the
    next chunk as they finish one; each keeps its own scratch (buffers, partial sums) across its
    chunks. Work of fewer than `threshold` (SERIAL_MULTIPLY_ADDS, or SERIAL_ELEMENTS for
    elementwise work measured in elements) runs on the calling thread alone."""
    count = len(chunk_list)
    chunks = iter(chunk_list)
    lock = threading.Lock()

    def worker():
        scratch = {}
        while True:
            with lock:
                chunk = next(chunks, None)
            if chunk is None:
                return scratch
            task(*chunk, scratch)

    workers = min(numba.get_num_threads(), count)
    if workers == 1 or multiply_adds < threshold:   # nothing (worth) sharing out
        with serial_below(multiply_adds, threshold):   # small: BLAS on this thread too
            return [worker()]
    with _single_threaded_blas():
        futures = [_workers().submit(worker) for _ in range(workers)]
        return [f.result() for f in futures]


@njit(cache=True, parallel=True)
def _start_threading_layer(a):
    for i in prange(a.size):
        a[i] = i


@functools.lru_cache(maxsize=None)
def _parallel_loops_thread_safe() -> bool:
    """Whether Numba's parallel loops may be started from two threads at once: yes with its
    OpenMP and TBB threading layers, no with the fallback "workqueue" layer (which aborts the
    process). The layer is chosen at the first parallel loop, once per process: run a trivial
    one to know it (once: each run wakes Numba's threads)."""
    _start_threading_layer(np.empty(1))
    return numba.threading_layer() != "workqueue"


def map_batch_parts(fn, n: int) -> list:
    """[fn(n0, n1) for each part [n0, n1) of a batch of n], the parts near-equal and contiguous,
    one per thread (numba.get_num_threads()), all at once: the calling thread runs the first,
    pool workers the rest, and every kernel inside a part runs serially on its thread.

    This is coarse parallelism for work whose kernels are each too small to share (below
    SERIAL_MULTIPLY_ADDS, e.g. a U-Net forward at batch 16): one hand-off per call instead of
    none (one core idle) or one per kernel. fn must only read shared state (e.g. a network's
    forward under no_grad) and handle each image apart from the others; its float32 results
    can then differ from one call over the whole batch only by rounding, where BLAS blocks a
    narrower product differently. One thread, one image, a call from inside a part, or Numba's
    workqueue layer: just fn(0, n)."""
    parts = min(n, numba.get_num_threads())
    if parts < 2 or _in_batch_part() or not _parallel_loops_thread_safe():
        return [fn(0, n)]
    bounds = [round(n * i / parts) for i in range(parts + 1)]

    def part(n0, n1):
        before = numba.get_num_threads()         # thread-local in Numba
        numba.set_num_threads(1)
        _batch_part.active = True
        try:
            return fn(n0, n1)
        finally:
            _batch_part.active = False
            numba.set_num_threads(before)
    with _single_threaded_blas():
        futures = [_workers().submit(part, n0, n1) for n0, n1 in zip(bounds[1:-1], bounds[2:])]
        try:
            first = part(bounds[0], bounds[1])
        finally:
            wait(futures)                           # every part has finished, even after an error
    return [first] + [f.result() for f in futures]


def scratch_buffer(scratch, name, size, dtype):
    """The worker's scratch array `name` with at least `size` elements, flat."""
    if name not in scratch:
        scratch[name] = np.empty(size, dtype)
    return scratch[name]


def grouped_matmul(a, b, out=None):
    """out[g] = a[g] @ b[g] for each group g, as separate 2-D products: NumPy hands a 2-D
    product (transposed views included) straight to BLAS, while its stacked 3-D path
    measured ~1.5x slower for one group."""
    if out is None:
        out = np.empty((a.shape[0], a.shape[1], b.shape[2]), a.dtype)
    for g in range(a.shape[0]):
        np.matmul(a[g], b[g], out=out[g])
    return out


def chunk_sum(scratches, shape):
    """The workers' per-chunk partial weight gradients added up in chunk order: which worker ran
    which chunk varies from run to run, and float addition must not (same seed, same bits)."""
    parts = {n0: part for s in scratches for n0, part in s.get("dw", {}).items()}
    return sum(parts[n0] for n0 in sorted(parts)).reshape(shape)



# --- the geometry of a conv call, from its arguments ----------------------------------------
def conv2d_geometry(op, x, w, b, stride, padding, dilation, groups):
    check_4d(op, "input", x)
    check_4d(op, "weight", w)
    check_float(op, input=x, weight=w, bias=b)
    groups = int(groups)
    if groups >= 1 and x.shape[1] != w.shape[1] * groups:
        raise ShapeError(f"{op}: input has {x.shape[1]} channels but the weight expects "
                         f"{w.shape[1]} x groups={groups} = {w.shape[1] * groups}; "
                         f"input shape {x.shape}, weight shape {w.shape}")
    check_vector(op, "bias", b, w.shape[0])
    return _conv_geometry(op, x.shape, w.shape[0], w.shape, stride, padding, dilation, groups,
                          ("input", "weight"))



def conv_transpose2d_geometry(op, x, w, b, stride, padding, output_padding, dilation, groups):
    """The geometry of the conv whose input-gradient this transposed conv is."""
    check_4d(op, "input", x)
    check_4d(op, "weight", w)
    check_float(op, input=x, weight=w, bias=b)
    stride, padding, dilation, output_padding = (
        pair(v, op, name) for v, name in ((stride, "stride"), (padding, "padding"), (dilation, "dilation"),
                                          (output_padding, "output_padding")))
    groups = int(groups)
    if x.shape[1] != w.shape[0]:
        raise ShapeError(f"{op}: input has {x.shape[1]} channels but the weight (C_in, C_out/groups, kH, kW) "
                         f"expects {w.shape[0]}; input shape {x.shape}, weight shape {w.shape}")
    if groups < 1 or w.shape[0] % groups:
        raise ShapeError(f"{op}: groups={groups} must divide the input channels ({x.shape[1]}); "
                         f"input shape {x.shape}, weight shape {w.shape}")
    c_out = w.shape[1] * groups
    check_vector(op, "bias", b, c_out)
    for op_, s, d in zip(output_padding, stride, dilation):
        if not 0 <= op_ < max(s, d):
            raise ShapeError(f"{op}: output_padding {output_padding} must be >= 0 and smaller than "
                             f"the stride {stride} or the dilation {dilation}")
    if min(padding) < 0:
        raise ShapeError(f"{op}: padding must be >= 0, got {padding}")
    out_hw = tuple(conv_transpose_output_size(*a) for a in zip(
        x.shape[2:], w.shape[2:], stride, padding, dilation, output_padding))
    if min(out_hw) < 1:
        raise ShapeError(f"{op}: output size {out_hw} is empty: input shape {x.shape}, weight shape {w.shape}, "
                         f"stride {stride}, padding {padding}")
    image = (x.shape[0], c_out) + out_hw
    geo = _conv_geometry(op, image, w.shape[0], w.shape, stride, padding, dilation, groups, ("output", "weight"))
    # With output_padding the conv over `image` has one more output position than x; the
    # transposed conv only ever touches the first ones, so describe the conv with x's size.
    return geo._replace(out_hw=tuple(x.shape[2:]))

