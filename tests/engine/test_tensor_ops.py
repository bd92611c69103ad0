"""Every core op against finite differences (float64), plus engine behaviour and error messages."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen
from minigen import ops
from minigen.errors import DTypeError, ShapeError
from minigen.gradcheck import GradcheckError, gradcheck
from minigen.tensor import OPS, Tensor, no_grad

rng = np.random.default_rng(0)


def t(*shape, low=-2.0, high=2.0):
    return Tensor(rng.uniform(low, high, shape), requires_grad=True)


def away_from_zero(*shape):
    """Values in +-[0.5, 2]: keeps abs/relu/clamp/max away from their kinks for finite differences."""
    return Tensor(rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape), requires_grad=True)


# name -> (function, inputs). Broadcasting cases are included on purpose.
CASES = {
    "add": (ops.add, lambda: [t(3, 4), t(4)]),
    "sub": (ops.sub, lambda: [t(2, 1, 3), t(4, 1)]),
    "mul": (ops.mul, lambda: [t(3, 1), t(1, 5)]),
    "div": (ops.div, lambda: [t(3, 4), t(3, 1, low=0.5, high=2)]),
    "neg": (ops.neg, lambda: [t(5)]),
    "pow": (ops.pow, lambda: [t(3, 4, low=0.5, high=2), t(4)]),
    "exp": (ops.exp, lambda: [t(3, 2)]),
    "log": (ops.log, lambda: [t(3, 2, low=0.2, high=3)]),
    "sqrt": (ops.sqrt, lambda: [t(4, low=0.2, high=3)]),
    "abs": (ops.abs, lambda: [away_from_zero(6)]),
    "tanh": (ops.tanh, lambda: [t(6)]),
    "sigmoid": (ops.sigmoid, lambda: [t(6, low=-30, high=30)]),
    "relu": (ops.relu, lambda: [away_from_zero(7)]),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2), lambda: [away_from_zero(7)]),
    "silu": (ops.silu, lambda: [t(6)]),
    "softplus": (ops.softplus, lambda: [t(6, low=-20, high=20)]),
    "log_sigmoid": (ops.log_sigmoid, lambda: [t(6, low=-20, high=20)]),
    "clamp": (lambda x: ops.clamp(x, -0.25, 0.25), lambda: [away_from_zero(8)]),
    "where": (lambda a, b: ops.where(np.array([True, False, True]), a, b), lambda: [t(2, 3), t(3)]),
    "cast": (lambda a: ops.cast(a, np.float32).astype(np.float64) * 1.0, None),  # checked separately below
    "sum": (lambda a: ops.sum(a, axis=(0, 2), keepdims=True), lambda: [t(2, 3, 4)]),
    "mean": (lambda a: ops.mean(a, axis=1), lambda: [t(2, 3, 4)]),
    "max": (lambda a: ops.max(a, axis=-1), lambda: [t(3, 5)]),
    "var": (lambda a: ops.var(a, axis=0, correction=1), lambda: [t(4, 3)]),
    "logsumexp": (lambda a: ops.logsumexp(a, axis=1), lambda: [t(3, 4, low=-50, high=50)]),
    "log_softmax": (lambda a: ops.log_softmax(a, axis=1), lambda: [t(3, 4)]),
    "softmax": (lambda a: ops.softmax(a, axis=0), lambda: [t(3, 4)]),
    "matmul": (ops.matmul, lambda: [t(2, 3, 4), t(4, 5)]),
    "linear": (ops.linear, lambda: [t(2, 3, 4), t(5, 4), t(5)]),
    "reshape": (lambda a: ops.reshape(a, 4, -1), lambda: [t(2, 3, 2)]),
    "permute": (lambda a: ops.permute(a, 2, 0, 1), lambda: [t(2, 3, 4)]),
    "transpose": (ops.transpose, lambda: [t(2, 3, 4)]),
    "flatten": (ops.flatten, lambda: [t(2, 3, 4)]),
    "getitem": (lambda a: a[np.array([0, 2, 0]), 1:], lambda: [t(3, 4)]),
    "concat": (lambda a, b: ops.concat([a, b], axis=1), lambda: [t(2, 3), t(2, 1)]),
    "stack": (lambda a, b: ops.stack([a, b], axis=1), lambda: [t(2, 3), t(2, 3)]),
    "pad": (lambda a: ops.pad(a, ((0, 0), (1, 2)), value=3.0), lambda: [t(2, 3)]),
    "binary_cross_entropy_with_logits": (
        lambda x, y: ops.binary_cross_entropy_with_logits(x, y, "none"), lambda: [t(3, 4, low=-40, high=40), t(3, 4, low=0, high=1)]),
    "bernoulli_log_likelihood": (lambda x, y: ops.bernoulli_log_likelihood(x, y, "sum"), lambda: [t(5, low=0, high=1), t(5)]),
    "cross_entropy": (lambda x: ops.cross_entropy(x, np.array([0, 2, 1]), "sum"), lambda: [t(3, 4)]),
    "gaussian_log_likelihood": (ops.gaussian_log_likelihood, lambda: [t(3, 2), t(3, 2), t(2)]),
    "mse_loss": (ops.mse_loss, lambda: [t(3, 2), t(3, 2)]),
}


@pytest.mark.parametrize("name", [n for n, (_, make) in CASES.items() if make is not None])
def test_gradcheck(name):
    fn, make = CASES[name]
    assert gradcheck(fn, *make())


def test_cast_gradient_returns_to_source_dtype():
    x = Tensor(np.ones(3), requires_grad=True)
    y = ops.cast(x, np.float32)
    assert y.dtype == np.float32
    (y * 2).sum().backward()
    assert x.grad.dtype == np.float64 and np.allclose(x.grad, 2)


def test_gradcheck_catches_a_wrong_gradient():
    """The checker itself must be able to fail: a deliberately wrong backward is caught."""
    from minigen.tensor import make_result

    def bad_square(a):
        return make_result(a.data ** 2, (a,), lambda g: (g * a.data,), "bad")  # should be 2 * a
    with pytest.raises(GradcheckError, match="disagree"):
        gradcheck(bad_square, t(4))


def test_every_registered_op_has_a_gradcheck_case():
    from tests.engine.op_cases import all_cases
    missing = sorted(set(OPS) - set(all_cases()))
    assert not missing, f"ops without a gradcheck case: {missing}"


# --- broadcasting, drawn by hypothesis ------------------------------------------------
@st.composite
def broadcastable_shapes(draw):
    ndim = draw(st.integers(1, 3))
    full = draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    # the second operand drops leading axes and squeezes some axes to 1
    drop = draw(st.integers(0, ndim - 1))
    other = [1 if draw(st.booleans()) else n for n in full[drop:]]
    return tuple(full), tuple(other)


@settings(max_examples=40, deadline=None)
@given(broadcastable_shapes(), st.sampled_from(["add", "sub", "mul", "div"]), st.booleans())
def test_broadcast_gradients(shapes, name, swap):
    a_shape, b_shape = shapes[::-1] if swap else shapes
    a = Tensor(rng.uniform(0.5, 2, a_shape), requires_grad=True)
    b = Tensor(rng.uniform(0.5, 2, b_shape), requires_grad=True)
    out = getattr(ops, name)(a, b)
    assert out.shape == np.broadcast_shapes(a_shape, b_shape)
    gradcheck(getattr(ops, name), a, b)
    assert a.grad.shape == a_shape and b.grad.shape == b_shape


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=4), st.data())
def test_reductions_match_numpy(shape, data):
    x = rng.standard_normal(shape)
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    keep = data.draw(st.booleans())
    for name, ref in [("sum", np.sum), ("mean", np.mean), ("max", np.max), ("var", np.var)]:
        got = getattr(ops, name)(Tensor(x), axis=axis, keepdims=keep).data
        np.testing.assert_allclose(got, ref(x, axis=axis, keepdims=keep), rtol=1e-10, atol=1e-12)


# --- engine behaviour -------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(st.sampled_from([0.0, 0.01, 0.2, 1.0, 3.0, -0.5]), st.sampled_from([np.float32, np.float64]),
       st.integers(1, 60))
def test_leaky_relu_is_exactly_the_textbook_formula(slope, dtype, n):
    """max/min and the slope lookup give the very bits of where(x > 0, x, s*x), zeros and NaN included."""
    x = rng.standard_normal(n).astype(dtype)
    if n >= 4:
        x[:4] = [0.0, -0.0, np.nan, 1.0]
    g = rng.standard_normal(n).astype(dtype)
    s = dtype(slope)
    xt = Tensor(x, requires_grad=True)
    ops.leaky_relu(xt, slope).backward(g)
    np.testing.assert_array_equal(ops.leaky_relu(Tensor(x), slope).data, np.where(x > 0, x, x * s))
    np.testing.assert_array_equal(xt.grad, g * np.where(x > 0, dtype(1), s))


def test_gradient_accumulates_across_backward_calls_and_uses_of_a_value():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x + x).sum().backward()          # x used twice in one graph: 2x + 1
    np.testing.assert_allclose(x.grad, [3.0, 5.0])
    (x * 3).sum().backward()              # a second backward adds to .grad
    np.testing.assert_allclose(x.grad, [6.0, 8.0])


def test_explicit_upstream_gradient_and_shape_check():
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    y = x * 2
    y.backward(np.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(x.grad, [2.0, 0.0, -2.0])
    with pytest.raises(ShapeError, match="non-scalar"):
        (x * 2).backward()
    with pytest.raises(ShapeError, match=r"gradient shape \(2,\)"):
        (x * 2).backward(np.ones(2))


def test_no_grad_and_detach_stop_the_graph():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad
    z = (x * 2).detach() * x
    z.sum().backward()
    np.testing.assert_allclose(x.grad, [2.0, 2.0, 2.0])   # only the non-detached path counts


def test_requires_grad_propagates_only_from_inputs_that_need_it():
    a, b = Tensor(np.ones(2)), Tensor(np.ones(2), requires_grad=True)
    assert not (a * a).requires_grad
    assert (a * b).requires_grad


def test_second_backward_through_freed_graph_is_a_clear_error():
    x = Tensor(np.ones(2), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, [4.0, 4.0])
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward()


def test_deep_graph_has_no_recursion_limit():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])


def test_getitem_scatter_adds_repeated_indices():
    x = Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3])].sum().backward()
    np.testing.assert_allclose(x.grad, [0, 2, 0, 1])


def test_stable_functions_survive_extreme_inputs():
    x = Tensor(np.array([-1000.0, 0.0, 1000.0]))
    assert np.all(np.isfinite(ops.sigmoid(x).data))
    np.testing.assert_allclose(ops.softplus(x).data, [0, np.log(2), 1000])
    np.testing.assert_allclose(ops.log_sigmoid(x).data, [-1000, -np.log(2), 0])
    np.testing.assert_allclose(ops.logsumexp(x).data, 1000)
    loss = ops.binary_cross_entropy_with_logits(x, Tensor(np.array([1.0, 1.0, 0.0])), "none")
    np.testing.assert_allclose(loss.data, [1000, np.log(2), 1000])


def test_cross_entropy_matches_log_softmax():
    logits = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    ce = ops.cross_entropy(Tensor(logits), labels, "none").data
    ref = -ops.log_softmax(Tensor(logits)).data[np.arange(5), labels]
    np.testing.assert_allclose(ce, ref)


def test_default_dtype_is_float32_and_ints_are_converted():
    assert Tensor([1, 2]).dtype == np.float32
    assert (Tensor(np.ones(2, np.float32)) * 2.5).dtype == np.float32
    assert Tensor(np.ones(2)).dtype == np.float64


# --- errors name the op and the shapes / dtypes ------------------------------------------
@pytest.mark.parametrize("fn, pattern", [
    (lambda: ops.add(Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))), r"add: shapes \(2, 3\) and \(4,\)"),
    (lambda: ops.mul(Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))), r"mul: shapes \(2, 3\) and \(3, 2\)"),
    (lambda: ops.matmul(Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))), r"matmul: shapes \(2, 3\) and \(4, 5\)"),
    (lambda: ops.reshape(Tensor(np.ones((2, 3))), 4, 2), r"reshape: .*\(2, 3\).*\(4, 2\)"),
    (lambda: ops.concat([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 3)))], axis=1), r"concat: shapes \(2, 3\) and \(3, 3\)"),
    (lambda: ops.sum(Tensor(np.ones((2, 3))), axis=2), r"sum: axis 2 is out of range .*\(2, 3\)"),
    (lambda: ops.cross_entropy(Tensor(np.ones((2, 3))), np.array([0, 5])), r"cross_entropy: labels must be .*\[0, 3\)"),
    (lambda: ops.mse_loss(Tensor(np.ones(3)), Tensor(np.ones(4))), r"mse_loss: input shape \(3,\) and target shape \(4,\)"),
])
def test_shape_errors_name_op_and_shapes(fn, pattern):
    with pytest.raises(ShapeError, match=pattern):
        fn()


def test_dtype_errors():
    with pytest.raises(DTypeError, match=r"add: operands have different dtypes float32 and float64"):
        ops.add(Tensor(np.ones(2, np.float32)), Tensor(np.ones(2)))
    with pytest.raises(DTypeError, match="complex128"):
        Tensor(np.ones(2, complex))


def test_detect_anomaly_names_the_op():
    x = Tensor(np.array([0.0, 1.0]), requires_grad=True)
    minigen.set_detect_anomaly(True)
    try:
        with pytest.raises(FloatingPointError, match="op 'sqrt'"):
            with np.errstate(divide="ignore"):
                ops.sqrt(x).sum().backward()
    finally:
        minigen.set_detect_anomaly(False)


def test_linear_is_matmul_with_the_transposed_weight_plus_bias():
    """ops.linear equals x @ w.T + b forward and backward (with and without a bias), and its weight
    gradient comes in w's own layout (a C-contiguous array the leaf keeps, not a transposed view)."""
    x, w, b = t(2, 3, 4), t(5, 4), t(5)
    assert gradcheck(ops.linear, x, w)
    for bias in (b, None):
        fused = ops.linear(x, w, bias)
        plain = x @ ops.transpose(w) + (bias if bias is not None else 0.0)
        np.testing.assert_allclose(fused.data, plain.data, rtol=1e-12)
        grads = []
        for y in (fused, plain):
            for p in (x, w, b):
                p.grad = None
            (y * y).sum().backward()
            grads.append([p.grad for p in (x, w, b)])
        for got, want in zip(*grads):
            if want is None:
                assert got is None
            else:
                np.testing.assert_allclose(got, want, rtol=1e-12)
        assert grads[0][1].flags.c_contiguous


