"""RealNVP: invertibility, log-determinants against numerical Jacobians, normalisation, bits/dim accounting."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen.errors import MinigenError, ShapeError
from minigen.gradcheck import gradcheck
from minigen.models.flow import (ActNorm, AffineCoupling, ChannelCoupling, ClassPrior, ConvCouplingNet, FactorOut,
                                 GlowCouplingNet, InvertibleConv1x1, LogitTransform, MLPCouplingNet, RealNVP, Squeeze,
                                 bits_per_dim, channel_mask, checkerboard_mask, glow_steps, standard_normal_log_prob)
from minigen import ops
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad

TOL = {np.float32: 1e-4, np.float64: 1e-9}
TINY = {"hidden_dim": 8, "hidden_channels": 4, "num_couplings": 4}


def randomize(module, seed: int, std: float = 0.3, dtype=np.float32):
    """Give every parameter random values (the coupling nets start at zero = identity) in `dtype`.

    Eval mode, so ActNorm keeps these values instead of initialising itself from the first batch."""
    g = Generator(seed)
    for p in module.parameters():
        p.data = g.normal(p.shape, std=std, dtype=dtype)
    return module.eval()


def make_layer(kind: str, seed: int, dtype, conditional: bool = False):
    """A randomly initialised layer and the input shape it takes (small, so Jacobians are cheap)."""
    label_dim = 10 if conditional else 0
    if kind == "logit":
        return LogitTransform(0.05), (1, 4, 4)
    if kind == "actnorm":
        return randomize(ActNorm((1, 2, 1, 1)), seed, dtype=dtype), (2, 2, 2)
    if kind == "squeeze":
        return Squeeze(), (1, 4, 4)
    if kind == "checkerboard-mlp":
        layer = AffineCoupling(checkerboard_mask(1, 4, 4, seed % 2), MLPCouplingNet((1, 4, 4), 8, label_dim))
        return randomize(layer, seed, dtype=dtype), (1, 4, 4)
    if kind == "channel-mlp":
        layer = AffineCoupling(channel_mask(4, seed % 2), MLPCouplingNet((4, 2, 2), 8, label_dim))
        return randomize(layer, seed, dtype=dtype), (4, 2, 2)
    if kind == "checkerboard-conv":
        layer = AffineCoupling(checkerboard_mask(1, 4, 4, seed % 2), ConvCouplingNet(1, 4, label_dim))
        return randomize(layer, seed, dtype=dtype), (1, 4, 4)
    if kind == "channel-conv":
        layer = AffineCoupling(channel_mask(4, seed % 2), ConvCouplingNet(4, 4, label_dim))
        return randomize(layer, seed, dtype=dtype), (4, 2, 2)
    if kind == "invconv":
        return randomize(InvertibleConv1x1(3, Generator(seed)), seed, dtype=dtype), (3, 2, 2)
    if kind == "glow-coupling":
        layer = ChannelCoupling(4, GlowCouplingNet(2, 2, 4, label_dim))
        return randomize(layer, seed, dtype=dtype), (4, 2, 2)
    if kind == "factor-out":        # (4, 2, 2): 2 channels out, 2 -> squeeze -> (8, 1, 1) -> a Glow step
        inner = [Squeeze(), *glow_steps(8, 1, 4, label_dim)]
        return randomize(FactorOut(4, 2, 2, inner, (8, 1, 1)), seed, dtype=dtype), (4, 2, 2)
    raise AssertionError(kind)


def layer_input(kind: str, shape, n: int, seed: int, dtype) -> np.ndarray:
    g = Generator(seed + 1000)
    if kind == "logit":   # the logit transform's domain is (0, 1)
        return g.uniform((n, *shape), 0.02, 0.98, dtype=dtype)
    return g.normal((n, *shape), dtype=dtype)


LAYERS = ["logit", "actnorm", "squeeze", "checkerboard-mlp", "channel-mlp", "checkerboard-conv", "channel-conv",
          "invconv", "glow-coupling", "factor-out"]


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(LAYERS), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 10_000), conditional=st.booleans())
def test_each_layer_inverts_its_forward_both_ways(kind, dtype, seed, conditional):
    layer, shape = make_layer(kind, seed, dtype, conditional)
    labels = np.arange(3) % 10 if conditional else None
    x = layer_input(kind, shape, 3, seed, dtype)
    with no_grad():
        z, log_det = layer(Tensor(x), labels)
        assert log_det.shape == (3,) and z.dtype == dtype
        np.testing.assert_allclose(layer.inverse(z, labels).data, x, atol=TOL[dtype], rtol=0)
        if kind != "logit":   # every z in R^D is in the image of these layers
            z0 = Generator(seed + 7).normal(z.shape, dtype=dtype)
            np.testing.assert_allclose(layer(layer.inverse(Tensor(z0), labels), labels)[0].data, z0,
                                       atol=TOL[dtype], rtol=0)


def numerical_jacobian(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """J[i, j] = d f(x)_i / d x_j by central differences; x: one example (1, ...) in float64."""
    flat = x.reshape(-1)
    columns = []
    for j in range(flat.size):
        step = np.zeros_like(flat)
        step[j] = eps
        columns.append((f((flat + step).reshape(x.shape)) - f((flat - step).reshape(x.shape))).reshape(-1) / (2 * eps))
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("seed", [0, 1])
def test_log_det_equals_slogdet_of_the_numerical_jacobian(kind, seed):
    layer, shape = make_layer(kind, seed, np.float64)
    x = layer_input(kind, shape, 1, seed, np.float64)
    with no_grad():
        jac = numerical_jacobian(lambda v: layer(Tensor(v))[0].data, x)
        sign, expected = np.linalg.slogdet(jac)
        log_det = layer(Tensor(x))[1].data
    assert sign != 0
    assert log_det[0] == pytest.approx(expected, abs=1e-5)


def midpoint_grid(low: float, high: float, m: int) -> np.ndarray:
    """The centres of an m x m grid of cells over [low, high]^2, as (m * m, 1, 1, 2) float64."""
    centres = low + (np.arange(m) + 0.5) * (high - low) / m
    return np.stack(np.meshgrid(centres, centres), axis=-1).reshape(-1, 1, 1, 2)


def integrate_density_on_grid(layers, low: float, high: float, m: int) -> tuple[float, np.ndarray]:
    """Midpoint rule for the flow's density over [low, high]^2 on an m x m grid; returns (integral, density)."""
    grid = midpoint_grid(low, high, m)
    with no_grad():
        x, log_det = Tensor(grid), Tensor(np.zeros(len(grid)))
        for layer in layers:
            x, step = layer(x)
            log_det = log_det + step
        density = np.exp((standard_normal_log_prob(x) + log_det).data)
    return density.sum() * ((high - low) / m) ** 2, density


