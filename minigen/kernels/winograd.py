"""Winograd minimal filtering for stride-1 3x3 convolutions (Lavin & Gray, "Fast Algorithms
for Convolutional Neural Networks", 2016): the same outputs as im2col, with fewer multiplies.

1. One dimension: F(2, 3)
-------------------------
Two outputs of a 3-tap correlation of the inputs d0..d3 with the filter g0..g2,

    y0 = d0*g0 + d1*g1 + d2*g2
    y1 = d1*g0 + d2*g1 + d3*g2          (6 multiplies, done directly),

take only 4 multiplies once the filter is pre-combined (g is fixed, so its sums are free):

    m1 = (d2 - d0) * -g0                m2 = (d1 + d2) * (g0 + g1 + g2) / 2
    m4 = (d3 - d1) * g2                 m3 = (d2 - d1) * (g0 - g1 + g2) / 2
    y0 = m1 + m2 + m3                   y1 = m2 - m3 + m4

(expand m1 + m2 + m3: the d1*g0 and d2*g0 terms cancel; check y1 the same way). In matrices,
y = A^T [ (G g) * (B^T d) ] with an elementwise product in the middle:

          [-1  0  1  0]          [-1    0    0 ]
    B^T = [ 0  1  1  0]      G = [1/2  1/2  1/2]      A^T = [1  1  1  0]
          [ 0 -1  1  0]          [1/2 -1/2  1/2]            [0  1 -1  1]
          [ 0 -1  0  1]          [ 0    0    1 ]

B^T takes the 4 inputs to 4 "Winograd-domain" values, G the 3 taps to 4, and A^T the 4
products back to 2 outputs. These are Toom-Cook's matrices for the points 0, 1, -1 and infinity:
row i of B^T d is the inputs "evaluated" at point p_i, G g the filter, and A^T interpolates the
products back (`toom_cook` builds them from the points, exactly in fractions). F(m, 3) in general:
m outputs from a = m + 2 inputs with a multiplies, from m + 1 finite points and infinity; F(4, 3)
gives 4 outputs with 6 (`F4_3`).

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

5. Fast path: fused and cache-blocked, for both tile sizes
-------------------------------------
Done as whole-tensor passes, V and M for a batch of 128 64-channel 28x28 images are 100 MB
each and every pass streams them through memory. Instead the tiles (numbered image by image,
row by row) go in blocks of a few hundred (`BLOCK_BUDGET`): input transform into a small V
buffer (Numba), the 16 products (one stacked NumPy matmul, BLAS), output transform (Numba),
all while the block is still in cache; the same block loop runs F(2x2, 3x3) (16 products,
the conv plan's row "winograd") and F(4x4, 3x3) (6x6 input tiles overlapping by 2, 36 products,
row "winograd4" in winograd4.py), given the Transform. Each worker thread of `convbase.py`'s pool takes whole
runs of blocks (`_plan`), with BLAS held to one thread, like the im2col kernel. Inside a
block the transforms walk along rows of tiles: they first combine whole image rows (the
B^T / A^T applied across rows, which vectorizes), then each tile's columns. Input and output
stay NCHW like the rest of minigen. F(2x2, 3x3)'s transforms are unrolled by hand; F(4x4, 3x3)'s
are loops over its matrices' nonzero coefficients, which measured 3.5-6x slower than the unrolled
ones at F(2x2, 3x3), so F(4x4, 3x3) is slower than im2col for now and left to the measured plan
(docs/measurements.md#winograd-tile-size).

6. float32 error
----------------
The transforms add and subtract before multiplying, so the rounding differs from a direct
sum; with F(2x2, 3x3)'s coefficients (0, +-1, +-1/2) it stays within a small factor of
im2col's. F(4x4, 3x3) at the standard points 0, +-1, +-2 (`F4_3_STANDARD`, coefficients up to
8 in A^T and 5 in B^T) amplifies it about 5x. Points of the form 0, +-c, +-1/c (Alam, Anderson,
Barabasz and Gregg 2022, after Barabasz et al. 2020) keep the powers p^j in A^T and G near 1:
measured over c and other sets, c = 2/3 was best, about half the standard points' error
(`F4_3`). The bounds tested in tests/kernels/test_winograd.py, as the relative error
||y32 - y64|| / ||y64|| against the float64 direct conv, are in `FLOAT32_ERROR_BOUND`
(docs/measurements.md#winograd-float32-error). `conv2d_reference` runs any Transform.

Shapes: x (N, C_in, H, W); w (C_out, C_in, 3, 3); b (C_out,) or None; stride 1, padding 1,
dilation 1, groups 1; float32 or float64. Output (N, C_out, H, W).
"""
from __future__ import annotations

