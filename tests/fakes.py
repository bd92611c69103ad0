"""Small synthetic inputs and helpers shared by several test files."""
import numpy as np

from minigen.random import Generator


def bar_digits(n, seed=0):
    """Blocky fake digits in [0, 1]: a bright bar at a random place on a dark background.
    Returns (images (n, 1, 28, 28) float32, labels (n,) int64 derived from the bar's row)."""
    g = Generator(seed)
    x = np.zeros((n, 1, 28, 28), np.float32)
    rows = g.integers(4, 20, (n,))
    for i, r in enumerate(rows):
        x[i, 0, r:r + 6, 8:20] = 1.0
    return x, (rows % 10).astype(np.int64)


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


def spy_conv3x3_parts(monkeypatch, module):
    """Record, in the returned list, which parts ("forward", "dx", "dw") a 3x3 kernel module
    (direct.py, planar.py: conv3x3_forward / conv3x3_backward) computed."""
    calls = []
    real_forward, real_backward = module.conv3x3_forward, module.conv3x3_backward
    monkeypatch.setattr(module, "conv3x3_forward", lambda *a, **k: calls.append("forward") or real_forward(*a, **k))

    def backward(grad_out, x, w, input_grad=True, weight_grad=True):
        calls.extend(part for part, asked in (("dx", input_grad), ("dw", weight_grad)) if asked)
        return real_backward(grad_out, x, w, input_grad, weight_grad)
    monkeypatch.setattr(module, "conv3x3_backward", backward)
    return calls


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
    np.testing.assert_allclose(module.conv3x3_forward(x, wt, b), R.conv2d(x, wt, b, one, one, one, 1),
                               rtol=1e-12, atol=1e-12)
    for got, want in zip(module.conv3x3_backward(g, x, wt), R.conv2d_backward(g, x, wt, one, one, one, 1)):
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
    y = module.conv3x3_forward(x, w)
    assert y.dtype == np.float32
    assert relative_error(y, R.conv2d(x.astype(np.float64), w.astype(np.float64), None, one, one, one, 1)) < 1e-6
    wants = R.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), one, one, one, 1)
    for got, want in zip(module.conv3x3_backward(g, x, w), wants):
        assert got.dtype == np.float32 and relative_error(got, want) < 1e-6