@pytest.mark.parametrize("seed", [0, 3])
def test_the_density_of_a_two_dimensional_flow_integrates_to_one(seed):
    """ActNorm and two couplings with opposite masks (one pixel each) on R^2."""
    layers = [ActNorm((1, 1, 1, 2))]
    for parity in (0, 1):
        layers.append(AffineCoupling(checkerboard_mask(1, 1, 2, parity), MLPCouplingNet((1, 1, 2), 16)))
    for layer in layers:
        randomize(layer, seed, std=0.5, dtype=np.float64)
    total, density = integrate_density_on_grid(layers, -12.0, 12.0, 400)
    assert total == pytest.approx(1.0, abs=1e-3)
    # the flow really reshapes the density: it is far from the prior's somewhere
    prior = np.exp(-0.5 * (midpoint_grid(-12.0, 12.0, 400) ** 2).sum(axis=(1, 2, 3))) / (2 * math.pi)
    assert np.abs(density - prior).max() > 0.05


def test_the_logit_transform_leaves_out_exactly_the_prior_mass_outside_its_box():
    """logit(0.05 + 0.9 x) maps (0, 1) onto (-b, b), b = logit(0.95), not onto all of R. So the
    density on (0, 1)^2 integrates to the prior's mass of that box, a bit below 1: the reported
    likelihood is a (slightly) conservative bound."""
    b = math.log(0.95 / 0.05)
    box_mass = math.erf(b / math.sqrt(2)) ** 2
    total, _ = integrate_density_on_grid([LogitTransform(0.05)], 0.0, 1.0, 400)
    assert total == pytest.approx(box_mass, abs=1e-4)
    assert box_mass < 0.994


