"""Winograd minimal filtering for stride-1 3x3 convolutions (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016): the same outputs as im2col, with fewer multiplies.

1. One dimension: F(2, 3)
-------------------------
Two outputs of a 3-tap correlation of the inputs d0..d3 with the filter g0..g2,

    y0 = d0*g0 + d1*g1 + d2*g2
    y1 = d1*g0 + d2*g1 + d3*g2          (6 multiplies, done directly),

take only 4 multiplies once the filter is pre-combined (g is fixed, so its sums are free):

    m1 = (d0 - d2) * g0                 m2 = (d1 + d2) * (g0 + g1 + g2) / 2
    m4 = (d1 - d3) * g2                 m3 = (d2 - d1) * (g0 - g1 + g2) / 2
    y0 = m1 + m2 + m3                   y1 = m2 - m3 - m4

(expand m1 + m2 + m3: the d1*g0 and d2*g0 terms cancel; check y1 the same way). In matrices,
y = A^T [ (G g) * (B^T d) ] with an elementwise product in the middle:

          [1  0 -1  0]           [ 1    0    0 ]
    B^T = [0  1  1  0]       G = [1/2  1/2  1/2]      A^T = [1  1  1  0]
          [0 -1  1  0]           [1/2 -1/2  1/2]            [0  1 -1 -1]
          [0  1  0 -1]           [ 0    0    1 ]

B^T takes the 4 inputs to 4 "Winograd-domain" values, G the 3 taps to 4, and A^T the 4
products back to 2 outputs. F(m, 3) in general: m outputs from a = m + 2 inputs with a
multiplies; F(4, 3) (its matrices are `F4_3` below, from the paper) gives 4 outputs with 6.

2. Two dimensions: F(2x2, 3x3), by nesting
------------------------------------------
Apply the 1-D algorithm along rows and then columns. An input tile d (4x4) gives a 2x2
output tile

    Y = A^T [ (G w G^T) * (B^T d B) ] A        U = G w G^T: (4, 4); V = B^T d B: (4, 4)

with 16 multiplies instead of 2*2*9 = 36: 2.25x fewer (F(4x4, 3x3): 36 instead of
16*9 = 144, 4x fewer). Tiles: output tile (ty, tx) covers output rows 2ty..2ty+1 and columns
2tx..2tx+1 and reads input rows 2ty-1..2ty+2 (padding 1): neighbouring input tiles OVERLAP by
r - 1 = 2 rows/columns. An image of H x W has ceil(H/2) x ceil(W/2) tiles; when H or W is odd
the last tiles hang over the edge (read zeros there, and their extra outputs are dropped).

3. Many channels: the products become matrix products
-----------------------------------------------------
A conv sums over C_in channels, and A^T [.] A is linear, so sum first, transform back once:

    U[xi, o, c] = (G w[o, c] G^T)[xi]       (16, C_out, C_in)   once per weight
    V[xi, c, t] = (B^T d[c, t] B)[xi]       (16, C_in, T)       every channel of every tile t
    M[xi]       = U[xi] @ V[xi]             (16, C_out, T)      16 ordinary matrix products (BLAS)
    Y[o, t]     = A^T M[:, o, t] A          (C_out, T, 2, 2)

where xi runs over the 16 positions of a 4x4 Winograd-domain tile. Almost all the work is
the 16 products, and they are 16/36 of im2col's single product (C_out, 9 C_in) @ (9 C_in, T*4).

4. Gradients
------------
* Input gradient: the adjoint of a stride-1, pad-1 3x3 conv is again one, with the kernel
  flipped in both spatial axes and C_in / C_out swapped (w'[c, o] = w[o, c, ::-1, ::-1]): the
  same forward code.
* Weight gradient: the forward is linear in U, so dU[xi] = sum over tiles of
  (A dY A^T)[xi] * V[xi]: one (C_out, T) @ (T, C_in) product per xi, and dw = G^T dU G.
  This is exactly the adjoint of the forward computation, with the same 2.25x saving.

5. Fast path: fused and cache-blocked
-------------------------------------
Done as whole-tensor passes, V and M for a batch of 128 64-channel 28x28 images are 100 MB
each and every pass streams them through memory. Instead the tiles (numbered image by image,
row by row) go in blocks of a few hundred (`BLOCK_BUDGET`): input transform into a small V
buffer (Numba), the 16 products (one stacked NumPy matmul, BLAS), output transform (Numba),
all while the block is still in cache. Each worker thread of `convbase.py`'s pool takes whole
runs of blocks (`_plan`), with BLAS held to one thread, like the im2col kernel. Inside a
block the transforms walk along rows of tiles: they first combine whole image rows (the
B^T / A^T applied across rows, which vectorizes), then each tile's columns. Input and output
stay NCHW like the rest of minigen.

6. float32 error
----------------
The transforms add and subtract before multiplying, so the rounding differs from a direct
sum; with F(2x2, 3x3)'s coefficients (0, +-1, +-1/2) it stays within a small factor of
im2col's. F(4x4, 3x3)'s larger coefficients (up to 8 in A^T, 5 in B^T) amplify it about 5x.
The bounds tested in tests/kernels/test_winograd.py, as the relative error ||y32 - y64|| / ||y64||
against the float64 direct conv, are in `FLOAT32_ERROR_BOUND` (1e-6 for the fast path's
forward, input gradient and weight gradient; measured 1.6e-7 - 3.2e-7, im2col 1.0e-7 - 2.8e-7).
F(4x4, 3x3) would save at most about 25% of the forward at 28x28 and 10% at 14x14, for 5x the
float32 error: the fast path uses F(2x2, 3x3) (docs/measurements.md#winograd-tile-size).
`conv2d_reference` runs either.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3); b (C_out,) or None; stride 1, padding 1,
dilation 1, groups 1; float32 or float64. Output (N, C_out, H, W).
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
from numba import njit

from minigen.kernels import convbase

__all__ = ["takes", "preferred", "has_zero_tap", "forward", "input_grad", "weight_grad", "conv2d_reference",
           "F2_3", "F4_3", "FLOAT32_ERROR_BOUND"]


class Transform(NamedTuple):
    """The matrices of F(m, 3): bt (a, a), g (a, 3), at (m, a), with a = m + 2."""
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray

    @property
    def m(self) -> int:
        return self.at.shape[0]


F2_3 = Transform(
    bt=np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
    g=np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
    at=np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64))

F4_3 = Transform(
    bt=np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
    g=np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
    at=np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64))

# float32 relative error bounds, ||y32 - y64|| / ||y64|| against the float64 direct conv, tested
# in tests/kernels/test_winograd.py; F(4x4, 3x3)'s larger coefficients give about 5x the error
# (docs/measurements.md#winograd-float32-error).
FLOAT32_ERROR_BOUND = {"forward": 1e-6, "input_grad": 1e-6, "weight_grad": 1e-6, "F(4x4,3x3) forward": 5e-6}

# Elements of V + M one block of tiles may use: 512K (2 MB of float32, 256 tiles of 64 -> 64 channels);
# smaller and larger blocks measured slower (docs/measurements.md#winograd-block-budget).
BLOCK_BUDGET = 1 << 19

# The fast path takes convs with at least this many input channels (and C_in >= C_out / 2): with fewer, the
# transforms (whose cost grows with C_in + C_out) outweigh the saved multiplies (C_in * C_out), above all in
# the input gradient, a Winograd conv from C_out to C_in channels. 16 keeps a margin over the measured
# crossover of 8-15 (docs/measurements.md#winograd-min-in-channels).
MIN_IN_CHANNELS = 16


# --- plain NumPy reference: the algorithm written out, one whole tensor at a time ------------
def _tiles(x, m):
    """The overlapping (m+2) x (m+2) input tiles of x (N, C, H, W) padded by 1 (and by zeros
    where the last tiles overhang): (N, C, tiles_h, tiles_w, m+2, m+2)."""
    n, c, h, w = x.shape
    th, tw = -(-h // m), -(-w // m)
    xp = np.zeros((n, c, th * m + 2, tw * m + 2), x.dtype)
    xp[:, :, 1:h + 1, 1:w + 1] = x
    rows = np.arange(th)[:, None] * m + np.arange(m + 2)          # (th, a) padded row indices
    cols = np.arange(tw)[:, None] * m + np.arange(m + 2)
    return xp[:, :, rows[:, None, :, None], cols[None, :, None, :]]


def conv2d_reference(x, w, b=None, transform: Transform = F2_3):
    """Winograd conv of x (N, C_in, H, W) with w (C_out, C_in, 3, 3), stride 1, padding 1,
    written directly from the module docstring (whole tensors, no blocking)."""
    bt, g, at = (matrix.astype(x.dtype) for matrix in transform)   # float32 data: float32 arithmetic
    m = transform.m
    n, _, h, w_ = x.shape
    u = np.einsum("ai,ocij,bj->aboc", g, w, g)                     # G w G^T: (a, a, C_out, C_in)
    v = np.einsum("ai,nctsij,bj->abncts", bt, _tiles(x, m), bt)  # (a, a, N, C_in, th, tw)
    mm = np.einsum("aboc,abncts->abnots", u, v)                    # the a*a matrix products
    y = np.einsum("ia,abnots,jb->notsij", at, mm, at)              # A^T M A: (N, C_out, th, tw, m, m)
    y = y.transpose(0, 1, 2, 4, 3, 5).reshape(n, -1, y.shape[2] * m, y.shape[3] * m)[:, :, :h, :w_]
    return y if b is None else y + np.asarray(b).reshape(-1, 1, 1)


# --- fast path: F(2x2, 3x3), Numba transforms + BLAS products, one cache-sized block at a time ---
@njit(cache=True, nogil=True)
def _tile_runs(t0, nt, tiles_hw):
    """The tiles t0 .. t0+nt-1 (numbered image by image, row by row) as runs along tile rows:
    (runs, 5) ints (image n, tile row ty, first tile column tx0, end column tx1, block index k0
    of tile (ty, tx0))."""
    tiles_h, tiles_w = tiles_hw
    runs = np.empty((nt // tiles_w + 2, 5), np.int64)
    count, k = 0, 0
    while k < nt:
        n, r = divmod(t0 + k, tiles_h * tiles_w)
        ty, tx0 = divmod(r, tiles_w)
        tx1 = min(tiles_w, tx0 + nt - k)
        runs[count, 0], runs[count, 1], runs[count, 2], runs[count, 3], runs[count, 4] = n, ty, tx0, tx1, k
        count += 1
        k += tx1 - tx0
    return runs[:count]


@njit(cache=True, nogil=True)
def _input_transform(x, runs, v):
    """v (16, C, nt) = B^T d B for the 4x4 input tiles d of the tiles in `runs` (see `_tile_runs`)
    of x (N, C, H, W): tile (ty, tx) reads rows 2ty-1 .. 2ty+2 and columns 2tx-1 .. 2tx+2, zeros
    outside the image. B^T's rows are (d0 - d2, d1 + d2, d2 - d1, d1 - d3).

    Row by row of tiles: first the four input rows are combined (B^T d) along the whole span
    of the run's columns (contiguous, so it vectorizes), then each tile's four columns of
    those (the trailing B)."""
    _, c_in, h, w = x.shape
    comb = np.empty((4, w + 3), x.dtype)             # combined rows; index p holds image column p - 1
    zeros = np.zeros(w, x.dtype)                     # stands in for rows above or below the image
    for c in range(c_in):                            # channel outer: v is written along k
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            top = 2 * ty - 1                         # rows top .. top+3; top + 1 is always inside
            row0 = x[n, c, top] if top >= 0 else zeros
            row1 = x[n, c, top + 1]
            row2 = x[n, c, top + 2] if top + 2 < h else zeros
            row3 = x[n, c, top + 3] if top + 3 < h else zeros
            first, last = 2 * tx0 - 1, 2 * tx1       # the image columns the run's tiles read
            lo, hi = max(first, 0), min(last + 1, w)
            for i in range(4):                       # padding columns: zero
                for p in range(first + 1, lo + 1):
                    comb[i, p] = 0
                for p in range(hi + 1, last + 2):
                    comb[i, p] = 0
            c0, c1, c2, c3 = comb[0], comb[1], comb[2], comb[3]
            for col in range(lo, hi):                # B^T d: combine the rows
                r0, r1, r2, r3 = row0[col], row1[col], row2[col], row3[col]
                c0[col + 1], c1[col + 1], c2[col + 1], c3[col + 1] = r0 - r2, r1 + r2, r2 - r1, r1 - r3
            for i in range(4):                       # (B^T d) B: combine each tile's columns
                line = comb[i]
                k1 = k0 + tx1 - tx0
                v0, v1 = v[4 * i, c, k0:k1], v[4 * i + 1, c, k0:k1]
                v2, v3 = v[4 * i + 2, c, k0:k1], v[4 * i + 3, c, k0:k1]
                for k in range(tx1 - tx0):
                    p = 2 * (tx0 + k)                # tile column 2 (tx0 + k) - 1, padded
                    e0, e1, e2, e3 = line[p], line[p + 1], line[p + 2], line[p + 3]
                    v0[k], v1[k], v2[k], v3[k] = e0 - e2, e1 + e2, e2 - e1, e1 - e3


@njit(cache=True, nogil=True)
def _output_transform(mm, runs, out, bias):
    """out[n, o, 2ty:2ty+2, 2tx:2tx+2] = A^T M A (+ bias[o]) for the tiles in `runs`, from
    mm (16, C_out, nt); A^T's rows are (M0 + M1 + M2, M1 - M2 - M3). Each tile's columns are
    combined first (M A), for all nt tiles of the block at once (contiguous along k, so it
    vectorizes), then the rows, tile by tile into the output rows. Rows and columns of
    overhanging tiles that fall outside the image are dropped."""
    _, c_out, h, w = out.shape
    nt = mm.shape[2]
    ma = np.empty((4, 2, nt), mm.dtype)              # M A: (Winograd row i, output column side, tile k)
    for o in range(c_out):
        add = out.dtype.type(0) if bias is None else bias[o]     # in out's dtype: float32 stays float32
        for i in range(4):                           # M A: combine each tile's columns
            mm0, mm1, mm2, mm3 = mm[4 * i, o], mm[4 * i + 1, o], mm[4 * i + 2, o], mm[4 * i + 3, o]
            left, right = ma[i, 0], ma[i, 1]
            for k in range(nt):
                left[k] = mm0[k] + mm1[k] + mm2[k]
                right[k] = mm1[k] - mm2[k] - mm3[k]
        for run in range(runs.shape[0]):             # A^T (M A): combine the rows
            n, ty, tx0, tx1, k0 = runs[run]
            inside = tx1 if 2 * tx1 <= w else tx1 - 1      # tiles whose right column is in the image
            for side in range(2):
                a0, a1, a2, a3 = ma[0, side], ma[1, side], ma[2, side], ma[3, side]
                end = tx1 if side == 0 else inside
                row = out[n, o, 2 * ty]
                for tx in range(tx0, end):
                    k = k0 + tx - tx0
                    row[2 * tx + side] = a0[k] + a1[k] + a2[k] + add
                if 2 * ty + 1 < h:
                    row = out[n, o, 2 * ty + 1]
                    for tx in range(tx0, end):
                        k = k0 + tx - tx0
                        row[2 * tx + side] = a1[k] - a2[k] - a3[k] + add


@njit(cache=True, nogil=True)
def _grad_transform(grad, runs, gm):
    """gm (16, C_out, nt) = A dY A^T for the 2x2 output-gradient tiles dY of grad (N, C_out, H, W)
    of the tiles in `runs` (zeros where a tile overhangs): the adjoint of `_output_transform`.
    A's rows are (g0, g0 + g1, g0 - g1, -g1): the two rows are combined first, then each tile's
    two columns."""
    _, c_out, h, w = grad.shape
    comb = np.empty((4, 2 * (w // 2 + 1)), grad.dtype)
    zeros = np.zeros(w, grad.dtype)                  # stands in for the row below the image
    for o in range(c_out):
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            row0 = grad[n, o, 2 * ty]
            row1 = grad[n, o, 2 * ty + 1] if 2 * ty + 1 < h else zeros
            for col in range(2 * tx0, min(2 * tx1, w)):   # A dY: combine the rows
                a, b = row0[col], row1[col]
                comb[0, col], comb[1, col], comb[2, col], comb[3, col] = a, a + b, a - b, -b
            if 2 * tx1 > w:                          # the last tile hangs over the right edge
                comb[:, w] = 0
            for i in range(4):                       # (A dY) A^T: combine each tile's columns
                for tx in range(tx0, tx1):
                    p, q = comb[i, 2 * tx], comb[i, 2 * tx + 1]
                    k = k0 + tx - tx0
                    gm[4 * i, o, k] = p
                    gm[4 * i + 1, o, k] = p + q
                    gm[4 * i + 2, o, k] = p - q
                    gm[4 * i + 3, o, k] = -q


# --- the block loop ----------------------------------------------------------------------------
class _Plan(NamedTuple):
    """How the tiles of one conv are cut up: tiles_hw per image, `units` of work ([t0, t1) tile
    ranges a worker takes whole) each walked in blocks of at most `block` tiles."""
    tiles_hw: tuple
    block: int
    units: list


def _plan(shape, channels: int, max_units: int = 16) -> _Plan:
    """Tiles of images `shape` (N, C, H, W); a block's V and M (16 * channels * block elements,
    channels = C_in + C_out) fit in BLOCK_BUDGET."""
    tiles_hw = (-(-shape[2] // 2), -(-shape[3] // 2))
    total = shape[0] * tiles_hw[0] * tiles_hw[1]
    block = max(16, BLOCK_BUDGET // (16 * channels))
    blocks = -(-total // block)
    per_unit = -(-blocks // max_units) * block
    return _Plan(tiles_hw, block, [(t0, min(total, t0 + per_unit)) for t0 in range(0, total, per_unit)])


def _products(a, b, out):
    """out[xi] = a[xi] @ b[xi] for the 16 Winograd positions: one stacked matmul, faster than 16
    separate 2-D calls at these sizes (docs/measurements.md#smaller-choices)."""
    return np.matmul(a, b, out=out)


def _multiply_adds(x_shape, c_out: int) -> int:
    """The products' multiply-adds: 16 per 2x2 output tile, i.e. 4 per pixel, per C_in x C_out
    (what decides whether the work is worth sharing between threads, see convbase.serial_below)."""
    n, c_in, h, w = x_shape
    return n * 4 * (-(-h // 2)) * (-(-w // 2)) * c_in * c_out


def _block_buffers(scratch, block, nt, c_in, c_out, dtype):
    """The worker's V (16, C_in, nt) and M (16, C_out, nt) buffers for a block of nt <= block
    tiles, each contiguous (the last block of a unit is shorter), reused across blocks."""
    v = convbase.scratch_buffer(scratch, "v", 16 * c_in * block, dtype)[:16 * c_in * nt]
    mm = convbase.scratch_buffer(scratch, "m", 16 * c_out * block, dtype)[:16 * c_out * nt]
    return v.reshape(16, c_in, nt), mm.reshape(16, c_out, nt)


def _forward(x, u, bias, out):
    """out (N, C_out, H, W) = Winograd conv of x (N, C_in, H, W) with u = G w G^T (16, C_out, C_in)."""
    c_in, c_out = x.shape[1], u.shape[1]
    plan = _plan(x.shape, c_in + c_out)

    def task(t0, t1, scratch):
        for b0 in range(t0, t1, plan.block):
            nt = min(plan.block, t1 - b0)
            v, mm = _block_buffers(scratch, plan.block, nt, c_in, c_out, x.dtype)
            runs = _tile_runs(b0, nt, plan.tiles_hw)
            _input_transform(x, runs, v)
            _products(u, v, mm)
            _output_transform(mm, runs, out, bias)
    convbase.for_each_chunk(plan.units, task, _multiply_adds(x.shape, c_out))
    return out


def _weight_grad(grad, x):
    """dU (16, C_out, C_in) = sum over tiles of (A dY A^T)[xi] (B^T d B)[xi]^T, one partial sum
    per unit added up in unit order (the same bits whichever worker ran which unit)."""
    c_in, c_out = x.shape[1], grad.shape[1]
    plan = _plan(x.shape, c_in + c_out)

    def task(t0, t1, scratch):
        total = np.zeros((16, c_out, c_in), x.dtype)
        part = convbase.scratch_buffer(scratch, "part", total.size, x.dtype).reshape(total.shape)
        for b0 in range(t0, t1, plan.block):
            nt = min(plan.block, t1 - b0)
            v, gm = _block_buffers(scratch, plan.block, nt, c_in, c_out, x.dtype)
            runs = _tile_runs(b0, nt, plan.tiles_hw)
            _input_transform(x, runs, v)
            _grad_transform(grad, runs, gm)
            total += _products(gm, v.transpose(0, 2, 1), part)
        scratch.setdefault("du", {})[t0] = total
    scratches = convbase.for_each_chunk(plan.units, task, _multiply_adds(x.shape, c_out))
    parts = {t0: part for s in scratches for t0, part in s.get("du", {}).items()}
    return sum(parts[t0] for t0 in sorted(parts))


def _weight_transform(w):
    """U = G w G^T: (16, C_out, C_in) from w (C_out, C_in, 3, 3)."""
    g = F2_3.g.astype(w.dtype)
    # two BLAS products over the tap axes (j, then i), ~10x faster than the equivalent
    # einsum("ai,ocij,bj->aboc"), which loops in C; this runs once per conv call
    wg = np.tensordot(w, g, axes=(3, 1))              # w G^T: (C_out, C_in, 3, 4) over i, b
    u = np.tensordot(g, wg, axes=(1, 2))              # G w G^T: (4 a, C_out, C_in, 4 b)
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(16, *w.shape[:2])


# --- which convs, and the entry points the conv plan (conv.py) calls ---------------------------
def takes(geo, part: str) -> bool:
    """Any part of a 3x3, stride-1, padding-1, undilated, ungrouped conv over all taps, unless some
    tap of its weight is zero in every channel (`geo.zero_tap`, see `has_zero_tap`)."""
    return (geo.kernel == (3, 3) and geo.stride == (1, 1) and geo.padding == (1, 1) and geo.dilation == (1, 1)
            and geo.groups == 1 and geo.taps is None and not geo.zero_tap)


def preferred(geo, part: str) -> bool:
    """Enough input channels, also relative to the output channels, to be faster than im2col
    (measured, see MIN_IN_CHANNELS); the same rule for every part."""
    c_in, c_out = geo.image[1], geo.c_out
    return c_in >= MIN_IN_CHANNELS and 2 * c_in >= c_out


def has_zero_tap(w) -> bool:
    """Some tap of w (C_out, C_in, 3, 3) is zero in every channel: a mask (PixelCNN's causal convs
    applied by hand). im2col multiplies it by exact zeros, while G w G^T and the output transform
    mix it with the other taps, and the rounding then leaks ~1e-9 of the masked-out pixels into the
    output (measured through a 16-channel PixelCNN), which breaks exact causality. Under
    `fixed_weights` a weight with a cached U passed this already (the check reads all of w)."""
    if _cached_transform(w) is not None:
        return False
    return not bool(w.reshape(w.shape[0] * w.shape[1], -1).any(axis=0).all())


# While `fixed_weights` is active: id(w) -> (w, U) for the weights seen so far (w kept, so its id
# cannot be reused by another array). Shared by all threads (the parts of map_batch_parts).
_fixed_transforms: dict | None = None


@contextlib.contextmanager
def fixed_weights():
    """Within the block no conv weight array changes (e.g. while sampling with fixed weights:
    50 to 1000 network passes), so each weight's U = G w G^T is computed once and reused.
    Changing a weight array in place inside the block is not allowed (its old U would be used)."""
    global _fixed_transforms
    outer, _fixed_transforms = _fixed_transforms, {} if _fixed_transforms is None else _fixed_transforms
    try:
        yield
    finally:
        _fixed_transforms = outer


def _cached_transform(w):
    """w's U from the `fixed_weights` cache; None when no cache is active or w is not in it yet."""
    entry = None if _fixed_transforms is None else _fixed_transforms.get(id(w))
    return entry[1] if entry is not None and entry[0] is w else None


def _transform_of(w):
    """U for weight w: from the `fixed_weights` cache when one is active (and stored there)."""
    cache, u = _fixed_transforms, _cached_transform(w)
    if u is None:
        u = _weight_transform(w)
        if cache is not None:
            cache[id(w)] = (w, u)
    return u


def forward(x, w, b, geo):
    """x (N, C_in, H, W), w (C_out, C_in, 3, 3), b (C_out,) or None -> (N, C_out, H, W); stride 1, pad 1."""
    out = np.empty((x.shape[0], w.shape[0]) + x.shape[2:], x.dtype)
    return _forward(x, _transform_of(w), None if b is None else np.ascontiguousarray(b), out)


def input_grad(g, w, b, geo):
    """The adjoint, + b unless None: a 3x3 conv of g (N, C_out, H, W) with the kernel flipped and
    the channels swapped."""
    w_adjoint = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    out = np.empty((g.shape[0], w.shape[1]) + g.shape[2:], g.dtype)
    return _forward(g, _weight_transform(w_adjoint), None if b is None else np.ascontiguousarray(b), out)


def weight_grad(g, x, geo):
    """dw = G^T dU G (C_out, C_in, 3, 3) for the output gradient g and input x."""
    gm = F2_3.g.astype(x.dtype)
    du = _weight_grad(g, x).reshape(4, 4, g.shape[1], x.shape[1])
    return np.ascontiguousarray(np.einsum("ai,aboc,bj->ocij", gm, du, gm))
