"""Flow matching: the path and its target, the loss and the ODE samplers on a 2-d toy whose exact velocity
field is known, the samplers' order of accuracy, the likelihood (instantaneous change of variables,
Hutchinson's divergence), training, guidance, reflow and the interface."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.errors import ConfigError, MinigenError, ShapeError
from minigen.models import get_family
from minigen.models.flow_matching import (FlowMatching, euler_step, flow_matching_loss, heun_step, integrate,
                                          interpolate, log_likelihood, velocity_target)
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad
from tests.models.synthetic import bar_digits

# a tiny U-Net keeps every test to seconds
TINY = {"channels": [8, 8, 8], "time_dim": 16, "groups": 4, "batch_size": 8, "sample_steps": 3,
        "eval_examples": 8, "likelihood_examples": 2, "likelihood_steps": 2}


def tiny(**overrides):
    return FlowMatching({**TINY, **overrides}, generator=Generator(0))


# --- the 2-d toy: N(0, I) carried to a mixture of Gaussians N(mu_k, s^2 I), weights w_k -------------------
# With x0 ~ N(0, I) and x1 from component k independent of it, x_t given k is N(t mu_k, sigma_t^2 I),
# sigma_t^2 = (1 - t)^2 + t^2 s^2, and the regression target's conditional mean is linear in x_t:
# E[x1 - x0 | x_t, k] = mu_k + (t s^2 - (1 - t)) / sigma_t^2 (x_t - t mu_k). The exact (marginal) velocity
# field averages these over the posterior of k given x_t.
MUS, S, WEIGHTS = np.array([[-2.0, 0.0], [2.0, 1.0]]), 0.5, np.array([0.3, 0.7])


def mixture_velocity(x, t, mus=MUS, s=S, weights=WEIGHTS):
    var = (1 - t) ** 2 + t ** 2 * s ** 2
    centred = x[:, None, :] - t * mus[None]                                  # (N, K, 2)
    logw = np.log(weights)[None] - (centred ** 2).sum(-1) / (2 * var)
    post = np.exp(logw - logw.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    per_component = mus[None] + (t * s ** 2 - (1 - t)) / var * centred
    return (post[..., None] * per_component).sum(axis=1)


def mixture_log_density(x, mus=MUS, s=S, weights=WEIGHTS):
    """log of sum_k w_k N(x; mu_k, s^2 I), x: (N, 2)."""
    logs = (np.log(weights)[None] - ((x[:, None, :] - mus[None]) ** 2).sum(-1) / (2 * s ** 2)
            - math.log(2 * math.pi * s ** 2))
    top = logs.max(axis=1)
    return top + np.log(np.exp(logs - top[:, None]).sum(axis=1))


def exact_divergence(velocity, x, t, h=1e-5):
    """The trace of dv/dx by central differences, one coordinate at a time."""
    div = np.zeros(len(x))
    for i in range(x.shape[1]):
        e = np.zeros(x.shape[1])
        e[i] = h
        div += (velocity(x + e, t)[:, i] - velocity(x - e, t)[:, i]) / (2 * h)
    return div


def mixture_samples(n, generator):
    k = (generator.uniform((n,)) > WEIGHTS[0]).astype(int)
    return MUS[k] + S * generator.normal((n, 2), dtype=np.float64), k


# --- 1-3. the path, the target, the loss ---------------------------------------------------------------
def test_the_path_starts_at_the_noise_ends_at_the_image_and_moves_at_the_target_velocity():
    g = Generator(0)
    x0, x1 = g.normal((5, 1, 4, 4)), g.normal((5, 1, 4, 4))
    np.testing.assert_array_equal(interpolate(x0, x1, np.zeros(5)), x0)
    np.testing.assert_array_equal(interpolate(x0, x1, np.ones(5)), x1)
    np.testing.assert_array_equal(velocity_target(x0, x1), x1 - x0)
    # each example at its own t, and the target is the path's derivative at every t
    t, h = np.array([0.0, 0.2, 0.5, 0.7, 0.9]), 1e-3
    np.testing.assert_allclose(interpolate(x0, x1, t)[3], 0.3 * x0[3] + 0.7 * x1[3], rtol=1e-6)
    slope = (interpolate(x0, x1, t + h) - interpolate(x0, x1, t - h)) / (2 * h)
    np.testing.assert_allclose(slope, velocity_target(x0, x1), atol=2e-3)
    with pytest.raises(ShapeError, match="t \\(N,\\)"):
        interpolate(x0, x1, np.zeros(4))


def test_the_exact_velocity_field_minimises_the_loss_on_the_toy():
    """The regression's minimiser is E[x1 - x0 | x_t]: the exact field beats every perturbation of it,
    and its loss is what is left, the variance of the targets around it."""
    g = Generator(1)
    n = 20000
    x1, _ = mixture_samples(n, g)
    x0 = g.normal((n, 2), dtype=np.float64)
    t = g.uniform((n,), dtype=np.float64)
    xt = interpolate(x0, x1, t)
    exact = np.concatenate([mixture_velocity(xt[i:i + 1], t[i]) for i in range(n)])

    def loss(predicted):
        return flow_matching_loss(Tensor(predicted), x0, x1).item()

    best = loss(exact)
    wrong_weights = np.concatenate([mixture_velocity(xt[i:i + 1], t[i], weights=np.array([0.5, 0.5]))
                                    for i in range(n)])
    for worse in (exact + 0.1, 0.9 * exact, exact + 0.2 * g.normal((n, 2), dtype=np.float64), wrong_weights):
        assert loss(worse) > best + 0.004
    np.testing.assert_allclose(loss(exact), ((velocity_target(x0, x1) - exact) ** 2).mean(), rtol=1e-6)


# --- 4. the samplers ------------------------------------------------------------------------------------
def test_the_exact_field_carries_noise_to_the_mixture():
    g = Generator(2)
    x0 = g.normal((4000, 2), dtype=np.float64)
    x1, _ = integrate(mixture_velocity, x0, 100, "heun")
    k = (x1[:, 0] > 0).astype(int)
    assert abs(k.mean() - WEIGHTS[1]) < 0.03
    for j in (0, 1):
        part = x1[k == j]
        np.testing.assert_allclose(part.mean(axis=0), MUS[j], atol=0.05)
        np.testing.assert_allclose(part.std(axis=0), [S, S], atol=0.04)


# For one Gaussian N(mu, s^2 I) the flow map is known in closed form: x0 -> mu + s x0.
@settings(max_examples=25, deadline=None)
@given(mu=st.tuples(st.floats(-3, 3), st.floats(-3, 3)), s=st.floats(0.1, 2.0),
       x0=st.tuples(st.floats(-3, 3), st.floats(-3, 3)))
def test_euler_with_many_steps_converges_to_the_true_transport(mu, s, x0):
    mu, x0 = np.array([mu]), np.array([x0])
    weights = np.ones(1)
    field = lambda x, t: mixture_velocity(x, t, mu, s, weights)  # noqa: E731
    true = mu + s * x0
    coarse = np.abs(integrate(field, x0, 20, "euler")[0] - true).max()
    fine = np.abs(integrate(field, x0, 2000, "euler")[0] - true).max()
    assert fine <= 2e-3 * (1 + np.abs(x0).max())
    assert fine <= coarse / 20 + 1e-9      # first order: 100x the steps, ~100x less error


def order_of_accuracy(method):
    """The slope of log(error) against log(steps) on a field whose exact flow map is known."""
    mu, s = np.array([[2.0, -1.0]]), 0.3
    field = lambda x, t: mixture_velocity(x, t, mu, s, np.ones(1))  # noqa: E731
    x0 = np.array([[1.0, -0.5], [0.3, 2.0]])
    steps = np.array([8, 16, 32, 64, 128])      # past the first few steps: the asymptotic regime
    errors = [np.abs(integrate(field, x0, int(n), method)[0] - (mu + s * x0)).max() for n in steps]
    return np.polyfit(np.log(steps), np.log(errors), 1)[0]


def test_euler_is_first_order_and_heun_second_order():
    assert -1.2 < order_of_accuracy("euler") < -0.85
    assert -2.3 < order_of_accuracy("heun") < -1.8


def test_the_steps_use_the_velocity_as_written():
    calls = []

    def field(x, t):
        calls.append(t)
        return np.full_like(x, 2.0) + t

    x = np.zeros((1, 2))
    np.testing.assert_allclose(euler_step(field, x, 0.25, 0.5), [[1.125, 1.125]])       # 0.5 * 2.25
    np.testing.assert_allclose(heun_step(field, x, 0.25, 0.5), [[1.25, 1.25]])          # 0.5 * (2.25 + 2.75) / 2
    assert calls == [0.25, 0.25, 0.75]
    calls.clear()
    final, frames = integrate(field, x, 4, "euler", frames=3)         # dt 0.25: + 0.5, 0.5625, 0.625, 0.6875
    np.testing.assert_allclose([f[0, 0] for f in frames], [0.0, 1.0625, 2.375])
    assert calls == [0.0, 0.25, 0.5, 0.75] and final is not frames[-1]


# --- 5. the likelihood ------------------------------------------------------------------------------------
def test_the_change_of_variables_gives_the_toys_density():
    """log p(x1) by integrating -div v backwards along the ODE matches the mixture's closed-form density,
    with the exact divergence and, averaged over probes, with Hutchinson's estimate."""
    g = Generator(3)
    x1 = np.array([[-2.0, 0.0], [2.2, 0.8], [0.0, 0.5], [1.0, 1.5]])

    def exact(x, t):
        return mixture_velocity(x, t), exact_divergence(mixture_velocity, x, t)

    log_p = log_likelihood(exact, x1, 200, "heun")
    np.testing.assert_allclose(log_p, mixture_log_density(x1), atol=0.01)

    # Hutchinson: e^T J e with random signs e (fixed along each path), many copies of each point
    copies = 400
    xs = np.repeat(x1, copies, axis=0)
    probes = np.where(g.uniform(xs.shape) < 0.5, -1.0, 1.0)

    def hutchinson(x, t):
        h = 1e-5
        jvp = (mixture_velocity(x + h * probes, t) - mixture_velocity(x - h * probes, t)) / (2 * h)
        return mixture_velocity(x, t), (probes * jvp).sum(axis=1)

    estimates = log_likelihood(hutchinson, xs, 200, "heun").reshape(len(x1), copies)
    spread = estimates.std(axis=1) / math.sqrt(copies)
    assert np.all(np.abs(estimates.mean(axis=1) - mixture_log_density(x1)) < 4 * spread + 0.01)
    assert spread.max() > 1e-4      # the probes really were random