def test_linear_names_bad_shapes():
    with pytest.raises(ShapeError, match=r"linear: input \(2, 3\) and weight \(5, 4\)"):
        ops.linear(t(2, 3), t(5, 4))
    with pytest.raises(ShapeError, match=r"linear: bias has shape \(4,\); expected \(5,\)"):
        ops.linear(t(2, 4), t(5, 4), t(4))


def test_leaf_gradients_never_alias_another_array():
    """A leaf keeps a fresh gradient array as its .grad without copying it, but never one that
    something else holds: the gradient an add hands to both its inputs, or the user's own array."""
    x, y = t(3), t(3)
    (x + y).backward(np.ones(3))
    assert not np.shares_memory(x.grad, y.grad)
    x.grad += 1.0
    np.testing.assert_array_equal(y.grad, np.ones(3))
    z, upstream = t(4), np.full(4, 2.0)
    z.backward(upstream)
    upstream[:] = 0.0
    np.testing.assert_array_equal(z.grad, np.full(4, 2.0))


def test_conv2d_with_fused_relu_is_relu_of_conv2d():
    """ops.conv2d(..., relu=True) equals ops.relu(ops.conv2d(...)) forward and backward, passes a
    gradcheck, and keeps no separate pre-activation array: its output is the conv's buffer."""
    x, w, b = t(2, 3, 5, 5), t(4, 3, 3, 3), t(4)
    assert gradcheck(lambda x, w, b: ops.conv2d(x, w, b, padding=1, relu=True), x, w, b)
    fused, plain = ops.conv2d(x, w, b, padding=1, relu=True), ops.relu(ops.conv2d(x, w, b, padding=1))
    np.testing.assert_array_equal(fused.data, plain.data)
    grads = []
    for y in (fused, plain):
        for p in (x, w, b):
            p.grad = None
        (y * y).sum().backward()
        grads.append([p.grad.copy() for p in (x, w, b)])
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert fused._op == "conv2d" and all(p._op == "leaf" for p in fused._parents)


@pytest.mark.parametrize("slope", [0.2, 0.01, 0.0, 1.0, -0.5, 1.5])
def test_leaky_relu_gradient_is_exactly_one_or_the_slope(slope):
    """Both ways of forming the factor (arithmetic for 0 <= slope <= 1, a lookup otherwise) give
    g * 1 or g * slope exactly, in float32."""
    x = np.random.default_rng(1).standard_normal((4, 50)).astype(np.float32)
    g = np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    ops.leaky_relu(t, slope).backward(g)
    np.testing.assert_array_equal(t.grad, g * np.where(x > 0, np.float32(1), np.float32(slope)))
