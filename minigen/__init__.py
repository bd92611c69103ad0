"""minigen: a from-scratch NumPy + Numba deep-learning engine and five families of image generators.

Where things live (the engine first; tools/ imports it and is never imported by it):
    tensor.py      the autograd core (Tensor, backward, no_grad, the op registry)
    ops/           differentiable ops, each forward beside its backward
    kernels/       Numba kernels (conv, pool, norm) and their NumPy references
    nn/            Module, Parameter, layers, initialisers
    optim.py       SGD / Adam / AdamW, gradient clipping, EMA
    config.py      typed hyper-parameter declarations (knob)
    random.py      the one seeded random generator
    allocator.py   large arrays reuse freed memory (glibc malloc settings, set on import)
    serialize.py   atomic save / load of checkpoints
    data/          IDX reader, datasets, loader and transforms (and the shipped mnist-5k digits)
    models/        the generative model families (one module each) and their registry
    metrics.py     FID-MNIST and label accuracy
    plots.py       sample grids and curves; animate.py: generation as GIFs; viz.py: the autograd graph
    train.py       the one training loop: run directories, checkpoints, resume
    tools/         tour, HTML reports, sweeps, assignments and grading, lecture demos
    cli.py         the `minigen` command
"""
__version__ = "0.1.0"

import os

# minigen's work runs on three thread pools in turn (Numba's OpenMP loops, the conv workers, BLAS); threads that
# keep spinning after their work take the cores from the next op on another pool, so both libraries' threads
# sleep soon. Read once (OpenBLAS's when NumPy is first imported): import minigen before NumPy; a value the
# user set wins. Measurements: docs/measurements.md#thread-pools.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")

from minigen.errors import CheckpointError, DataError, DTypeError, MinigenError, ShapeError  # noqa: F401
from minigen.allocator import keep_freed_memory

# large arrays reuse the memory the process freed, instead of fresh (page-faulting) pages: allocator.py
keep_freed_memory()
from minigen.random import Generator, default_generator, manual_seed  # noqa: F401
from minigen.tensor import (OPS, Tensor, no_grad, ones, rand, randn, set_detect_anomaly, tensor,  # noqa: F401
                            zeros)
from minigen import ops, nn, optim  # noqa: F401,E402
from minigen.serialize import load, save  # noqa: F401,E402
