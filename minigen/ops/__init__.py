"""All differentiable ops, grouped by kind. Each registers itself in `minigen.tensor.OPS`.

elementwise.py  arithmetic and activations
reduce.py       sum / mean / max / var, softmax family, matmul, linear
shape.py        reshape, transpose, indexing, concat / stack, pad
losses.py       stable cross-entropies and log-likelihoods
conv.py         conv2d (optionally with a fused ReLU), conv_transpose2d, PixelCNN's masked conv2d
pool.py         max / average pooling, nearest upsampling
norm.py         batch, group (optionally fused with SiLU) and layer normalization
"""
from minigen.ops.elementwise import *  # noqa: F401,F403
from minigen.ops.reduce import *  # noqa: F401,F403
from minigen.ops.shape import *  # noqa: F401,F403
from minigen.ops.losses import *  # noqa: F401,F403
from minigen.ops.conv import *  # noqa: F401,F403
from minigen.ops.pool import *  # noqa: F401,F403
from minigen.ops.norm import *  # noqa: F401,F403