import contextlib
from fractions import Fraction
from math import prod
from typing import NamedTuple

import numpy as np
from numba import njit

from minigen.kernels import convbase

__all__ = ["takes", "preferred", "has_zero_tap", "forward", "input_grad", "weight_grad", "conv2d_reference",
           "toom_cook", "F2_3", "F4_3", "F4_3_STANDARD", "FLOAT32_ERROR_BOUND",
           "transform_forward", "transform_input_grad", "transform_weight_grad"]


class Transform(NamedTuple):
    """The matrices of F(m, 3): bt (a, a), g (a, 3), at (m, a), with a = m + 2."""
    bt: np.ndarray
    g: np.ndarray
    at: np.ndarray

    @property
    def m(self) -> int:
        return self.at.shape[0]

    @property
    def a(self) -> int:
        return self.at.shape[1]


def toom_cook(points, m: int, r: int = 3) -> Transform:
    """The matrices of F(m, r) from its a - 1 = m + r - 2 finite interpolation points and infinity
    (Toom-Cook, as in Lavin & Gray; exact in Fractions, then float64).

    Correlating the a inputs d with the r taps g is the transpose of multiplying the polynomials
    u(x) (m coefficients) and g(x) (r coefficients), which Toom-Cook does by evaluating both at the
    a points, multiplying the values, and interpolating the product back. Transposed:

      A^T[:, i] = (1, p_i, ..., p_i^(m-1))           u evaluated at p_i (infinity: its top coefficient)
      G[i]      = (1, p_i, ..., p_i^(r-1)) / f_i     g evaluated at p_i, f_i = prod_{k != i} (p_i - p_k)
      B^T[i]    = coefficients of prod_{k != i} (x - p_k)   (infinity: of prod_k (x - p_k))

    B^T's rows are the Lagrange interpolation polynomials times f_i (the 1 / f_i moved into G,
    which is applied once per weight, so B^T stays integer for integer points)."""
    p = [Fraction(v) for v in points]
    a = m + r - 1
    if len(p) != a - 1 or len(set(p)) != len(p):
        raise ValueError(f"F({m}, {r}) needs {a - 1} distinct finite points, got {points}")

    def coefficients(roots):                    # of prod (x - root), lowest power first
        c = [Fraction(1)]
        for root in roots:
            c = [(c[j - 1] if j else 0) - root * (c[j] if j < len(c) else 0) for j in range(len(c) + 1)]
        return c + [Fraction(0)] * (a - len(c))

    infinity = [[Fraction(0)] * (n - 1) + [Fraction(1)] for n in (m, r)]
    f = [prod(pi - pk for pk in p if pk != pi) for pi in p]
    at = [[pi ** j for pi in p] + [infinity[0][j]] for j in range(m)]
    g = [[pi ** j / fi for j in range(r)] for pi, fi in zip(p, f)] + [infinity[1]]
    bt = [coefficients([pk for pk in p if pk != pi]) for pi in p] + [coefficients(p)]
    return Transform(*(np.array(matrix, np.float64) for matrix in (bt, g, at)))


F2_3 = toom_cook((0, 1, -1), 2)
# Lavin & Gray's F(4, 3); F4_3 (the fast path's) uses points chosen for float32 error
# (docs/measurements.md#winograd-float32-error)
F4_3_STANDARD = toom_cook((0, 1, -1, 2, -2), 4)
F4_3 = toom_cook((0, Fraction(2, 3), Fraction(-2, 3), Fraction(3, 2), Fraction(-3, 2)), 4)

# float32 relative error bounds, ||y32 - y64|| / ||y64|| against the float64 direct conv, tested
# in tests/kernels/test_winograd.py (docs/measurements.md#winograd-float32-error).
FLOAT32_ERROR_BOUND = {
    "F(2x2,3x3)": {"forward": 1e-6, "input_grad": 1e-6, "weight_grad": 1e-6},
    "F(4x4,3x3)": {"forward": 1.5e-6, "input_grad": 1.5e-6, "weight_grad": 1.5e-6},
}

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


