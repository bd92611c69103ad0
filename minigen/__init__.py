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
# and BLAS's. OpenMP's default is to keep its threads spinning for a while after each parallel
# loop, and those spinning threads took the cores from the next op on another pool: measured on
# the 2-core machine, the conv VAE's training step took 88-152 ms with the default and 71 ms with
# sleeping threads, the other families the same within noise. Set before Numba starts OpenMP
# (at the first parallel loop); a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from minigen.errors import CheckpointError, DataError, DTypeError, MinigenError, ShapeError  # noqa: F401
from minigen.random import Generator, default_generator, manual_seed  # noqa: F401
from minigen.tensor import (OPS, Tensor, no_grad, ones, rand, randn, set_detect_anomaly, tensor,  # noqa: F401
                            zeros)
from minigen import ops, nn, optim  # noqa: F401,E402
from minigen.serialize import load, save  # noqa: F401,E402
