"""The conv dispatch table (kernels/conv.py): every algorithm, forced, on every shape class it claims to
take, equals the float64 reference in every part, so a wrong plan can cost speed only; the forcing
switches (MINIGEN_CONV, `conv.forced`) and their errors; the estimate plan's picks."""
import numpy as np
import pytest

from minigen import kernels as K, ops
from minigen.errors import ConfigError
from minigen.kernels import conv, convbase, reference as R

# (name, x shape, weight shape, stride, padding, dilation, groups, mask type or None): one of each shape
# class some algorithm claims, and the odd ones only im2col takes
SHAPES = [
    ("3x3 few channels", (2, 3, 7, 9), (4, 3, 3, 3), 1, 1, 1, 1, None),
    ("3x3 32 channels", (2, 32, 7, 7), (32, 32, 3, 3), 1, 1, 1, 1, None),
    ("3x3 width not a multiple of 7", (2, 16, 5, 6), (8, 16, 3, 3), 1, 1, 1, 1, None),
    ("k4 s2 p1, 14x14", (2, 8, 14, 14), (16, 8, 4, 4), 2, 1, 1, 1, None),
    ("k4 s2 p1, odd output width", (2, 4, 10, 10), (6, 4, 4, 4), 2, 1, 1, 1, None),
    ("1x1", (2, 6, 5, 4), (3, 6, 1, 1), 1, 0, 1, 1, None),
    ("k3 s2 channels growing", (2, 8, 9, 8), (4, 8, 3, 3), 2, 1, 1, 1, None),
    ("grouped dilated", (2, 4, 9, 9), (6, 2, 3, 3), 1, 2, 2, 2, None),
    ("mask B 3x3", (2, 5, 7, 8), (6, 5, 3, 3), 1, 1, 1, 1, "B"),
    ("mask A 5x5", (2, 3, 8, 8), (4, 3, 5, 5), 1, 2, 1, 1, "A"),
]


def _geometry(x_shape, w_shape, stride, padding, dilation, groups, mask_type):
    x, w = np.empty(x_shape), np.ones(w_shape)
    geo = convbase.conv2d_geometry("test", x, w, None, stride, padding, dilation, groups)
    if mask_type:
        mask = ops.causal_mask(w_shape[2], w_shape[3], mask_type, np.float64)
        geo = geo._replace(taps=tuple(map(tuple, np.argwhere(mask != 0).tolist())))
    return geo


def _cases():
    for shape in SHAPES:
        geo = _geometry(*shape[1:])
        for row in conv.ALGORITHMS:
            if any(row.takes(geo, part) for part in conv.PARTS):
                yield pytest.param(row.name, shape, id=f"{row.name}-{shape[0]}")


def test_every_algorithm_takes_some_shape_class_and_im2col_takes_all():
    taken = {name for name, _ in (case.values for case in _cases())}
    assert taken == set(conv.BY_NAME)
    assert all(conv.candidates(_geometry(*s[1:]), part)[-1] == "im2col" for s in SHAPES for part in conv.PARTS)