# --- fast path: Numba transforms + BLAS products, one cache-sized block of tiles at a time ------
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
def _combine_columns(line, first, step, coef, out):
    """out (nt,) = sum over j of coef[l, j] * line[first + step k + j], for one row l of a transform
    matrix coef: one tile's a (or m) columns of a combined row each, for nt consecutive tiles. Zero
    coefficients are skipped (most of B^T's and A^T's)."""
    out[:] = 0
    for j in range(coef.shape[0]):
        if coef[j] != 0:
            for k in range(out.shape[0]):
                out[k] += coef[j] * line[first + step * k + j]


@njit(cache=True, nogil=True)
def _input_transform(x, runs, v, bt):
    """v (a*a, C, nt) = B^T d B for the a x a input tiles d of the tiles in `runs` (see `_tile_runs`)
    of x (N, C, H, W), a = m + 2: tile (ty, tx) reads rows m ty - 1 .. m ty + m and the same
    columns, zeros outside the image.

    Row by row of tiles: first the a input rows are combined (B^T d) along the whole span of the
    run's columns (contiguous, so it vectorizes), then each tile's a columns of those (the
    trailing B)."""
    _, c_in, h, w = x.shape
    a = bt.shape[0]
    m = a - 2
    comb = np.empty((a, m * (w // m + 1) + 2), x.dtype)     # combined rows; index p holds image column p - 1
    for c in range(c_in):                            # channel outer: v is written along k
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            top = m * ty - 1                         # the tiles read rows top .. top + a - 1
            p0, p1 = m * tx0, m * tx1 + 2            # and padded columns p0 .. p1 - 1
            lo, hi = max(p0, 1), min(p1, w + 1)      # of which these are inside the image
            comb[:, p0:p1] = 0
            for j in range(a):                       # B^T d: add each input row into the combined rows
                if 0 <= top + j < h:
                    row = x[n, c, top + j]
                    for i in range(a):
                        coef = bt[i, j]
                        if coef != 0:
                            line = comb[i]
                            for p in range(lo, hi):
                                line[p] += coef * row[p - 1]
            for i in range(a):                       # (B^T d) B: combine each tile's columns
                for l in range(a):
                    _combine_columns(comb[i], p0, m, bt[l], v[a * i + l, c, k0:k0 + tx1 - tx0])


@njit(cache=True, nogil=True)
def _output_transform(mm, runs, out, bias, at):
    """out[n, o, m ty : m ty + m, m tx : m tx + m] = A^T M A (+ bias[o]) for the tiles in `runs`,
    from mm (a*a, C_out, nt). Each tile's columns are combined first (M A), for all nt tiles of the
    block at once (contiguous along k, so it vectorizes), then the rows, tile by tile into the
    output rows. Rows and columns of overhanging tiles that fall outside the image are dropped."""
    _, c_out, h, w = out.shape
    m, a = at.shape
    nt = mm.shape[2]
    ma = np.empty((a, m, nt), mm.dtype)              # M A: (Winograd row i, output column s, tile k)
    for o in range(c_out):
        add = out.dtype.type(0) if bias is None else bias[o]     # in out's dtype: float32 stays float32
        for i in range(a):                           # M A: combine each tile's columns
            for s in range(m):
                dst = ma[i, s]
                dst[:] = 0
                for j in range(a):
                    if at[s, j] != 0:
                        src = mm[a * i + j, o]
                        for k in range(nt):
                            dst[k] += at[s, j] * src[k]
        for run in range(runs.shape[0]):             # A^T (M A): combine the rows
            n, ty, tx0, tx1, k0 = runs[run]
            for r in range(min(m, h - m * ty)):      # the tiles' output rows inside the image
                row = out[n, o, m * ty + r]
                for s in range(m):
                    end = tx1 if m * (tx1 - 1) + s < w else tx1 - 1    # tiles whose column s is inside
                    for tx in range(tx0, end):
                        row[m * tx + s] = add
                    for i in range(a):
                        coef = at[r, i]
                        if coef != 0:
                            src = ma[i, s]
                            for tx in range(tx0, end):
                                row[m * tx + s] += coef * src[k0 + tx - tx0]


@njit(cache=True, nogil=True)
def _grad_transform(grad, runs, gm, at):
    """gm (a*a, C_out, nt) = A dY A^T for the m x m output-gradient tiles dY of grad (N, C_out, H, W)
    of the tiles in `runs` (zeros where a tile overhangs): the adjoint of `_output_transform`. The
    m rows are combined first (A dY, along the run's columns), then each tile's m columns."""
    _, c_out, h, w = grad.shape
    m, a = at.shape
    comb = np.empty((a, m * (w // m + 1)), grad.dtype)     # A dY; index = image column, zero beyond w
    for o in range(c_out):
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            p0, p1 = m * tx0, m * tx1                # the run's output columns
            hi = min(p1, w)
            comb[:, p0:p1] = 0
            for r in range(min(m, h - m * ty)):      # A dY: add each output row into the combined rows
                row = grad[n, o, m * ty + r]
                for i in range(a):
                    coef = at[r, i]
                    if coef != 0:
                        line = comb[i]
                        for p in range(p0, hi):
                            line[p] += coef * row[p]
            for i in range(a):                       # (A dY) A^T: combine each tile's columns
                for l in range(a):
                    _combine_columns(comb[i], p0, m, at[:, l], gm[a * i + l, o, k0:k0 + tx1 - tx0])


# F(2x2, 3x3)'s transforms unrolled by hand for F2_3's matrices: 3.5-6x faster than the loops above
# over its coefficients (docs/measurements.md#winograd-tile-size).
@njit(cache=True, nogil=True)
def _input_transform_2x2(x, runs, v):
    """F(2x2, 3x3)'s `_input_transform`, unrolled by hand: v (16, C, nt) = B^T d B for the 4x4 input
    tiles d of the tiles in `runs` (see `_tile_runs`)
    of x (N, C, H, W): tile (ty, tx) reads rows 2ty-1 .. 2ty+2 and columns 2tx-1 .. 2tx+2, zeros
    outside the image. B^T's rows are (d2 - d0, d1 + d2, d2 - d1, d3 - d1).

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
                c0[col + 1], c1[col + 1], c2[col + 1], c3[col + 1] = r2 - r0, r1 + r2, r2 - r1, r3 - r1
            for i in range(4):                       # (B^T d) B: combine each tile's columns
                line = comb[i]
                k1 = k0 + tx1 - tx0
                v0, v1 = v[4 * i, c, k0:k1], v[4 * i + 1, c, k0:k1]
                v2, v3 = v[4 * i + 2, c, k0:k1], v[4 * i + 3, c, k0:k1]
                for k in range(tx1 - tx0):
                    p = 2 * (tx0 + k)                # tile column 2 (tx0 + k) - 1, padded
                    e0, e1, e2, e3 = line[p], line[p + 1], line[p + 2], line[p + 3]
                    v0[k], v1[k], v2[k], v3[k] = e2 - e0, e1 + e2, e2 - e1, e3 - e1


@njit(cache=True, nogil=True)
def _output_transform_2x2(mm, runs, out, bias):
    """F(2x2, 3x3)'s `_output_transform`, unrolled: out[n, o, 2ty:2ty+2, 2tx:2tx+2] = A^T M A
    (+ bias[o]) for the tiles in `runs`, from mm (16, C_out, nt); A^T's rows are (M0 + M1 + M2, M1 - M2 + M3). Each tile's columns are
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
                right[k] = mm1[k] - mm2[k] + mm3[k]
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
                        row[2 * tx + side] = a1[k] - a2[k] + a3[k] + add


@njit(cache=True, nogil=True)
def _grad_transform_2x2(grad, runs, gm):
    """F(2x2, 3x3)'s `_grad_transform`, unrolled: gm (16, C_out, nt) = A dY A^T for the 2x2
    output-gradient tiles dY of grad (N, C_out, H, W) of the tiles in `runs` (zeros where a tile overhangs): the adjoint of `_output_transform`.
    A's rows are (g0, g0 + g1, g0 - g1, g1): the two rows are combined first, then each tile's
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
                comb[0, col], comb[1, col], comb[2, col], comb[3, col] = a, a + b, a - b, b
            if 2 * tx1 > w:                          # the last tile hangs over the right edge
                comb[:, w] = 0
            for i in range(4):                       # (A dY) A^T: combine each tile's columns
                for tx in range(tx0, tx1):
                    p, q = comb[i, 2 * tx], comb[i, 2 * tx + 1]
                    k = k0 + tx - tx0
                    gm[4 * i, o, k] = p
                    gm[4 * i + 1, o, k] = p + q
                    gm[4 * i + 2, o, k] = p - q
                    gm[4 * i + 3, o, k] = q


# --- the block loop ----------------------------------------------------------------------------
class _Plan(NamedTuple):
    """How the tiles of one conv are cut up: tiles_hw per image, `units` of work ([t0, t1) tile
    ranges a worker takes whole) each walked in blocks of at most `block` tiles."""
    tiles_hw: tuple
    block: int
    units: list


def _plan(shape, channels: int, t: Transform, max_units: int = 16) -> _Plan:
    """The m x m output tiles of images `shape` (N, C, H, W); a block's V and M (a*a * channels *
    block elements, channels = C_in + C_out) fit in BLOCK_BUDGET."""
    tiles_hw = (-(-shape[2] // t.m), -(-shape[3] // t.m))
    total = shape[0] * tiles_hw[0] * tiles_hw[1]
    block = max(16, BLOCK_BUDGET // (t.a * t.a * channels))
    blocks = -(-total // block)
    per_unit = -(-blocks // max_units) * block
    return _Plan(tiles_hw, block, [(t0, min(total, t0 + per_unit)) for t0 in range(0, total, per_unit)])


def _products(a, b, out):
    """out[xi] = a[xi] @ b[xi] for the a*a Winograd positions: one stacked matmul, faster than
    separate 2-D calls at these sizes (docs/measurements.md#smaller-choices)."""
    return np.matmul(a, b, out=out)


def _multiply_adds(x_shape, c_out: int, t: Transform) -> int:
    """The products' multiply-adds: a*a per m x m output tile (4 per pixel for F(2x2, 3x3), 2.25 for
    F(4x4, 3x3)), per C_in x C_out (what decides whether the work is worth sharing between threads,
    see convbase.serial_below)."""
    n, c_in, h, w = x_shape
    return n * t.a * t.a * (-(-h // t.m)) * (-(-w // t.m)) * c_in * c_out


def _block_buffers(scratch, block, nt, c_in, c_out, t: Transform, dtype):
    """The worker's V (a*a, C_in, nt) and M (a*a, C_out, nt) buffers for a block of nt <= block
    tiles, each contiguous (the last block of a unit is shorter), reused across blocks."""
    aa = t.a * t.a
    v = convbase.scratch_buffer(scratch, "v", aa * c_in * block, dtype)[:aa * c_in * nt]
    mm = convbase.scratch_buffer(scratch, "m", aa * c_out * block, dtype)[:aa * c_out * nt]
    return v.reshape(aa, c_in, nt), mm.reshape(aa, c_out, nt)


def _block_transforms(t: Transform, dtype):
    """(input, output, gradient) transforms of F(m x m, 3x3) for one block, taking `_input_transform`'s,
    `_output_transform`'s and `_grad_transform`'s arguments less the matrices (in dtype: float32 data,
    float32 arithmetic): F(2x2, 3x3)'s unrolled by hand, any other's the loops over its matrices."""
    if t is F2_3:
        return _input_transform_2x2, _output_transform_2x2, _grad_transform_2x2
    bt, at = t.bt.astype(dtype), t.at.astype(dtype)
    return (lambda x, runs, v: _input_transform(x, runs, v, bt),
            lambda mm, runs, out, bias: _output_transform(mm, runs, out, bias, at),
            lambda grad, runs, gm: _grad_transform(grad, runs, gm, at))


def _forward(x, u, bias, out, t: Transform):
    """out (N, C_out, H, W) = Winograd conv of x (N, C_in, H, W) with u = G w G^T (a*a, C_out, C_in)."""
    c_in, c_out = x.shape[1], u.shape[1]
    plan = _plan(x.shape, c_in + c_out, t)
    input_transform, output_transform, _ = _block_transforms(t, x.dtype)

    def task(t0, t1, scratch):
        for b0 in range(t0, t1, plan.block):
            nt = min(plan.block, t1 - b0)
            v, mm = _block_buffers(scratch, plan.block, nt, c_in, c_out, t, x.dtype)
            runs = _tile_runs(b0, nt, plan.tiles_hw)
            input_transform(x, runs, v)
            _products(u, v, mm)
            output_transform(mm, runs, out, bias)
    convbase.for_each_chunk(plan.units, task, _multiply_adds(x.shape, c_out, t))
    return out


def _weight_grad(grad, x, t: Transform):
    """dU (a*a, C_out, C_in) = sum over tiles of (A dY A^T)[xi] (B^T d B)[xi]^T, one partial sum
    per unit added up in unit order (the same bits whichever worker ran which unit)."""
    c_in, c_out = x.shape[1], grad.shape[1]
    plan = _plan(x.shape, c_in + c_out, t)
    input_transform, _, grad_transform = _block_transforms(t, x.dtype)

    def task(t0, t1, scratch):
        total = np.zeros((t.a * t.a, c_out, c_in), x.dtype)
        part = convbase.scratch_buffer(scratch, "part", total.size, x.dtype).reshape(total.shape)
        for b0 in range(t0, t1, plan.block):
            nt = min(plan.block, t1 - b0)
            v, gm = _block_buffers(scratch, plan.block, nt, c_in, c_out, t, x.dtype)
            runs = _tile_runs(b0, nt, plan.tiles_hw)
            input_transform(x, runs, v)
            grad_transform(grad, runs, gm)
            total += _products(gm, v.transpose(0, 2, 1), part)
        scratch.setdefault("du", {})[t0] = total
    scratches = convbase.for_each_chunk(plan.units, task, _multiply_adds(x.shape, c_out, t))
    parts = {t0: part for s in scratches for t0, part in s.get("du", {}).items()}
    return sum(parts[t0] for t0 in sorted(parts))


def _weight_transform(w, t: Transform):
    """U = G w G^T: (a*a, C_out, C_in) from w (C_out, C_in, 3, 3)."""
    g = t.g.astype(w.dtype)
    # two BLAS products over the tap axes (j, then i), ~10x faster than the equivalent
    # einsum("ai,ocij,bj->aboc"), which loops in C; this runs once per conv call
    wg = np.tensordot(w, g, axes=(3, 1))              # w G^T: (C_out, C_in, 3, a) over i, b
    u = np.tensordot(g, wg, axes=(1, 2))              # G w G^T: (a, C_out, C_in, a)
    return np.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(t.a * t.a, *w.shape[:2])


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
    if _cached_transforms(w) is not None:
        return False
    return not bool(w.reshape(w.shape[0] * w.shape[1], -1).any(axis=0).all())


# While `fixed_weights` is active: id(w) -> (w, {m: U of F(m x m, 3x3)}) for the weights seen so far (w
# kept, so its id cannot be reused by another array). Shared by all threads (the parts of map_batch_parts).
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


def _cached_transforms(w):
    """w's {m: U} from the `fixed_weights` cache; None when no cache is active or w is not in it yet."""
    entry = None if _fixed_transforms is None else _fixed_transforms.get(id(w))
    return entry[1] if entry is not None and entry[0] is w else None


def _transform_of(w, t: Transform):
    """U for weight w: from the `fixed_weights` cache when one is active (and stored there)."""
    cache, cached = _fixed_transforms, _cached_transforms(w)
    u = None if cached is None else cached.get(t.m)
    if u is None:
        u = _weight_transform(w, t)
        if cache is not None:
            cache.setdefault(id(w), (w, {}))[1][t.m] = u
    return u


def transform_forward(x, w, b, t: Transform):
    """x (N, C_in, H, W), w (C_out, C_in, 3, 3), b (C_out,) or None -> (N, C_out, H, W); stride 1, pad 1."""
    out = np.empty((x.shape[0], w.shape[0]) + x.shape[2:], x.dtype)
    return _forward(x, _transform_of(w, t), None if b is None else np.ascontiguousarray(b), out, t)


def transform_input_grad(g, w, b, t: Transform):
    """The adjoint, + b unless None: a 3x3 conv of g (N, C_out, H, W) with the kernel flipped and
    the channels swapped."""
    w_adjoint = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    out = np.empty((g.shape[0], w.shape[1]) + g.shape[2:], g.dtype)
    return _forward(g, _weight_transform(w_adjoint, t), None if b is None else np.ascontiguousarray(b), out, t)


def transform_weight_grad(g, x, t: Transform):
    """dw = G^T dU G (C_out, C_in, 3, 3) for the output gradient g and input x."""
    gm = t.g.astype(x.dtype)
    du = _weight_grad(g, x, t).reshape(t.a, t.a, g.shape[1], x.shape[1])
    return np.ascontiguousarray(np.einsum("ai,aboc,bj->ocij", gm, du, gm))


# the conv plan's row "winograd": F(2x2, 3x3) (winograd4.py is the row of F(4x4, 3x3))
def forward(x, w, b, geo):
    return transform_forward(x, w, b, F2_3)


def input_grad(g, w, b, geo):
    return transform_input_grad(g, w, b, F2_3)


def weight_grad(g, x, geo):
    return transform_weight_grad(g, x, F2_3)