def exact_network_divergence(m, x, t):
    """sum_i e_i^T (dv/dx) e_i over the pixel basis: the trace, by the same backward pass."""
    d = x[0].size
    basis = np.eye(d, dtype=np.float32).reshape((d,) + x.shape[1:])
    divs = [m.velocity_divergence(np.repeat(x[i:i + 1], d, axis=0), t, None, basis)[1].sum() for i in range(len(x))]
    return m.velocity_divergence(x, t, None, np.zeros_like(x))[0], np.array(divs)


def test_the_input_gradient_gives_the_networks_divergence():
    """Exact divergence by basis probes agrees with central differences of the network itself, and
    leaves the weights' gradients alone."""
    m = tiny()        # on 8x8 inputs: 64 pixels, so the exact divergence takes 64 probes
    x = Generator(4).normal((2, 1, 8, 8))
    _, div = exact_network_divergence(m, x, 0.3)
    h, fd = 1e-2, np.zeros(2)
    with no_grad():
        for i in range(64):
            e = np.zeros((1, 1, 8, 8), np.float32)
            e.reshape(-1)[i] = h
            plus = m.net(Tensor(x + e), np.full(2, 300.0)).data.reshape(2, -1)[:, i]
            minus = m.net(Tensor(x - e), np.full(2, 300.0)).data.reshape(2, -1)[:, i]
            fd += (plus - minus) / (2 * h)
    np.testing.assert_allclose(div, fd, rtol=0.02, atol=0.02)
    assert all(p.grad is None for p in m.net.parameters()) and all(p.requires_grad for p in m.net.parameters())


