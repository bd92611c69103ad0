"""The conv kernels' shared checks: reference match, float32 bound, dispatch spy, thread-count independence."""
import numpy as np

from minigen.random import Generator


def assert_same_bits_on_one_and_all_threads(fn):
    """fn() run with one Numba thread, then with all of them (the count restored afterwards), must
    return the same arrays, bit for bit: results do not depend on the thread count."""
    import numba
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fn()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = fn()
    finally:
        numba.set_num_threads(before)
    for a, b in zip(one, many):
        np.testing.assert_array_equal(a, b)


def geometry(x, w):
    """The conv of x (N, C_in, H, W) with w (C_out, C_in, k, k): stride 2 for a 4x4 kernel (stride2.py's),
    else 1, padding 1, as the conv kernels' part functions take it."""
    from minigen.kernels import convbase
    stride = 2 if w.shape[2:] == (4, 4) else 1
    return convbase.conv2d_geometry("test", x, w, None, stride, 1, 1, 1)


def forward(module, x, w, b=None):
    """A conv algorithm module's forward of x with w (+ b)."""
    return module.forward(x, w, b, geometry(x, w))


def backward(module, g, x, w, input_grad=True, weight_grad=True):
    """(dx, dw, db) from a conv algorithm module's part functions (dx / dw None when not asked)."""
    from minigen.kernels import convbase
    geo = geometry(x, w)
    return (module.input_grad(g, w, None, geo) if input_grad else None,
            module.weight_grad(g, x, geo) if weight_grad else None, convbase.bias_grad(g))


def parts_run_on(name, c_in, c_out, size, kwargs):
    """Which parts ("forward", "dx", "dw") of a conv of 2 size x size images from c_in to c_out
    channels (kwargs: stride, padding, dilation, groups; padding 1 unless given) the plan runs on
    algorithm `name`."""
    from minigen.kernels import conv, convbase
    groups = kwargs.get("groups", 1)
    x, w = np.empty((2, c_in, size, size)), np.ones((c_out, c_in // groups, 3, 3))
    geo = convbase.conv2d_geometry("test", x, w, None, kwargs.get("stride", 1), kwargs.get("padding", 1),
                                   kwargs.get("dilation", 1), groups)
    return [short for part, short in zip(conv.PARTS, ("forward", "dx", "dw")) if conv.algorithm_for(geo, part) == name]


def assert_conv2d_matches_the_reference(c_in, c_out, size, kwargs, seed=4):
    """conv2d_forward and conv2d_backward through the dispatch in kernels/conv.py, float32, equal
    the float64 reference for a batch of 2 size x size images; kwargs: stride, padding, dilation,
    groups (padding 1 unless given)."""
    from minigen import kernels as K
    from minigen.kernels import reference as R
    rng = np.random.default_rng(seed)
    groups = kwargs.get("groups", 1)
    x = rng.standard_normal((2, c_in, size, size)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // groups, 3, 3)).astype(np.float32)
    geo = (kwargs.get("stride", 1), kwargs.get("padding", 1), kwargs.get("dilation", 1), groups)
    ref_geo = tuple((v, v) for v in geo[:3]) + (groups,)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    y = K.conv2d_forward(x, w, None, *geo)
    np.testing.assert_allclose(y, R.conv2d(x64, w64, None, *ref_geo), rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    for got, want in zip(K.conv2d_backward(g, x, w, *geo), R.conv2d_backward(g.astype(np.float64), x64, w64, *ref_geo)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def relative_error(actual, expected):
    return np.linalg.norm(actual - expected) / np.linalg.norm(expected)


def assert_conv3x3_module_matches_the_reference(module, n, c_in, c_out, h, w, bias, seed):
    """A 3x3 kernel module's forward (+ bias), input gradient and weight gradient equal the plain
    float64 NumPy conv (stride 1, padding 1) on random data of these sizes."""
    from minigen.kernels import reference as R
    one = (1, 1)
    rng = np.random.default_rng(seed)
    x, wt = rng.standard_normal((n, c_in, h, w)), rng.standard_normal((c_out, c_in, 3, 3))
    b = rng.standard_normal(c_out) if bias else None
    g = rng.standard_normal((n, c_out, h, w))
    np.testing.assert_allclose(forward(module, x, wt, b), R.conv2d(x, wt, b, one, one, one, 1),
                               rtol=1e-12, atol=1e-12)
    for got, want in zip(backward(module, g, x, wt), R.conv2d_backward(g, x, wt, one, one, one, 1)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-11)


def assert_conv3x3_module_float32_bound(module, c_in, c_out, size):
    """In float32, a 3x3 kernel module's three outputs differ from the float64 reference by rounding
    only: relative error below 1e-6 (4 images, unit-variance outputs)."""
    from minigen.kernels import reference as R
    one = (1, 1)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, c_in, size, size)).astype(np.float32)
    w = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * c_in)).astype(np.float32)
    g = rng.standard_normal((4, c_out, size, size)).astype(np.float32)
    y = forward(module, x, w)
    assert y.dtype == np.float32
    assert relative_error(y, R.conv2d(x.astype(np.float64), w.astype(np.float64), None, one, one, one, 1)) < 1e-6
    wants = R.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), one, one, one, 1)
    for got, want in zip(backward(module, g, x, w), wants):
        assert got.dtype == np.float32 and relative_error(got, want) < 1e-6