@pytest.mark.parametrize("config", [
    {"variant": "mlp"}, {"variant": "mlp", "conditional": True, "actnorm": True},
    {"variant": "conv"}, {"variant": "conv", "conditional": True, "actnorm": True},
    {"variant": "mlp", "conditional": True, "prior": "class"},
    {"variant": "glow"}, {"variant": "glow", "conditional": True, "prior": "class"},
], ids=["mlp", "mlp-conditional-actnorm", "conv", "conv-conditional-actnorm", "mlp-class-prior", "glow",
        "glow-class-prior"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_whole_flow_inverts_both_ways(config, dtype):
    model = randomize(RealNVP({**TINY, **config}), seed=5, std=0.02, dtype=dtype)
    assert model.latent_shape == {"mlp": (1, 28, 28), "conv": (4, 14, 14), "glow": (784,)}[config["variant"]]
    labels = np.array([3, 9]) if config.get("conditional") else None
    x = Generator(1).uniform((2, 1, 28, 28), 0.01, 0.99, dtype=dtype)
    z0 = Generator(2).normal((2, *model.latent_shape), std=0.5, dtype=dtype)
    with no_grad():
        z, log_det = model(Tensor(x), labels)
        assert z.shape == (2, *model.latent_shape) and log_det.shape == (2,)
        np.testing.assert_allclose(model.inverse(z, labels).data, x, atol=TOL[dtype], rtol=0)
        x0 = model.inverse(Tensor(z0), labels)
        # forward(inverse(z)) = z needs inverse(z) inside (0, 1), the logit transform's domain
        assert 0 < x0.data.min() and x0.data.max() < 1
        np.testing.assert_allclose(model(x0, labels)[0].data, z0, atol=TOL[dtype], rtol=0)


def test_bits_per_dim_counts_every_jacobian_term():
    """With identity couplings (their zero initialisation) the flow is just the logit transform,
    so the likelihood can be written out by hand: prior, logit Jacobian, dequantization, /256."""
    model = RealNVP({**TINY, "eval_examples": None})
    x = Generator(3).integers(0, 256, (5, 1, 28, 28)).astype(np.float32) / 255
    metrics = model.evaluate(x, np.zeros(5, np.int64))
    v = model.dequantize(x, Generator(model.config["eval_seed"])).astype(np.float64)
    y = 0.05 + 0.9 * v
    z = np.log(y) - np.log1p(-y)
    log_p = (-0.5 * (z ** 2 + math.log(2 * math.pi)) + math.log(0.9) - np.log(y) - np.log1p(-y)).sum(axis=(1, 2, 3))
    expected_bpd = (-(log_p - 784 * math.log(256)) / (784 * math.log(2))).mean()
    assert metrics["bits_per_dim"] == pytest.approx(expected_bpd, rel=1e-5)
    assert metrics["nll_nats"] == pytest.approx(expected_bpd * 784 * math.log(2), rel=1e-5)
    assert bits_per_dim(784 * math.log(256), 784) == 0.0   # a density of 256^D on [0, 1]^D is 1 on 0..255


def test_dequantization_keeps_the_pixel_and_stays_inside_the_unit_interval():
    x = np.resize(np.arange(256, dtype=np.float32), (2, 1, 28, 28)) / 255
    v = RealNVP.dequantize(x, Generator(0))
    assert (v > 0).all() and (v < 1).all()
    np.testing.assert_array_equal(np.floor(v * 256), np.rint(x * 255))


def synthetic_digits(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Blurry bright bars on a dark background: structure a tiny model can learn in a few steps."""
    g = Generator(11)
    x = np.zeros((n, 1, 28, 28), np.float32)
    for i in range(n):
        col = 6 + 2 * (i % 8)
        x[i, 0, 4:24, col:col + 3] = 1
    x = np.clip(x * 0.9 + g.uniform(x.shape, 0, 0.1), 0, 1)
    return np.rint(x * 255).astype(np.float32) / 255, np.arange(n, dtype=np.int64) % 10


@pytest.mark.parametrize("config", [{"variant": "mlp", "actnorm": True}, {"variant": "conv", "conditional": True},
                                    {"variant": "glow", "conditional": True, "prior": "class"}],
                         ids=["mlp-actnorm", "conv-conditional", "glow-class-prior"])
def test_training_a_tiny_flow_lowers_its_bits_per_dim(config):
    model = RealNVP({**TINY, **config, "lr": 1e-3, "eval_examples": None})
    x, y = synthetic_digits()
    before = model.evaluate(x, y)["bits_per_dim"]
    optimizers = model.make_optimizers()
    g = Generator(0)
    losses = [model.train_step(x, y, optimizers, g)["loss"] for _ in range(15)]
    after = model.evaluate(x, y)["bits_per_dim"]
    assert all(np.isfinite(losses))
    assert after < before - 0.2, (before, after)


def test_sampling_is_reproducible_and_temperature_zero_gives_the_mode():
    model = randomize(RealNVP({**TINY, "conditional": True}), seed=2, std=0.05)
    labels = np.array([1, 1, 7])
    a = model.sample(3, labels, Generator(4), temperature=0.7)
    b = model.sample(3, labels, Generator(4), temperature=0.7)
    assert a.shape == (3, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    mode = model.sample(3, labels, Generator(5), temperature=0.0)
    np.testing.assert_array_equal(mode[0], mode[1])          # same label, z = 0: the same image
    assert not np.array_equal(mode[0], mode[2])               # a different label changes it


def test_actnorm_initialises_from_the_first_training_batch_and_checkpoints_that():
    model = RealNVP({**TINY, "actnorm": True})
    x, y = synthetic_digits(8)
    model.train_step(x, y, model.make_optimizers(), Generator(0))
    clone = RealNVP({**TINY, "actnorm": True})
    clone.load_state_dict(model.state_dict())
    assert clone.evaluate(x, y) == model.evaluate(x, y)
    first = model.layers[1]
    assert isinstance(first, ActNorm) and first.initialized.data == 1 and np.abs(first.log_scale.data).max() > 0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), digit=st.integers(0, 9))
def test_the_class_prior_is_the_gaussian_of_its_digit(seed, digit):
    """log p(z | y) against the diagonal Gaussian written out in float64, and z = mu_y + T sigma_y eps."""
    prior = randomize(ClassPrior(10, (1, 3, 2)), seed, std=0.5, dtype=np.float64)
    g = Generator(seed + 1)
    z, labels = g.normal((4, 1, 3, 2), dtype=np.float64), np.array([digit, 0, digit, 9])
    mean, sigma = prior.mean.data[labels], np.exp(prior.log_scale.data[labels])
    expected = (-0.5 * ((z - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(prior.log_prob(Tensor(z), labels).data, expected, rtol=1e-12)
    noise = g.normal((4, 1, 3, 2), dtype=np.float64)
    np.testing.assert_allclose(prior.latent(noise, labels, 0.5), mean + 0.5 * sigma * noise, rtol=1e-6)
    np.testing.assert_allclose(prior.latent(noise, labels, 0.0), mean, rtol=1e-6)


def test_the_class_prior_starts_at_each_digits_mean_code_and_checkpoints_that():
    """The first training batch sets mu_y to the mean z of digit y there (the batch mean for a digit
    it lacks); later batches leave that to the optimiser; a checkpoint keeps it."""
    config = {**TINY, "conditional": True, "prior": "class"}
    model = RealNVP(config)
    x, y = synthetic_digits(8)                        # digits 0..7: 8 and 9 are missing
    v = model.dequantize(x, Generator(0))
    with no_grad():
        z = model(Tensor(v), y)[0].data               # identity couplings: z is the logit of v
    model.train_step(x, y, model.make_optimizers(), Generator(0))
    prior = model.prior
    assert prior.initialized.data == 1
    lr = model.config["lr"]
    for digit in range(8):                            # after the init, one Adam step moves each entry <= ~lr
        np.testing.assert_allclose(prior.mean.data[digit], z[y == digit].mean(axis=0), atol=2 * lr)
    np.testing.assert_allclose(prior.mean.data[9], z.mean(axis=0), atol=2 * lr)
    clone = RealNVP(config)
    clone.load_state_dict(model.state_dict())
    assert clone.evaluate(x, y) == model.evaluate(x, y)
    mode = model.sample(2, np.array([3, 5]), Generator(1), temperature=0.0)
    np.testing.assert_array_equal(mode, model.images_from_latent(prior.mean.data[[3, 5]], np.array([3, 5])))


def test_the_class_prior_learns_faster_than_the_standard_one():
    """Same data and steps: the class prior's bits/dim end lower (its means do much of the work at once)."""
    x, y = synthetic_digits()
    results = {}
    for prior in ("standard", "class"):
        model = RealNVP({**TINY, "conditional": True, "prior": prior, "lr": 1e-3, "eval_examples": None})
        optimizers, g = model.make_optimizers(), Generator(0)
        for _ in range(10):
            model.train_step(x, y, optimizers, g)
        results[prior] = model.evaluate(x, y)["bits_per_dim"]
    assert results["class"] < results["standard"] - 0.1, results


def test_bad_inputs_get_clear_errors():
    model = RealNVP({**TINY, "conditional": True})
    x, y = synthetic_digits(4)
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        model.train_step(x[:, 0], y, model.make_optimizers(), Generator(0))
    with pytest.raises(MinigenError, match=r"pixel values must be in \[0, 1\]"):
        model.evaluate(x * 255, y)
    with pytest.raises(MinigenError, match="pass labels"):
        model.sample(2)
    with pytest.raises(MinigenError, match=r"labels must be in \[0, 10\)"):
        model.sample(2, np.array([3, 10]))
    with pytest.raises(MinigenError, match="unconditional"):
        RealNVP(TINY).sample(2, np.array([1, 2]))
    with pytest.raises(MinigenError, match="variant"):
        RealNVP({"variant": "iaf"})
    with pytest.raises(MinigenError, match="must be even for variant=glow"):
        RealNVP({"variant": "glow", "num_couplings": 3})
    with pytest.raises(MinigenError, match="unknown hyper-parameter 'coupling'"):
        RealNVP({"coupling": 4})
    with pytest.raises(MinigenError, match="prior=class needs conditional=true"):
        RealNVP({"prior": "class"})


# --- Glow: the invertible 1x1 convolution and the multi-scale variant ----------------------------------------
def test_the_invertible_1x1_conv_passes_gradcheck_in_float64():
    """Gradients of z and of the log-determinant with respect to x, L, U and log_s."""
    layer = randomize(InvertibleConv1x1(3, Generator(0)), seed=1, std=0.4, dtype=np.float64)
    x = Tensor(Generator(2).normal((2, 3, 2, 2), dtype=np.float64), requires_grad=True)

    def z_and_log_det(x, *params):
        z, log_det = layer(x)
        return ops.concat([z.reshape(2, -1), log_det.reshape(2, 1)], axis=1)

    assert gradcheck(z_and_log_det, x, layer.lower, layer.upper, layer.log_s)


def test_the_invertible_1x1_conv_starts_as_a_rotation_and_keeps_its_lu_form():
    """W = P L (U + diag(sign_s exp(log_s))) starts orthogonal (log-det 0); entries of `lower` and
    `upper` outside their triangles do not change W, and log|det W| = sum(log_s) always."""
    layer = InvertibleConv1x1(5, Generator(3))
    w = layer.weight().data.astype(np.float64)
    np.testing.assert_allclose(w @ w.T, np.eye(5), atol=1e-5)
    assert layer(Tensor(np.ones((2, 5, 3, 3), np.float32)))[1].data == pytest.approx([0, 0], abs=1e-5)
    layer = randomize(layer, seed=4, std=0.5, dtype=np.float64)
    w = layer.weight().data
    layer.lower.data += np.triu(np.ones((5, 5)))          # outside the strict lower triangle
    layer.upper.data += np.tril(np.ones((5, 5)))          # outside the strict upper triangle
    np.testing.assert_array_equal(layer.weight().data, w)
    assert np.linalg.slogdet(w)[1] == pytest.approx(layer.log_s.data.sum(), abs=1e-10)


@settings(max_examples=15, deadline=None)
@given(channels=st.sampled_from([2, 4, 6]), height=st.integers(1, 3), width=st.integers(1, 3),
       seed=st.integers(0, 10_000), conditional=st.booleans())
def test_a_glow_step_inverts_and_its_log_det_is_the_brute_force_one(channels, height, width, seed, conditional):
    """ActNorm, 1x1 conv and channel coupling on a tiny random shape, float64: inverse(forward(x)) = x,
    and the summed log-det equals log|det| of the numerical Jacobian of the whole step."""
    layers = [randomize(layer, seed, std=0.3, dtype=np.float64)
              for layer in glow_steps(channels, 1, 4, 10 if conditional else 0)]
    labels = np.array([seed % 10]) if conditional else None
    x = Generator(seed + 1).normal((1, channels, height, width), dtype=np.float64)

    def forward(v):
        v, log_det = Tensor(v), 0.0
        for layer in layers:
            v, step = layer(v, labels)
            log_det = log_det + step.data
        return v.data, log_det

    with no_grad():
        z, log_det = forward(x)
        back = Tensor(z)
        for layer in reversed(layers):
            back = layer.inverse(back, labels)
        np.testing.assert_allclose(back.data, x, atol=1e-9, rtol=0)
        sign, expected = np.linalg.slogdet(numerical_jacobian(lambda v: forward(v)[0], x))
    assert sign != 0
    assert log_det[0] == pytest.approx(expected, abs=1e-5)


def test_the_whole_glow_flows_log_det_is_the_brute_force_one():
    """The two scales, the squeezes and the factored-out half put together, on the real 1x28x28 shape:
    log|det dz/dx| against slogdet of the 784 x 784 numerical Jacobian (all 2 x 784 nudged copies of x
    go through the flow as one batch)."""
    model = randomize(RealNVP({**TINY, "variant": "glow", "conditional": True}), seed=6, std=0.1, dtype=np.float64)
    x = Generator(7).uniform((1, 1, 28, 28), 0.05, 0.95, dtype=np.float64)
    eps, eye = 1e-6, np.eye(784).reshape(784, 1, 28, 28)
    labels = np.full(784, 4)
    with no_grad():
        z_plus = model(Tensor(x + eps * eye), labels)[0].data
        z_minus = model(Tensor(x - eps * eye), labels)[0].data
        log_det = model(Tensor(x), labels[:1])[1].data[0]
    jacobian = ((z_plus - z_minus) / (2 * eps)).T          # J[i, j] = dz_i / dx_j
    sign, expected = np.linalg.slogdet(jacobian)
    assert sign != 0
    assert log_det == pytest.approx(expected, abs=1e-3)


def test_the_glow_variant_has_far_fewer_parameters_and_counts_them_right():
    glow = RealNVP({"variant": "glow", "conditional": True, "prior": "class", "hidden_channels": 32})
    mlp = RealNVP({"hidden_dim": 256, "conditional": True, "prior": "class"})      # the tour's flow
    assert glow.num_parameters() < mlp.num_parameters() / 50
    assert glow.hparams.memory_floats()[0] == glow.num_parameters()


def test_the_pytorch_twin_copies_a_conditional_glow_flow_and_trains_the_same_numbers():
    """benchmarks/twins/flow.py knows the glow layers: the same LU-form 1x1 convs (buffers included),
    coupling nets with their label bias, factored-out half and class prior, so both frameworks see the
    same losses, weights, samples and bits/dim after a few steps on the same batches."""
    pytest.importorskip("torch")
    from benchmarks.twins import flow as twin_module
    m = RealNVP({"variant": "glow", "hidden_channels": 4, "num_couplings": 2, "conditional": True, "prior": "class",
                 "lr": 1e-3, "eval_examples": None})
    twin = twin_module.build(m)
    x, y = synthetic_digits(8)
    ours, theirs = m.make_optimizers(), twin_module.make_optimizers(twin, m.config)
    for i in range(3):
        a, b = m.train_step(x, y, ours, Generator(i)), twin_module.train_step(twin, theirs, x, y, Generator(i))
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    state = twin.state_dict()
    for name, value in m.state_dict().items():
        np.testing.assert_allclose(state[name].numpy(), value, atol=1e-5, err_msg=name)
    labels = np.arange(4)
    ours_x = m.sample(4, labels, Generator(3), temperature=0.7)
    theirs_x = twin_module.sample(twin, 4, labels, Generator(3), temperature=0.7)
    # pixels are rounded to 256 levels: a float32 difference may move one across a level, no further
    assert np.abs(ours_x - theirs_x).max() <= 1 / 255 + 1e-6 and (ours_x != theirs_x).mean() < 0.01
    assert m.evaluate(x, y)["bits_per_dim"] == pytest.approx(twin_module.evaluate(twin, x, y)["bits_per_dim"], rel=1e-5)
