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
----------------------------------------------------------
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
stay NCHW like the rest of minigen.

The transforms' code is generated from the matrices (`transform_source(t)` returns it, to print):
straight-line sums with the nonzero coefficients as constants (+-1 as plain additions), in the
structure above, written once into `winograd_transforms.py` (generated; Numba caches its compiled code on disk like any
kernel's, `_generated_transforms`). One
generator serves both tile sizes: for F(2x2, 3x3) it writes the same code as the hand-unrolled
kernels it replaced (as fast, measured), and loops over the matrices' coefficients instead of it
measured 3.5-6x slower. The output transform writes each tile's m columns of a row together (a
loop over the columns of the row, strided by m, measured 2x slower for F(4x4, 3x3)).
(docs/measurements.md#winograd-tile-size)

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
import linecache
import os
from fractions import Fraction
from math import prod
from typing import NamedTuple

import numpy as np
from numba import njit

from minigen.kernels import convbase

__all__ = ["takes", "preferred", "has_zero_tap", "forward", "input_grad", "weight_grad", "conv2d_reference",
           "toom_cook", "F2_3", "F4_3", "F4_3_STANDARD", "FLOAT32_ERROR_BOUND", "transform_source",
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


# --- fast path: transforms generated from the matrices, BLAS products, one block of tiles at a time --
def _combination(coefs, names, consts) -> str:
    """Source of sum_j coefs[j] * names[j] over the nonzero coefs: +-1 as plain additions and
    subtractions, any other coefficient by the name of a constant (`consts`: |coef| -> name, added to)."""
    terms = sorted(((float(c), name) for c, name in zip(coefs, names) if c != 0), key=lambda term: term[0] < 0)
    source = ""                                      # a positive term first (sorted stably): "r2 - r0"
    for c, name in terms:
        if abs(c) != 1:
            name = f"{consts.setdefault(abs(c), f'q{len(consts)}')} * {name}"
        source += ("-" if c < 0 else "") + name if not source else (" - " if c < 0 else " + ") + name
    return source or "0"


def _names(pattern: str, count: int) -> str:
    return ", ".join(pattern.format(i) for i in range(count))


def _constants(consts, array: str) -> str:
    """Lines binding the constants in `array`'s dtype (float32 data: float32 arithmetic)."""
    return "".join(f"\n    {name} = {array}.dtype.type({value!r})" for value, name in consts.items())


def _input_source(t: Transform, suffix: str = "", cache: bool = False) -> str:
    m, a, bt = t.m, t.a, t.bt
    consts = {}
    rows = "".join(f"\n            row{j} = x[n, c, top + {j}]"
                   + (" if top >= 0 else zeros" if j == 0 else "" if j == 1 else f" if top + {j} < h else zeros")
                   for j in range(a))
    combine_rows = "".join(f"\n                c{i}[col + 1] = {_combination(bt[i], [f'r{j}' for j in range(a)], consts)}"
                           for i in range(a))
    combine_columns = "".join(f"\n                    v{i}[k] = {_combination(bt[i], [f'e{j}' for j in range(a)], consts)}"
                              for i in range(a))
    return f'''\
@njit(cache={cache}, nogil=True)
def input_transform{suffix}(x, runs, v):
    """v ({a * a}, C, nt) = B^T d B for the {a}x{a} input tiles d of the tiles in `runs` of x (N, C, H, W)."""
    _, c_in, h, w = x.shape
    comb = np.empty(({a}, {m} * (w // {m} + 1) + 2), x.dtype)    # combined rows; index p holds image column p - 1
    zeros = np.zeros(w, x.dtype)                         # stands in for rows above or below the image{_constants(consts, "x")}
    for c in range(c_in):                                # channel outer: v is written along k
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            top = {m} * ty - 1                              # rows top .. top + {a - 1}; top + 1 is always inside{rows}
            first, last = {m} * tx0 - 1, {m} * tx1          # the image columns the run's tiles read
            lo, hi = max(first, 0), min(last + 1, w)
            for i in range({a}):                            # padding columns: zero
                for p in range(first + 1, lo + 1):
                    comb[i, p] = 0
                for p in range(hi + 1, last + 2):
                    comb[i, p] = 0
            {_names("c{}", a)} = {_names("comb[{}]", a)}
            for col in range(lo, hi):                    # B^T d: combine the rows
                {_names("r{}", a)} = {_names("row{}[col]", a)}{combine_rows}
            k1 = k0 + tx1 - tx0
            for i in range({a}):                            # (B^T d) B: combine each tile's columns
                line = comb[i]
                {_names("v{}", a)} = {", ".join(f"v[{a} * i + {j}, c, k0:k1]" for j in range(a))}
                for k in range(tx1 - tx0):
                    p = {m} * (tx0 + k)                     # the tile's first column, padded
                    {_names("e{}", a)} = {", ".join(f"line[p + {j}]" for j in range(a))}{combine_columns}
'''


def _output_source(t: Transform, suffix: str = "", cache: bool = False) -> str:
    m, a, at = t.m, t.a, t.at
    consts = {}
    used = [j for j in range(a) if at[:, j].any()]
    combine_columns = "".join(f"\n                s{s}[k] = {_combination(at[s], [f'e{j}' for j in range(a)], consts)}"
                              for s in range(m))

    def tile(target, indent):                        # one output row r of a tile: its m columns, + bias
        return "".join(f"\n{indent}{target.format(s)} = "
                       f"{_combination(at[r], [f'a{i}_{s}[k]' for i in range(a)], consts)} + add" for s in range(m))
    combine_rows = ""
    for r in range(m):
        indent = " " * (12 if r == 0 else 16)
        if r > 0:
            combine_rows += f"\n            if {m} * ty + {r} < h:"
        combine_rows += (f"\n{indent}row = out[n, o, {m} * ty + {r}]"
                         f"\n{indent}for tx in range(tx0, inside):"
                         f"\n{indent}    k = k0 + tx - tx0"
                         + tile(f"row[{m} * tx + {{}}]", indent + "    ")
                         + f"\n{indent}if inside < tx1:                       # the last tile overhangs: its columns inside"
                         f"\n{indent}    k = k0 + inside - tx0"
                         + tile("last[{}]", indent + "    ")
                         + f"\n{indent}    row[{m} * inside:] = last[:w - {m} * inside]")
    return f'''\
@njit(cache={cache}, nogil=True)
def output_transform{suffix}(mm, runs, out, bias):
    """out[n, o, {m}ty:{m}ty+{m}, {m}tx:{m}tx+{m}] = A^T M A (+ bias[o]) for the tiles in `runs`, from mm ({a * a}, C_out, nt)."""
    _, c_out, h, w = out.shape
    nt = mm.shape[2]
    ma = np.empty(({a}, {m}, nt), mm.dtype)                # M A: (Winograd row i, output column s, tile k)
    last = np.empty({m}, out.dtype)                        # an overhanging tile's output row{_constants(consts, "out")}
    for o in range(c_out):
        add = out.dtype.type(0) if bias is None else bias[o]     # in out's dtype: float32 stays float32
        for i in range({a}):                                # M A: combine each tile's columns
            {", ".join(f"m{j}" for j in used)} = {", ".join(f"mm[{a} * i + {j}, o]" for j in used)}
            {_names("s{}", m)} = {_names("ma[i, {}]", m)}
            for k in range(nt):
                {", ".join(f"e{j}" for j in used)} = {", ".join(f"m{j}[k]" for j in used)}{combine_columns}
        {", ".join(f"a{i}_{s}" for i in range(a) for s in range(m))} = \\
            {", ".join(f"ma[{i}, {s}]" for i in range(a) for s in range(m))}
        for run in range(runs.shape[0]):                 # A^T (M A): combine the rows, tile by tile
            n, ty, tx0, tx1, k0 = runs[run]
            inside = tx1 if {m} * tx1 <= w else tx1 - 1     # the tiles whose columns are all inside{combine_rows}
'''


def _grad_source(t: Transform, suffix: str = "", cache: bool = False) -> str:
    m, a, at = t.m, t.a, t.at
    consts = {}
    rows = "".join(f"\n            row{r} = grad[n, o, {m} * ty + {r}]" + ("" if r == 0 else f" if {m} * ty + {r} < h else zeros")
                   for r in range(m))
    combine_rows = "".join(f"\n                c{i}[col] = {_combination(at[:, i], [f'r{r}' for r in range(m)], consts)}"
                           for i in range(a))
    combine_columns = "".join(f"\n                    g{i}[k] = {_combination(at[:, i], [f'e{s}' for s in range(m)], consts)}"
                              for i in range(a))
    return f'''\
@njit(cache={cache}, nogil=True)
def grad_transform{suffix}(grad, runs, gm):
    """gm ({a * a}, C_out, nt) = A dY A^T for the {m}x{m} output-gradient tiles dY of grad (N, C_out, H, W) of the
    tiles in `runs` (zeros where a tile overhangs): the adjoint of the output transform."""
    _, c_out, h, w = grad.shape
    comb = np.empty(({a}, {m} * (w // {m} + 1)), grad.dtype)     # A dY; index = image column, zero beyond w
    zeros = np.zeros(w, grad.dtype)                      # stands in for the rows below the image{_constants(consts, "grad")}
    {_names("c{}", a)} = {_names("comb[{}]", a)}
    for o in range(c_out):
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]{rows}
            for col in range({m} * tx0, min({m} * tx1, w)):   # A dY: combine the rows
                {_names("r{}", m)} = {_names("row{}[col]", m)}{combine_rows}
            for col in range(w, {m} * tx1):                 # the last tile hangs over the right edge
                for i in range({a}):
                    comb[i, col] = 0
            k1 = k0 + tx1 - tx0
            for i in range({a}):                            # (A dY) A^T: combine each tile's columns
                line = comb[i]
                {_names("g{}", a)} = {", ".join(f"gm[{a} * i + {j}, o, k0:k1]" for j in range(a))}
                for k in range(tx1 - tx0):
                    p = {m} * (tx0 + k)
                    {_names("e{}", m)} = {", ".join(f"line[p + {s}]" for s in range(m))}{combine_columns}
'''


def transform_source(t: Transform, suffix: str = "", cache: bool = False) -> str:
    """The Python source of the three block transforms of F(m x m, 3x3) generated from t's matrices
    (input_transform, output_transform, grad_transform, each name + suffix; print it to read the
    unrolled sums). See `_generated_transforms`."""
    return "\n\n".join(source(t, suffix, cache) for source in (_input_source, _output_source, _grad_source))


# The library's own transforms are generated once, into a source file Numba can cache compiled code for:
# minigen/kernels/winograd_transforms.py, rewritten by `write_generated_module()` (a test checks it
# matches this generator). Any other Transform (other points) is generated and compiled in memory.
GENERATED = {"_2x2": F2_3, "_4x4": F4_3}
GENERATED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "winograd_transforms.py")


def generated_module_source() -> str:
    """The text of winograd_transforms.py: the transforms of every Transform in GENERATED."""
    header = ('"""Winograd block transforms, generated from the matrices of F(2x2, 3x3) and F(4x4, 3x3) by\n'
              "minigen/kernels/winograd.py (`generated_module_source`). Do not edit: change the generator, then\n"
              "python -c 'from minigen.kernels import winograd; winograd.write_generated_module()'\n"
              "(tests/kernels/test_winograd.py checks that this file is what the generator writes).\n"
              '"""\n\nimport numpy as np\nfrom numba import njit\n\n\n')
    return header + "\n\n".join(transform_source(t, suffix, cache=True) for suffix, t in GENERATED.items())


# The generated transforms compiled so far, per transform's matrices (Numba then compiles each once per dtype).
_generated: dict = {}


def _generated_transforms(t: Transform):
    """(input, output, gradient) Numba transforms of t, generated from its matrices and compiled in memory.

    Why generated: written as loops over the matrices' nonzero coefficients, the transforms measured
    3.5-6x slower than straight-line code (the coefficient loads, the zero tests and the inner loops
    that are too short keep LLVM from vectorizing the long loops), and unrolling F(4x4, 3x3)'s 6x6
    algebra by hand is long and easy to get wrong. So the straight-line code is written out from the
    matrices, a sum per matrix row with the coefficients as constants, in the structure that makes the
    transforms fast: whole image rows combined first (a loop along the row, which vectorizes), then
    each tile's columns. The library's transforms (GENERATED) come from the generated file
    winograd_transforms.py, whose compiled code Numba caches on disk like any kernel's; another
    Transform's code is compiled in memory on first use (Numba cannot cache exec'd code: it has no
    source file) and kept here."""
    key = (t.m,) + tuple(matrix.tobytes() for matrix in (t.bt, t.at))
    kernels = _generated.get(key)
    for suffix, library in GENERATED.items():
        if kernels is None and key == (library.m,) + tuple(m.tobytes() for m in (library.bt, library.at)):
            from minigen.kernels import winograd_transforms as module
            kernels = _generated[key] = tuple(getattr(module, name + suffix) for name in
                                              ("input_transform", "output_transform", "grad_transform"))
    if kernels is None:
        source, filename = transform_source(t), f"<winograd F({t.m}x{t.m},3x3) transforms>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)   # tracebacks show it
        namespace = {"np": np, "njit": njit}
        exec(compile(source, filename, "exec"), namespace)
        kernels = _generated[key] = tuple(namespace[name] for name in ("input_transform", "output_transform",
                                                                        "grad_transform"))
    return kernels


# --- the fast path's other kernels ------------------------------------------------------------
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


def _block_transforms(t: Transform):
    """(input, output, gradient) transforms of F(m x m, 3x3) for one block, generated from t's matrices
    (`_generated_transforms`): taking x, runs, v / mm, runs, out, bias / grad, runs, gm."""
    return _generated_transforms(t)


def _forward(x, u, bias, out, t: Transform):
    """out (N, C_out, H, W) = Winograd conv of x (N, C_in, H, W) with u = G w G^T (a*a, C_out, C_in)."""
    c_in, c_out = x.shape[1], u.shape[1]
    plan = _plan(x.shape, c_in + c_out, t)
    input_transform, output_transform, _ = _block_transforms(t)

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
    input_transform, _, grad_transform = _block_transforms(t)

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



def write_generated_module() -> None:
    """Rewrite winograd_transforms.py from the generator (after changing it)."""
    with open(GENERATED_FILE, "w") as f:
        f.write(generated_module_source())