def test_hutchinson_bits_per_dim_agree_with_the_exact_divergence():
    m = tiny()
    x = Generator(5).normal((1, 1, 8, 8)) * 0.5
    exact = log_likelihood(lambda z, t: exact_network_divergence(m, z, t), x, 3, "heun")[0]
    copies = 300
    xs = np.repeat(x, copies, axis=0)
    probes = np.where(Generator(6).uniform(xs.shape) < 0.5, -1.0, 1.0).astype(np.float32)
    estimates = log_likelihood(lambda z, t: m.velocity_divergence(z, t, None, probes), xs, 3, "heun")
    spread = estimates.std() / math.sqrt(copies)
    assert abs(estimates.mean() - exact) < 4 * spread + 1e-3 and spread > 1e-3
    # one probe per image is what evaluate() uses: its bits/dim is finite and near the exact value's scale
    assert np.isfinite(m.evaluate(*bar_digits(4), generator=Generator(0))["bits_per_dim"])


def test_a_bits_per_dim_below_the_bound_is_refused_not_reported(monkeypatch):
    """An ODE estimate of log p so high that bits/dim < 0 is an integration error: evaluate() warns and
    leaves bits/dim out instead of printing an impossible likelihood."""
    m = tiny()
    x, y = bar_digits(4)
    num_dims = x[0].size
    # log p of the pixels on [0, 1]^D one nat above D log 256 (bits/dim just below 0), less the 2^D of y = 2v - 1
    monkeypatch.setattr(m, "log_prob", lambda y, *a, **k: np.full(len(y), num_dims * math.log(128) + 1.0))
    with pytest.warns(UserWarning, match=r"estimate of bits/dim is -0.00, below the 0 .*\(raise likelihood_steps\)"):
        result = m.evaluate(x, y, generator=Generator(0))
    assert "bits_per_dim" not in result and np.isfinite(result["loss"])
    monkeypatch.setattr(m, "log_prob", lambda y, *a, **k: np.full(len(y), num_dims * math.log(128) - 1.0))
    assert 0 < m.evaluate(x, y, generator=Generator(0))["bits_per_dim"] < 0.01