@pytest.mark.parametrize("name, shape", list(_cases()))
def test_forced_algorithm_equals_the_reference_in_every_part_it_takes(name, shape):
    """conv2d (or masked_conv2d) forward and backward, and the transposed conv of the same geometry
    forward and backward, with `name` forced: the parts it takes run on it, and all equal float64 NumPy."""
    _, x_shape, w_shape, stride, padding, dilation, groups, mask_type = shape
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    mask = np.ones(w_shape[2:]) if mask_type is None else ops.causal_mask(*w_shape[2:], mask_type, np.float64)
    args = (stride, padding, dilation)
    ref_args = tuple((v, v) for v in args) + (groups,)
    with conv.forced(name):
        if mask_type is None:
            y = K.conv2d_forward(x, w, b, *args, groups)
            g = rng.standard_normal(y.shape)
            grads = K.conv2d_backward(g, x, w, *args, groups)
        else:
            y = K.masked_conv2d_forward(x, w, mask, b, *args)
            g = rng.standard_normal(y.shape)
            grads = K.masked_conv2d_backward(g, x, w, mask, *args)
    np.testing.assert_allclose(y, R.conv2d(x, w * mask, b, *ref_args), rtol=1e-9, atol=1e-9)
    for got, want in zip(grads, R.conv2d_backward(g, x, w * mask, *ref_args)):
        np.testing.assert_allclose(got, want * (mask if got.shape == w.shape else 1), rtol=1e-9, atol=1e-9)
    if mask_type is None:       # the transposed conv of this conv: its parts are the conv's, swapped
        output_padding = tuple(s - (o - 1) * stride - 1 + 2 * padding - dilation * (k - 1)
                               for s, o, k in zip(x_shape[2:], y.shape[2:], w_shape[2:]))
        t_args = (stride, padding, output_padding, dilation, groups)
        bt = rng.standard_normal(x_shape[1])
        with conv.forced(name):
            xt = K.conv_transpose2d_forward(g, w, bt, *t_args)
            gt = rng.standard_normal(xt.shape)
            t_grads = K.conv_transpose2d_backward(gt, g, w, *t_args)
        ref_t = ((stride,) * 2, (padding,) * 2, output_padding, (dilation,) * 2, groups)
        np.testing.assert_allclose(xt, R.conv_transpose2d(g, w, bt, *ref_t), rtol=1e-9, atol=1e-9)
        for got, want in zip(t_grads, R.conv_transpose2d_backward(gt, g, w, *ref_t)):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_forcing_runs_the_forced_algorithm_where_it_takes_the_part(monkeypatch):
    geo = _geometry((2, 64, 7, 7), (64, 64, 3, 3), 1, 1, 1, 1, None)
    assert conv.algorithm_for(geo, "forward") == "direct"
    with conv.forced("winograd"):
        assert conv.algorithm_for(geo, "forward") == "winograd"
        with conv.forced("stride2"):                 # takes no 3x3 conv: the plan chooses
            assert conv.algorithm_for(geo, "forward") == "direct"
    monkeypatch.setenv("MINIGEN_CONV", "im2col")
    assert conv.algorithm_for(geo, "weight_grad") == "im2col"
    with conv.forced("auto"):
        assert conv.algorithm_for(geo, "weight_grad") == "direct"


def test_bad_values_of_the_switches_name_the_variable_and_the_choices(monkeypatch):
    monkeypatch.setenv("MINIGEN_CONV", "fft")
    with pytest.raises(ConfigError, match=r"MINIGEN_CONV='fft'.*auto, planar, direct.*im2col"):
        K.conv2d_forward(np.ones((1, 1, 3, 3)), np.ones((1, 1, 1, 1)))
    monkeypatch.delenv("MINIGEN_CONV")
    with pytest.raises(ConfigError, match=r"conv.forced='fft'"):
        with conv.forced("fft"):
            pass
    monkeypatch.setenv("MINIGEN_PLAN", "guess")
    with pytest.raises(ConfigError, match=r"MINIGEN_PLAN='guess'.*estimate, measure"):
        K.conv2d_forward(np.ones((1, 32, 7, 7)), np.ones((32, 32, 3, 3)), padding=1)


@pytest.mark.parametrize("x_shape, w_shape, stride, padding, picks", [
    ((2, 64, 7, 7), (64, 64, 3, 3), 1, 1, ["direct", "direct", "direct"]),
    ((2, 64, 7, 7), (8, 64, 3, 3), 1, 1, ["planar", "direct", "planar"]),
    ((2, 64, 28, 28), (64, 64, 3, 3), 1, 1, ["winograd", "winograd", "winograd"]),
    ((2, 4, 28, 28), (64, 4, 3, 3), 1, 1, ["direct", "planar", "planar"]),
    ((2, 64, 28, 28), (128, 64, 4, 4), 2, 1, ["stride2", "stride2", "stride2"]),
    ((2, 1, 28, 28), (64, 1, 4, 4), 2, 1, ["stride2", "im2col", "stride2"]),
    ((2, 8, 5, 5), (4, 8, 1, 1), 1, 0, ["pointwise", "pointwise", "pointwise"]),
    ((2, 8, 9, 9), (4, 8, 3, 3), 2, 1, ["im2col", "subpixel", "im2col"]),
])
def test_estimate_plan_picks_by_the_hand_thresholds(x_shape, w_shape, stride, padding, picks):
    geo = _geometry(x_shape, w_shape, stride, padding, 1, 1, None)
    assert [conv.algorithm_for(geo, part) for part in conv.PARTS] == picks
