"""Winograd block transforms, generated from the matrices of F(2x2, 3x3) and F(4x4, 3x3) by
minigen/kernels/winograd.py (`generated_module_source`). Do not edit: change the generator, then
python -c 'from minigen.kernels import winograd; winograd.write_generated_module()'
(tests/kernels/test_winograd.py checks that this file is what the generator writes).
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def input_transform_2x2(x, runs, v):
    """v (16, C, nt) = B^T d B for the 4x4 input tiles d of the tiles in `runs` of x (N, C, H, W)."""
    _, c_in, h, w = x.shape
    comb = np.empty((4, 2 * (w // 2 + 1) + 2), x.dtype)    # combined rows; index p holds image column p - 1
    zeros = np.zeros(w, x.dtype)                         # stands in for rows above or below the image
    for c in range(c_in):                                # channel outer: v is written along k
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            top = 2 * ty - 1                              # rows top .. top + 3; top + 1 is always inside
            row0 = x[n, c, top + 0] if top >= 0 else zeros
            row1 = x[n, c, top + 1]
            row2 = x[n, c, top + 2] if top + 2 < h else zeros
            row3 = x[n, c, top + 3] if top + 3 < h else zeros
            first, last = 2 * tx0 - 1, 2 * tx1          # the image columns the run's tiles read
            lo, hi = max(first, 0), min(last + 1, w)
            for i in range(4):                            # padding columns: zero
                for p in range(first + 1, lo + 1):
                    comb[i, p] = 0
                for p in range(hi + 1, last + 2):
                    comb[i, p] = 0
            c0, c1, c2, c3 = comb[0], comb[1], comb[2], comb[3]
            for col in range(lo, hi):                    # B^T d: combine the rows
                r0, r1, r2, r3 = row0[col], row1[col], row2[col], row3[col]
                c0[col + 1] = r2 - r0
                c1[col + 1] = r1 + r2
                c2[col + 1] = r2 - r1
                c3[col + 1] = r3 - r1
            k1 = k0 + tx1 - tx0
            for i in range(4):                            # (B^T d) B: combine each tile's columns
                line = comb[i]
                v0, v1, v2, v3 = v[4 * i + 0, c, k0:k1], v[4 * i + 1, c, k0:k1], v[4 * i + 2, c, k0:k1], v[4 * i + 3, c, k0:k1]
                for k in range(tx1 - tx0):
                    p = 2 * (tx0 + k)                     # the tile's first column, padded
                    e0, e1, e2, e3 = line[p + 0], line[p + 1], line[p + 2], line[p + 3]
                    v0[k] = e2 - e0
                    v1[k] = e1 + e2
                    v2[k] = e2 - e1
                    v3[k] = e3 - e1


@njit(cache=True, nogil=True)
def output_transform_2x2(mm, runs, out, bias):
    """out[n, o, 2ty:2ty+2, 2tx:2tx+2] = A^T M A (+ bias[o]) for the tiles in `runs`, from mm (16, C_out, nt)."""
    _, c_out, h, w = out.shape
    nt = mm.shape[2]
    ma = np.empty((4, 2, nt), mm.dtype)                # M A: (Winograd row i, output column s, tile k)
    last = np.empty(2, out.dtype)                        # an overhanging tile's output row
    for o in range(c_out):
        add = out.dtype.type(0) if bias is None else bias[o]     # in out's dtype: float32 stays float32
        for i in range(4):                                # M A: combine each tile's columns
            m0, m1, m2, m3 = mm[4 * i + 0, o], mm[4 * i + 1, o], mm[4 * i + 2, o], mm[4 * i + 3, o]
            s0, s1 = ma[i, 0], ma[i, 1]
            for k in range(nt):
                e0, e1, e2, e3 = m0[k], m1[k], m2[k], m3[k]
                s0[k] = e0 + e1 + e2
                s1[k] = e1 + e3 - e2
        a0_0, a0_1, a1_0, a1_1, a2_0, a2_1, a3_0, a3_1 = \
            ma[0, 0], ma[0, 1], ma[1, 0], ma[1, 1], ma[2, 0], ma[2, 1], ma[3, 0], ma[3, 1]
        for run in range(runs.shape[0]):                 # A^T (M A): combine the rows, tile by tile
            n, ty, tx0, tx1, k0 = runs[run]
            inside = tx1 if 2 * tx1 <= w else tx1 - 1     # the tiles whose columns are all inside
            row = out[n, o, 2 * ty + 0]
            for tx in range(tx0, inside):
                k = k0 + tx - tx0
                row[2 * tx + 0] = a0_0[k] + a1_0[k] + a2_0[k] + add
                row[2 * tx + 1] = a0_1[k] + a1_1[k] + a2_1[k] + add
            if inside < tx1:                       # the last tile overhangs: its columns inside
                k = k0 + inside - tx0
                last[0] = a0_0[k] + a1_0[k] + a2_0[k] + add
                last[1] = a0_1[k] + a1_1[k] + a2_1[k] + add
                row[2 * inside:] = last[:w - 2 * inside]
            if 2 * ty + 1 < h:
                row = out[n, o, 2 * ty + 1]
                for tx in range(tx0, inside):
                    k = k0 + tx - tx0
                    row[2 * tx + 0] = a1_0[k] + a3_0[k] - a2_0[k] + add
                    row[2 * tx + 1] = a1_1[k] + a3_1[k] - a2_1[k] + add
                if inside < tx1:                       # the last tile overhangs: its columns inside
                    k = k0 + inside - tx0
                    last[0] = a1_0[k] + a3_0[k] - a2_0[k] + add
                    last[1] = a1_1[k] + a3_1[k] - a2_1[k] + add
                    row[2 * inside:] = last[:w - 2 * inside]


@njit(cache=True, nogil=True)
def grad_transform_2x2(grad, runs, gm):
    """gm (16, C_out, nt) = A dY A^T for the 2x2 output-gradient tiles dY of grad (N, C_out, H, W) of the
    tiles in `runs` (zeros where a tile overhangs): the adjoint of the output transform."""
    _, c_out, h, w = grad.shape
    comb = np.empty((4, 2 * (w // 2 + 1)), grad.dtype)     # A dY; index = image column, zero beyond w
    zeros = np.zeros(w, grad.dtype)                      # stands in for the rows below the image
    c0, c1, c2, c3 = comb[0], comb[1], comb[2], comb[3]
    for o in range(c_out):
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            row0 = grad[n, o, 2 * ty + 0]
            row1 = grad[n, o, 2 * ty + 1] if 2 * ty + 1 < h else zeros
            for col in range(2 * tx0, min(2 * tx1, w)):   # A dY: combine the rows
                r0, r1 = row0[col], row1[col]
                c0[col] = r0
                c1[col] = r0 + r1
                c2[col] = r0 - r1
                c3[col] = r1
            for col in range(w, 2 * tx1):                 # the last tile hangs over the right edge
                for i in range(4):
                    comb[i, col] = 0
            k1 = k0 + tx1 - tx0
            for i in range(4):                            # (A dY) A^T: combine each tile's columns
                line = comb[i]
                g0, g1, g2, g3 = gm[4 * i + 0, o, k0:k1], gm[4 * i + 1, o, k0:k1], gm[4 * i + 2, o, k0:k1], gm[4 * i + 3, o, k0:k1]
                for k in range(tx1 - tx0):
                    p = 2 * (tx0 + k)
                    e0, e1 = line[p + 0], line[p + 1]
                    g0[k] = e0
                    g1[k] = e0 + e1
                    g2[k] = e0 - e1
                    g3[k] = e1


@njit(cache=True, nogil=True)
def input_transform_4x4(x, runs, v):
    """v (36, C, nt) = B^T d B for the 6x6 input tiles d of the tiles in `runs` of x (N, C, H, W)."""
    _, c_in, h, w = x.shape
    comb = np.empty((6, 4 * (w // 4 + 1) + 2), x.dtype)    # combined rows; index p holds image column p - 1
    zeros = np.zeros(w, x.dtype)                         # stands in for rows above or below the image
    q0 = x.dtype.type(2.6944444444444446)
    q1 = x.dtype.type(0.6666666666666666)
    q2 = x.dtype.type(1.5)
    q3 = x.dtype.type(2.25)
    q4 = x.dtype.type(0.4444444444444444)
    for c in range(c_in):                                # channel outer: v is written along k
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            top = 4 * ty - 1                              # rows top .. top + 5; top + 1 is always inside
            row0 = x[n, c, top + 0] if top >= 0 else zeros
            row1 = x[n, c, top + 1]
            row2 = x[n, c, top + 2] if top + 2 < h else zeros
            row3 = x[n, c, top + 3] if top + 3 < h else zeros
            row4 = x[n, c, top + 4] if top + 4 < h else zeros
            row5 = x[n, c, top + 5] if top + 5 < h else zeros
            first, last = 4 * tx0 - 1, 4 * tx1          # the image columns the run's tiles read
            lo, hi = max(first, 0), min(last + 1, w)
            for i in range(6):                            # padding columns: zero
                for p in range(first + 1, lo + 1):
                    comb[i, p] = 0
                for p in range(hi + 1, last + 2):
                    comb[i, p] = 0
            c0, c1, c2, c3, c4, c5 = comb[0], comb[1], comb[2], comb[3], comb[4], comb[5]
            for col in range(lo, hi):                    # B^T d: combine the rows
                r0, r1, r2, r3, r4, r5 = row0[col], row1[col], row2[col], row3[col], row4[col], row5[col]
                c0[col + 1] = r0 + r4 - q0 * r2
                c1[col + 1] = q1 * r3 + r4 - q2 * r1 - q3 * r2
                c2[col + 1] = q2 * r1 + r4 - q3 * r2 - q1 * r3
                c3[col + 1] = q2 * r3 + r4 - q1 * r1 - q4 * r2
                c4[col + 1] = q1 * r1 + r4 - q4 * r2 - q2 * r3
                c5[col + 1] = r1 + r5 - q0 * r3
            k1 = k0 + tx1 - tx0
            for i in range(6):                            # (B^T d) B: combine each tile's columns
                line = comb[i]
                v0, v1, v2, v3, v4, v5 = v[6 * i + 0, c, k0:k1], v[6 * i + 1, c, k0:k1], v[6 * i + 2, c, k0:k1], v[6 * i + 3, c, k0:k1], v[6 * i + 4, c, k0:k1], v[6 * i + 5, c, k0:k1]
                for k in range(tx1 - tx0):
                    p = 4 * (tx0 + k)                     # the tile's first column, padded
                    e0, e1, e2, e3, e4, e5 = line[p + 0], line[p + 1], line[p + 2], line[p + 3], line[p + 4], line[p + 5]
                    v0[k] = e0 + e4 - q0 * e2
                    v1[k] = q1 * e3 + e4 - q2 * e1 - q3 * e2
                    v2[k] = q2 * e1 + e4 - q3 * e2 - q1 * e3
                    v3[k] = q2 * e3 + e4 - q1 * e1 - q4 * e2
                    v4[k] = q1 * e1 + e4 - q4 * e2 - q2 * e3
                    v5[k] = e1 + e5 - q0 * e3


@njit(cache=True, nogil=True)
def output_transform_4x4(mm, runs, out, bias):
    """out[n, o, 4ty:4ty+4, 4tx:4tx+4] = A^T M A (+ bias[o]) for the tiles in `runs`, from mm (36, C_out, nt)."""
    _, c_out, h, w = out.shape
    nt = mm.shape[2]
    ma = np.empty((6, 4, nt), mm.dtype)                # M A: (Winograd row i, output column s, tile k)
    last = np.empty(4, out.dtype)                        # an overhanging tile's output row
    q0 = out.dtype.type(0.6666666666666666)
    q1 = out.dtype.type(1.5)
    q2 = out.dtype.type(0.4444444444444444)
    q3 = out.dtype.type(2.25)
    q4 = out.dtype.type(0.2962962962962963)
    q5 = out.dtype.type(3.375)
    for o in range(c_out):
        add = out.dtype.type(0) if bias is None else bias[o]     # in out's dtype: float32 stays float32
        for i in range(6):                                # M A: combine each tile's columns
            m0, m1, m2, m3, m4, m5 = mm[6 * i + 0, o], mm[6 * i + 1, o], mm[6 * i + 2, o], mm[6 * i + 3, o], mm[6 * i + 4, o], mm[6 * i + 5, o]
            s0, s1, s2, s3 = ma[i, 0], ma[i, 1], ma[i, 2], ma[i, 3]
            for k in range(nt):
                e0, e1, e2, e3, e4, e5 = m0[k], m1[k], m2[k], m3[k], m4[k], m5[k]
                s0[k] = e0 + e1 + e2 + e3 + e4
                s1[k] = q0 * e1 + q1 * e3 - q0 * e2 - q1 * e4
                s2[k] = q2 * e1 + q2 * e2 + q3 * e3 + q3 * e4
                s3[k] = q4 * e1 + q5 * e3 + e5 - q4 * e2 - q5 * e4
        a0_0, a0_1, a0_2, a0_3, a1_0, a1_1, a1_2, a1_3, a2_0, a2_1, a2_2, a2_3, a3_0, a3_1, a3_2, a3_3, a4_0, a4_1, a4_2, a4_3, a5_0, a5_1, a5_2, a5_3 = \
            ma[0, 0], ma[0, 1], ma[0, 2], ma[0, 3], ma[1, 0], ma[1, 1], ma[1, 2], ma[1, 3], ma[2, 0], ma[2, 1], ma[2, 2], ma[2, 3], ma[3, 0], ma[3, 1], ma[3, 2], ma[3, 3], ma[4, 0], ma[4, 1], ma[4, 2], ma[4, 3], ma[5, 0], ma[5, 1], ma[5, 2], ma[5, 3]
        for run in range(runs.shape[0]):                 # A^T (M A): combine the rows, tile by tile
            n, ty, tx0, tx1, k0 = runs[run]
            inside = tx1 if 4 * tx1 <= w else tx1 - 1     # the tiles whose columns are all inside
            row = out[n, o, 4 * ty + 0]
            for tx in range(tx0, inside):
                k = k0 + tx - tx0
                row[4 * tx + 0] = a0_0[k] + a1_0[k] + a2_0[k] + a3_0[k] + a4_0[k] + add
                row[4 * tx + 1] = a0_1[k] + a1_1[k] + a2_1[k] + a3_1[k] + a4_1[k] + add
                row[4 * tx + 2] = a0_2[k] + a1_2[k] + a2_2[k] + a3_2[k] + a4_2[k] + add
                row[4 * tx + 3] = a0_3[k] + a1_3[k] + a2_3[k] + a3_3[k] + a4_3[k] + add
            if inside < tx1:                       # the last tile overhangs: its columns inside
                k = k0 + inside - tx0
                last[0] = a0_0[k] + a1_0[k] + a2_0[k] + a3_0[k] + a4_0[k] + add
                last[1] = a0_1[k] + a1_1[k] + a2_1[k] + a3_1[k] + a4_1[k] + add
                last[2] = a0_2[k] + a1_2[k] + a2_2[k] + a3_2[k] + a4_2[k] + add
                last[3] = a0_3[k] + a1_3[k] + a2_3[k] + a3_3[k] + a4_3[k] + add
                row[4 * inside:] = last[:w - 4 * inside]
            if 4 * ty + 1 < h:
                row = out[n, o, 4 * ty + 1]
                for tx in range(tx0, inside):
                    k = k0 + tx - tx0
                    row[4 * tx + 0] = q0 * a1_0[k] + q1 * a3_0[k] - q0 * a2_0[k] - q1 * a4_0[k] + add
                    row[4 * tx + 1] = q0 * a1_1[k] + q1 * a3_1[k] - q0 * a2_1[k] - q1 * a4_1[k] + add
                    row[4 * tx + 2] = q0 * a1_2[k] + q1 * a3_2[k] - q0 * a2_2[k] - q1 * a4_2[k] + add
                    row[4 * tx + 3] = q0 * a1_3[k] + q1 * a3_3[k] - q0 * a2_3[k] - q1 * a4_3[k] + add
                if inside < tx1:                       # the last tile overhangs: its columns inside
                    k = k0 + inside - tx0
                    last[0] = q0 * a1_0[k] + q1 * a3_0[k] - q0 * a2_0[k] - q1 * a4_0[k] + add
                    last[1] = q0 * a1_1[k] + q1 * a3_1[k] - q0 * a2_1[k] - q1 * a4_1[k] + add
                    last[2] = q0 * a1_2[k] + q1 * a3_2[k] - q0 * a2_2[k] - q1 * a4_2[k] + add
                    last[3] = q0 * a1_3[k] + q1 * a3_3[k] - q0 * a2_3[k] - q1 * a4_3[k] + add
                    row[4 * inside:] = last[:w - 4 * inside]
            if 4 * ty + 2 < h:
                row = out[n, o, 4 * ty + 2]
                for tx in range(tx0, inside):
                    k = k0 + tx - tx0
                    row[4 * tx + 0] = q2 * a1_0[k] + q2 * a2_0[k] + q3 * a3_0[k] + q3 * a4_0[k] + add
                    row[4 * tx + 1] = q2 * a1_1[k] + q2 * a2_1[k] + q3 * a3_1[k] + q3 * a4_1[k] + add
                    row[4 * tx + 2] = q2 * a1_2[k] + q2 * a2_2[k] + q3 * a3_2[k] + q3 * a4_2[k] + add
                    row[4 * tx + 3] = q2 * a1_3[k] + q2 * a2_3[k] + q3 * a3_3[k] + q3 * a4_3[k] + add
                if inside < tx1:                       # the last tile overhangs: its columns inside
                    k = k0 + inside - tx0
                    last[0] = q2 * a1_0[k] + q2 * a2_0[k] + q3 * a3_0[k] + q3 * a4_0[k] + add
                    last[1] = q2 * a1_1[k] + q2 * a2_1[k] + q3 * a3_1[k] + q3 * a4_1[k] + add
                    last[2] = q2 * a1_2[k] + q2 * a2_2[k] + q3 * a3_2[k] + q3 * a4_2[k] + add
                    last[3] = q2 * a1_3[k] + q2 * a2_3[k] + q3 * a3_3[k] + q3 * a4_3[k] + add
                    row[4 * inside:] = last[:w - 4 * inside]
            if 4 * ty + 3 < h:
                row = out[n, o, 4 * ty + 3]
                for tx in range(tx0, inside):
                    k = k0 + tx - tx0
                    row[4 * tx + 0] = q4 * a1_0[k] + q5 * a3_0[k] + a5_0[k] - q4 * a2_0[k] - q5 * a4_0[k] + add
                    row[4 * tx + 1] = q4 * a1_1[k] + q5 * a3_1[k] + a5_1[k] - q4 * a2_1[k] - q5 * a4_1[k] + add
                    row[4 * tx + 2] = q4 * a1_2[k] + q5 * a3_2[k] + a5_2[k] - q4 * a2_2[k] - q5 * a4_2[k] + add
                    row[4 * tx + 3] = q4 * a1_3[k] + q5 * a3_3[k] + a5_3[k] - q4 * a2_3[k] - q5 * a4_3[k] + add
                if inside < tx1:                       # the last tile overhangs: its columns inside
                    k = k0 + inside - tx0
                    last[0] = q4 * a1_0[k] + q5 * a3_0[k] + a5_0[k] - q4 * a2_0[k] - q5 * a4_0[k] + add
                    last[1] = q4 * a1_1[k] + q5 * a3_1[k] + a5_1[k] - q4 * a2_1[k] - q5 * a4_1[k] + add
                    last[2] = q4 * a1_2[k] + q5 * a3_2[k] + a5_2[k] - q4 * a2_2[k] - q5 * a4_2[k] + add
                    last[3] = q4 * a1_3[k] + q5 * a3_3[k] + a5_3[k] - q4 * a2_3[k] - q5 * a4_3[k] + add
                    row[4 * inside:] = last[:w - 4 * inside]


@njit(cache=True, nogil=True)
def grad_transform_4x4(grad, runs, gm):
    """gm (36, C_out, nt) = A dY A^T for the 4x4 output-gradient tiles dY of grad (N, C_out, H, W) of the
    tiles in `runs` (zeros where a tile overhangs): the adjoint of the output transform."""
    _, c_out, h, w = grad.shape
    comb = np.empty((6, 4 * (w // 4 + 1)), grad.dtype)     # A dY; index = image column, zero beyond w
    zeros = np.zeros(w, grad.dtype)                      # stands in for the rows below the image
    q0 = grad.dtype.type(0.6666666666666666)
    q1 = grad.dtype.type(0.4444444444444444)
    q2 = grad.dtype.type(0.2962962962962963)
    q3 = grad.dtype.type(1.5)
    q4 = grad.dtype.type(2.25)
    q5 = grad.dtype.type(3.375)
    c0, c1, c2, c3, c4, c5 = comb[0], comb[1], comb[2], comb[3], comb[4], comb[5]
    for o in range(c_out):
        for run in range(runs.shape[0]):
            n, ty, tx0, tx1, k0 = runs[run]
            row0 = grad[n, o, 4 * ty + 0]
            row1 = grad[n, o, 4 * ty + 1] if 4 * ty + 1 < h else zeros
            row2 = grad[n, o, 4 * ty + 2] if 4 * ty + 2 < h else zeros
            row3 = grad[n, o, 4 * ty + 3] if 4 * ty + 3 < h else zeros
            for col in range(4 * tx0, min(4 * tx1, w)):   # A dY: combine the rows
                r0, r1, r2, r3 = row0[col], row1[col], row2[col], row3[col]
                c0[col] = r0
                c1[col] = r0 + q0 * r1 + q1 * r2 + q2 * r3
                c2[col] = r0 + q1 * r2 - q0 * r1 - q2 * r3
                c3[col] = r0 + q3 * r1 + q4 * r2 + q5 * r3
                c4[col] = r0 + q4 * r2 - q3 * r1 - q5 * r3
                c5[col] = r3
            for col in range(w, 4 * tx1):                 # the last tile hangs over the right edge
                for i in range(6):
                    comb[i, col] = 0
            k1 = k0 + tx1 - tx0
            for i in range(6):                            # (A dY) A^T: combine each tile's columns
                line = comb[i]
                g0, g1, g2, g3, g4, g5 = gm[6 * i + 0, o, k0:k1], gm[6 * i + 1, o, k0:k1], gm[6 * i + 2, o, k0:k1], gm[6 * i + 3, o, k0:k1], gm[6 * i + 4, o, k0:k1], gm[6 * i + 5, o, k0:k1]
                for k in range(tx1 - tx0):
                    p = 4 * (tx0 + k)
                    e0, e1, e2, e3 = line[p + 0], line[p + 1], line[p + 2], line[p + 3]
                    g0[k] = e0
                    g1[k] = e0 + q0 * e1 + q1 * e2 + q2 * e3
                    g2[k] = e0 + q1 * e2 - q0 * e1 - q2 * e3
                    g3[k] = e0 + q3 * e1 + q4 * e2 + q5 * e3
                    g4[k] = e0 + q4 * e2 - q3 * e1 - q5 * e3
                    g5[k] = e3
