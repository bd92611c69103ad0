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

# minigen's work runs on three thread pools in turn (Numba's OpenMP loops, the conv workers, BLAS); threads that
# keep spinning after their work take the cores from the next op on another pool, so both libraries' threads
# sleep soon. Read once (OpenBLAS's when NumPy is first imported): import minigen before NumPy; a value the
# user set wins. Measurements: docs/measurements.md#thread-pools.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")

from minigen.errors import CheckpointError, DataError, DTypeError, MinigenError, ShapeError  # noqa: F401
from minigen.random import Generator, default_generator, manual_seed  # noqa: F401
from minigen.tensor import (OPS, Tensor, no_grad, ones, rand, randn, set_detect_anomaly, tensor,  # noqa: F401
                            zeros)
from minigen import ops, nn, optim  # noqa: F401,E402
from minigen.serialize import load, save  # noqa: F401,E402
