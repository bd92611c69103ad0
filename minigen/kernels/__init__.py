"""Fast array kernels (Numba + BLAS) for the layers of image models: no autograd here.

Pure functions on float32 / float64 NumPy arrays, each forward beside its backward.
`minigen.ops` wraps them as differentiable ops; `reference.py` holds the slow plain
NumPy versions the tests compare them against.

conv.py  conv2d, conv_transpose2d: the table of algorithms and which runs each part
plan.py  which algorithm the table picks: the hand thresholds, or timed on this machine (wisdom file)
convbase.py  what they share: argument checks, geometry, worker pool, im2col copy loops
im2col.py  the general algorithm: im2col + BLAS, takes every conv
direct.py  small stride-1 3x3 convs as register-tiled direct loops (and the 2x2 loops stride2.py uses)
planar.py  stride-1 3x3 convs with few channels, vectorized along the flat padded image
winograd.py  larger stride-1 3x3 convs by Winograd F(2x2, 3x3)
stride2.py  k=4, s=2 convs and transposed convs as direct 2x2 convs on the space-to-depth image
masked.py  PixelCNN's masked conv over the mask's nonzero taps only
pointwise.py  1x1 convs as matrix products on the images (no im2col)
subpixel.py  transposed convs (and strided convs' input gradients) as interleaved phase convs
pool.py  max / average pooling, nearest upsampling
norm.py  batch, group and layer normalization
elementwise.py  ReLU, leaky ReLU and same-shape sums, one pass each
"""
from minigen.kernels.conv import *  # noqa: F401,F403
from minigen.kernels.masked import *  # noqa: F401,F403
from minigen.kernels.pool import *  # noqa: F401,F403
from minigen.kernels.norm import *  # noqa: F401,F403
from minigen.kernels.elementwise import *  # noqa: F401,F403
