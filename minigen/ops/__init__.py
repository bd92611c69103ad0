"""All differentiable ops, grouped by kind. Each registers itself in `minigen.tensor.OPS`.

elementwise.py  arithmetic and activations
reduce.py       sum / mean / max / var, softmax family, matmul
shape.py        reshape, transpose, indexing, concat / stack, pad
losses.py       stable cross-entropies and log-likelihoods
"""
from minigen.ops.elementwise import *  # noqa: F401,F403
from minigen.ops.reduce import *  # noqa: F401,F403
from minigen.ops.shape import *  # noqa: F401,F403
from minigen.ops.losses import *  # noqa: F401,F403
from minigen.ops.conv import *  # noqa: F401,F403
from minigen.ops.pool import *  # noqa: F401,F403
from minigen.ops.norm import *  # noqa: F401,F403
