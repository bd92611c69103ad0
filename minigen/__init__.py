"""minigen: a from-scratch NumPy + Numba deep-learning engine and five families of image generators.

Where things live:
    tensor.py      the autograd core (Tensor, backward, no_grad)
    ops/           differentiable ops, each forward beside its backward
    kernels/       Numba kernels (conv, pool, norm) and their NumPy references
    nn/            Module, Parameter, layers, initialisers
    optim.py       SGD / Adam / AdamW, gradient clipping, EMA
    random.py      the one seeded random generator
    serialize.py   atomic save / load of checkpoints
    data/          IDX reader, datasets, loader and transforms
    models/        the generative model families (one module each)
    viz.py         the autograd graph drawn (Graphviz DOT / SVG)
    animate.py     generation as animated GIFs (each family's generation_frames)
    report.py      HTML reports of runs, the tour, and runs side by side
    cli.py         the `minigen` command
"""
__version__ = "0.1.0"

import os

# minigen's parallel work runs on three thread pools in turn: Numba's (OpenMP), the conv workers
# and BLAS's. By default OpenMP's and OpenBLAS's threads keep spinning for a while after each
# parallel loop or matrix product (OpenBLAS's for 2^28 clock cycles, about 0.1 s), and those
# spinning threads took the cores from the next op on another pool. Measured on the 2-core
# machine (training steps, medians): with sleeping OpenMP threads the conv VAE's step went from
# 88-152 to 71 ms; OpenBLAS threads that spin 2^12 cycles then sleep took it from 89-93 to 55-57
# ms and the GAN's from 234 to 183-202 ms, the other families the same within noise (the 12
# measured like 4 and 18). Both are read once: OpenMP's when Numba starts its threads, OpenBLAS's
# when NumPy is first imported, so they count only if minigen is imported before NumPy (the
# `minigen` command is); a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")

from minigen.errors import CheckpointError, DataError, DTypeError, MinigenError, ShapeError  # noqa: F401
from minigen.random import Generator, default_generator, manual_seed  # noqa: F401
from minigen.tensor import (OPS, Tensor, no_grad, ones, rand, randn, set_detect_anomaly, tensor,  # noqa: F401
                            zeros)
from minigen import ops, nn, optim  # noqa: F401,E402
from minigen.serialize import load, save  # noqa: F401,E402