# --- training, guidance, reflow ----------------------------------------------------------------------------
def test_a_tiny_training_run_lowers_the_loss():
    m = tiny(lr=3e-3)
    x, y = bar_digits(32)
    opt = m.make_optimizers()
    losses = [m.train_step(x[i % 4 * 8:(i % 4 + 1) * 8], y[:8], opt, Generator(i))["loss"] for i in range(60)]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def test_training_regresses_the_network_on_the_velocity_target():
    """train_step's loss is the MSE between the U-Net at (x_t, 1000 t) and x1 - x0, with its draws in the
    documented order: t, then the noise."""
    m = tiny()
    x, y = bar_digits(8)
    g = Generator(7)
    t, x0 = g.uniform((8,)), g.normal((8, 1, 28, 28))
    x1 = 2 * x - 1
    with no_grad():
        expected = ((m.net(Tensor(interpolate(x0, x1, t)), 1000 * t).data - (x1 - x0)) ** 2).mean()
    assert m.train_step(x, y, m.make_optimizers(), Generator(7))["loss"] == pytest.approx(expected, rel=1e-5)


def test_guidance_mixes_outputs_and_a_digit_only_moves_its_own_samples():
    m = tiny(conditional=True)
    opt = m.make_optimizers()
    x, y = bar_digits(8)
    for i in range(3):
        m.train_step(x, y, opt, Generator(i))
    z = Generator(0).normal((3, 1, 28, 28))
    labels = np.array([3, 7, 1])
    with no_grad():
        cond = m.velocity(z, 0.4, labels)
        uncond = m.velocity(z, 0.4, np.full(3, 10))
        np.testing.assert_allclose(m.velocity(z, 0.4, labels, 3.0), uncond + 3 * (cond - uncond), atol=1e-5)
    base = m.sample(3, labels, Generator(1), guidance=3.0)
    changed = m.sample(3, np.array([3, 2, 1]), Generator(1), guidance=3.0)
    np.testing.assert_allclose(changed[[0, 2]], base[[0, 2]], atol=1e-6)
    assert np.abs(changed[1] - base[1]).max() > 1e-3
    assert np.abs(m.sample(3, labels, Generator(1), guidance=1.0) - base).max() > 1e-3


def test_reflow_trains_on_the_models_own_couplings_and_keeps_them_in_checkpoints():
    m = tiny(conditional=True, guidance=3.0, reflow_pairs=8, reflow_after=2, reflow_steps=2)
    x, y = bar_digits(8)
    opt = m.make_optimizers()
    m.train_step(x, y, opt, Generator(0))
    m.train_step(x, y, opt, Generator(1))
    assert m.reflow_pairs is None and m.network_passes() == 3 * 2 * 2
    m.train_step(x, y, opt, Generator(2))
    assert m.network_passes() == 3 * 2        # the pairs carry the guidance: sampling no longer guides
    noise, images, labels = m.reflow_pairs
    assert noise.shape == images.shape == (8, 1, 28, 28) and list(labels) == list(range(8))
    # each pair is the noise and where the EMA model's Heun ODE carries it (reflow_steps steps)
    fresh_noise, fresh_images, _ = m.make_reflow_pairs(4, Generator(9))
    np.testing.assert_allclose(m._solve(fresh_noise, np.arange(4), "heun", 2, 3.0)[0], fresh_images, atol=1e-6)
    state = m.extra_state()
    restored = tiny(conditional=True, guidance=3.0, reflow_pairs=8, reflow_after=2, reflow_steps=2)
    restored.load_extra_state(state)
    np.testing.assert_array_equal(restored.reflow_pairs[1], images)
    assert np.isfinite(m.train_step(x, y, opt, Generator(3))["loss"])


def test_the_pytorch_twin_trains_and_samples_the_same_numbers():
    pytest.importorskip("torch")
    from benchmarks.twins import flowmatch as twin_module
    m = tiny(conditional=True, guidance=2.0)
    twin = twin_module.build(m)
    x, y = bar_digits(8)
    ours, theirs = m.make_optimizers(), twin_module.make_optimizers(twin, m.config)
    for i in range(2):
        a, b = m.train_step(x, y, ours, Generator(i)), twin_module.train_step(twin, theirs, x, y, Generator(i))
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for method in ("euler", "heun"):
        np.testing.assert_allclose(m.sample(4, np.arange(4), Generator(3), method=method),
                                   twin_module.sample(twin, 4, np.arange(4), Generator(3), method=method), atol=1e-5)
    theirs = twin_module.evaluate(twin, x, y, Generator(5))["loss"]
    assert m.evaluate(x, y, Generator(5))["loss"] == pytest.approx(theirs, rel=1e-5)


# --- the interface -----------------------------------------------------------------------------------------
def test_sampling_is_seeded_in_range_and_counts_its_network_passes():
    m = tiny(conditional=True, guidance=2.0)
    labels = np.array([0, 5])
    a = m.sample(2, labels, Generator(1))
    assert a.shape == (2, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, m.sample(2, labels, Generator(1)))
    final, frames = m.sample_trajectory(2, labels, Generator(1), frames=4, method="euler", steps=3)
    assert frames.shape == (4, 2, 1, 28, 28)
    np.testing.assert_array_equal(frames[-1], final)
    assert m.network_passes() == 3 * 2 * 2 and m.network_passes("euler", 5, 1.0) == 5
    assert get_family("flowmatch") is FlowMatching


def test_bad_requests_get_clear_errors():
    m = tiny()
    with pytest.raises(MinigenError, match="conditional"):
        m.sample(2, generator=Generator(0), guidance=2.0)
    with pytest.raises(MinigenError, match="method must be one of euler, heun"):
        m.sample(2, method="ddim")
    with pytest.raises(MinigenError, match="steps must be a positive integer"):
        m.sample(2, steps=0)
    with pytest.raises(MinigenError, match="guidance must be a finite number"):
        tiny(conditional=True).sample(2, np.zeros(2, np.int64), guidance=float("nan"))
    with pytest.raises(ConfigError, match="reflow_pairs=4 is fewer than batch_size=8"):
        tiny(reflow_pairs=4)
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        m.train_step(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64), m.make_optimizers(), Generator(0))
