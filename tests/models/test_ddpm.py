"""DDPM: the forward process, its posterior, DDIM vs ancestral sampling, training, EMA and the interface."""
import numpy as np
import pytest

from minigen.errors import CheckpointError, MinigenError, ShapeError
from minigen.models import get_family
from minigen.models.ddpm import DDPM, NoiseSchedule, timestep_embedding
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad
from tests.models.synthetic import bar_digits

# a tiny U-Net and a short chain keep every test to seconds
TINY = {"T": 20, "channels": [8, 16, 16], "time_dim": 16, "groups": 4, "batch_size": 8, "sample_steps": 5,
        "eval_examples": 8}


def tiny(**overrides):
    return DDPM({**TINY, **overrides}, generator=Generator(0))


digits = bar_digits


# --- the forward process -----------------------------------------------------------------------------
def test_q_sample_matches_repeated_single_noising_steps():
    sched = NoiseSchedule("linear", 1000)
    x0 = np.tile(np.array([-1.0, -0.3, 0.5, 1.0], np.float32).reshape(1, 1, 1, 4), (20000, 1, 1, 1))
    t = 299   # after 300 steps
    g = Generator(0)
    stepped = x0.astype(np.float64)
    for s in range(t + 1):
        stepped = np.sqrt(1 - sched.betas[s]) * stepped + np.sqrt(sched.betas[s]) * g.normal(x0.shape, dtype=np.float64)
    closed = sched.q_sample(x0, np.full(len(x0), t), g.normal(x0.shape))
    ab = sched.alpha_bar[t]
    for name, xt in (("stepped", stepped), ("closed form", closed)):
        # standard error of the mean is ~0.006 here, of the std ~0.004
        np.testing.assert_allclose(xt.mean(axis=0).ravel(), np.sqrt(ab) * x0[0].ravel(), atol=0.03, err_msg=name)
        np.testing.assert_allclose(xt.std(axis=0).ravel(), np.full(4, np.sqrt(1 - ab)), atol=0.02, err_msg=name)
    np.testing.assert_allclose(stepped.mean(axis=0), closed.mean(axis=0), atol=0.04)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_x_T_is_standard_normal(kind):
    sched = NoiseSchedule(kind, 1000)
    x0, _ = digits(2000)
    xT = sched.q_sample(2 * x0 - 1, np.full(len(x0), sched.T - 1), Generator(1).normal(x0.shape))
    assert sched.alpha_bar[-1] < 1e-4
    assert abs(xT.mean()) < 0.01 and abs(xT.std() - 1) < 0.01
    assert abs((np.abs(xT) < 1.959964).mean() - 0.95) < 0.005
    assert abs((xT ** 4).mean() - 3) < 0.05          # a Gaussian's fourth moment


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_mean_and_variance_match_bayes_rule(kind):
    """q(x_{t-1} | x_t, x_0) from multiplying q(x_{t-1} | x_0) and q(x_t | x_{t-1}) (precisions add)."""
    sched = NoiseSchedule(kind, 1000)
    g = Generator(2)
    t = np.array([1, 10, 250, 999])
    x0, xt = g.normal((4, 1, 2, 2)), g.normal((4, 1, 2, 2))
    mean, var = sched.q_posterior(x0, xt, t)
    ab_prev, alpha, beta = (a[:, None, None, None] for a in (sched.alpha_bar[t - 1], sched.alphas[t], sched.betas[t]))
    want_var = 1 / (1 / (1 - ab_prev) + alpha / beta)
    want_mean = want_var * (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(alpha) * xt / beta)
    np.testing.assert_allclose(var, want_var, rtol=1e-5)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-6)


def test_posterior_matches_simulated_pairs():
    """Draw (x_{t-1}, x_t) by the forward process from one x_0; regressing x_{t-1} on x_t recovers
    the posterior mean's slope c2, its intercept c1 x_0 and its variance."""
    sched = NoiseSchedule("linear", 1000)
    t, x0, n = 100, 0.7, 200000
    g = Generator(3)
    prev = np.sqrt(sched.alpha_bar[t - 1]) * x0 + np.sqrt(1 - sched.alpha_bar[t - 1]) * g.normal((n,), dtype=np.float64)
    xt = np.sqrt(sched.alphas[t]) * prev + np.sqrt(sched.betas[t]) * g.normal((n,), dtype=np.float64)
    slope, intercept = np.polyfit(xt, prev, 1)
    residual_var = (prev - (slope * xt + intercept)).var()
    mean_at_1, var = sched.q_posterior(np.full((1, 1, 1, 1), x0, np.float32), np.ones((1, 1, 1, 1), np.float32),
                                       np.array([t]))
    assert slope == pytest.approx(sched.posterior_c2[t], abs=0.01)
    assert intercept == pytest.approx(sched.posterior_c1[t] * x0, abs=0.01)
    assert slope + intercept == pytest.approx(float(mean_at_1.item()), abs=0.01)
    assert residual_var == pytest.approx(float(var.item()), rel=0.02)


def test_schedules_and_timesteps_are_checked():
    with pytest.raises(MinigenError, match="linear' or 'cosine"):
        NoiseSchedule("quadratic")
    with pytest.raises(MinigenError, match="T must be"):
        NoiseSchedule("linear", 1)
    sched = NoiseSchedule("cosine", 50)
    assert np.all(np.diff(sched.alpha_bar) < 0) and sched.betas.max() <= 0.999
    with pytest.raises(ShapeError, match=r"\[0, 50\)"):
        sched.q_sample(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 50]), np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ShapeError, match="q_sample"):
        sched.q_sample(np.zeros((2, 1, 4, 4), np.float32), np.array([0, 1]), np.zeros((3, 1, 4, 4), np.float32))


def test_timestep_embedding_is_sin_cos_of_geometric_frequencies():
    emb = timestep_embedding(np.array([0, 7]), 8)
    assert emb.shape == (2, 8) and emb.dtype == np.float32
    np.testing.assert_array_equal(emb[0], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(emb[1, :4], np.sin(7 * 10000.0 ** -(np.arange(4) / 4)), rtol=1e-6)


# --- the network and training -------------------------------------------------------------------------
def test_unet_keeps_the_image_shape_and_has_torch_like_names():
    m = tiny(conditional=True)
    with no_grad():
        out = m.net(Tensor(np.zeros((3, 1, 28, 28), np.float32)), np.array([0, 5, 19]), np.array([1, 2, 10]))
    assert out.shape == (3, 1, 28, 28)
    names = [n for n, _ in m.net.named_parameters()]
    assert "down.1.skip.weight" in names and "upsample.0.conv.weight" in names and "label_embed.weight" in names
    assert m.net.label_embed.weight.shape == (11, 32)     # 10 digits + the null label


def _denoising_loss(model, x, seed):
    """The training loss with the current (not EMA) weights, at fixed t and noise."""
    g = Generator(seed)
    t = g.integers(0, model.schedule.T, (len(x),))
    noise = g.normal(x.shape)
    with no_grad():
        eps = model.net(Tensor(model.schedule.q_sample(2 * x - 1, t, noise)), t).data
    return float(((eps - noise) ** 2).mean())


def test_a_few_training_steps_lower_the_loss():
    m = tiny(lr=3e-3)
    x, y = digits(8)
    opt = m.make_optimizers()
    before = _denoising_loss(m, x, seed=9)
    g = Generator(4)
    logs = [m.train_step(x, y, opt, g) for _ in range(6)]
    assert set(logs[0]) == {"loss", "grad_norm"} and all(np.isfinite(v) for v in logs[0].values())
    assert _denoising_loss(m, x, seed=9) < 0.8 * before


def test_conditional_training_drops_labels_with_p_uncond(monkeypatch):
    m = tiny(conditional=True, p_uncond=0.5)
    seen = []
    forward = m.net.forward
    monkeypatch.setattr(m.net, "forward", lambda x, t, labels: (seen.append(labels.copy()), forward(x, t, labels))[1])
    x, y = digits(8)
    m.train_step(x, y, m.make_optimizers(), Generator(0))
    dropped = seen[0] == 10
    assert 0 < dropped.sum() < 8 and np.array_equal(seen[0][~dropped], y[~dropped])


def test_ema_follows_training_and_sampling_leaves_training_weights_alone():
    m = tiny(ema_decay=0.5)
    x, y = digits(8)
    opt = m.make_optimizers()
    m.train_step(x, y, opt, Generator(0))
    m.train_step(x, y, opt, Generator(1))
    weights = {n: p.data.copy() for n, p in m.net.named_parameters()}
    shadow = m.ema.shadow["conv_in.weight"]
    assert not np.array_equal(shadow, weights["conv_in.weight"])
    m.sample(2, generator=Generator(0))
    for n, p in m.net.named_parameters():
        np.testing.assert_array_equal(p.data, weights[n])


def test_ema_warms_up_so_one_step_averages_mostly_trained_weights():
    m = tiny(ema_decay=0.999)
    x, y = digits(8)
    initial = m.net.conv_in.weight.data.copy()
    m.train_step(x, y, m.make_optimizers(), Generator(0))
    # after step 1 the decay is min(0.999, 2 / 11): the shadow is 2/11 initial + 9/11 trained weights
    np.testing.assert_allclose(m.ema.shadow["conv_in.weight"],
                               2 / 11 * initial + 9 / 11 * m.net.conv_in.weight.data, rtol=1e-5, atol=1e-7)


def test_velocity_round_trips_to_the_noise():
    s = NoiseSchedule("cosine", T=50)
    g = Generator(0)
    x0, noise = g.normal((4, 1, 28, 28)), g.normal((4, 1, 28, 28))
    t = np.array([0, 10, 30, 49])
    v = s.velocity(x0, noise, t)
    xt = s.q_sample(x0, t, noise)
    np.testing.assert_allclose(s.eps_from_velocity(xt, v, t), noise, atol=1e-4)
    np.testing.assert_allclose(s.eps_from_velocity(xt[1:2], v[1:2], 10), noise[1:2], atol=1e-4)   # one t


def test_v_prediction_trains_on_v_and_samples_through_the_implied_noise():
    m = tiny(prediction="v", conditional=True)
    x, y = digits(8)
    opt = m.make_optimizers()
    logs = [m.train_step(x, y, opt, Generator(i)) for i in range(3)]
    assert all(np.isfinite(log["loss"]) for log in logs)
    xt = Generator(1).normal((2, 1, 28, 28))
    labels = np.array([3, 7])
    with no_grad():
        raw = m.net(Tensor(xt), np.full(2, 10), labels).data
        eps = m.predict_noise(xt, 10, labels, 1.0)
        ab = m.schedule.alpha_bar[10]
        np.testing.assert_allclose(eps, np.sqrt(1 - ab) * xt + np.sqrt(ab) * raw, atol=1e-5)
        cond, uncond = eps, m.predict_noise(xt, 10, np.full(2, 10), 1.0)
        np.testing.assert_allclose(m.predict_noise(xt, 10, labels, 3.0), uncond + 3 * (cond - uncond), atol=1e-4)
    assert m.sample(2, labels, Generator(0)).shape == (2, 1, 28, 28)
    with pytest.raises(MinigenError, match="prediction"):
        tiny(prediction="x0")


# --- sampling -------------------------------------------------------------------------------------------
def test_ddim_with_all_T_steps_and_eta_1_is_ancestral_sampling():
    """With every step and eta=1, DDIM's sigma equals the posterior std and its update equals the
    posterior mean, and both draw their noise at the same steps: same seed, same samples."""
    m = tiny(T=10)
    ancestral = m.sample(6, generator=Generator(5), method="ancestral")
    ddim = m.sample(6, generator=Generator(5), method="ddim", steps=m.schedule.T, eta=1.0)
    np.testing.assert_allclose(ddim, ancestral, atol=2e-4)
    deterministic = m.sample(6, generator=Generator(5), method="ddim", steps=m.schedule.T, eta=0.0)
    assert np.abs(deterministic - ancestral).max() > 0.05
    # ...and so also in distribution: over other seeds the pixel statistics agree
    many_a = m.sample(48, generator=Generator(6), method="ancestral")
    many_d = m.sample(48, generator=Generator(7), method="ddim", steps=m.schedule.T, eta=1.0)
    assert abs(many_a.mean() - many_d.mean()) < 0.02 and abs(many_a.std() - many_d.std()) < 0.02


def test_sampling_batches_split_between_threads_give_the_one_pass_output():
    """predict_noise runs parts of the batch on threads at once (kernels.conv.map_batch_parts):
    the same numbers as one pass over the whole batch, up to float32 rounding."""
    m = tiny(conditional=True)
    xt = Generator(3).normal((5, 1, 28, 28))
    labels = np.array([0, 3, 7, 9, 10])
    with no_grad():
        whole = m.net(Tensor(xt), np.full(5, 12), labels).data
        split = m._net_output(xt, np.full(5, 12), labels)
    assert split.shape == whole.shape and np.abs(split - whole).max() <= 1e-5 * np.abs(whole).max()


def test_sampling_is_seeded_and_in_range():
    m = tiny()
    a = m.sample(3, generator=Generator(1))
    assert a.shape == (3, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, m.sample(3, generator=Generator(1)))
    assert not np.array_equal(a, m.sample(3, generator=Generator(2)))
    # DDIM with eta=0 is deterministic given x_T: two calls on one seed agree, whatever the steps
    np.testing.assert_array_equal(m.sample(2, generator=Generator(3), steps=4),
                                  m.sample(2, generator=Generator(3), steps=4))


def test_guidance_mixes_conditional_and_unconditional_predictions():
    m = tiny(conditional=True)
    x = Generator(0).normal((2, 1, 28, 28))
    labels = np.array([3, 7])
    with no_grad():
        cond = m.predict_noise(x, 10, labels, 1.0)
        uncond = m.predict_noise(x, 10, np.full(2, 10), 1.0)
        guided = m.predict_noise(x, 10, labels, 3.0)
    np.testing.assert_allclose(guided, uncond + 3 * (cond - uncond), atol=1e-5)
    out = m.sample(2, labels, Generator(0), guidance=2.0)
    assert out.shape == (2, 1, 28, 28)


def test_trajectory_runs_from_noise_to_the_sample():
    m = tiny()
    final, frames = m.sample_trajectory(2, generator=Generator(0), frames=4, steps=6)
    assert frames.shape == (4, 2, 1, 28, 28)
    np.testing.assert_array_equal(frames[-1], final)
    np.testing.assert_array_equal(final, m.sample(2, generator=Generator(0), steps=6))


def test_bad_requests_get_clear_errors():
    m = tiny()
    with pytest.raises(MinigenError, match="conditional"):
        m.sample(2, generator=Generator(0), guidance=2.0)
    with pytest.raises(MinigenError, match="all T=20 steps"):
        m.sample(2, method="ancestral", steps=5)
    with pytest.raises(MinigenError, match="'ancestral' or 'ddim'"):
        m.sample(2, method="euler")
    with pytest.raises(MinigenError, match=r"steps must be in \[1, 20\]"):
        m.sample(2, steps=0)
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        m.train_step(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64), m.make_optimizers(), Generator(0))
    with pytest.raises(MinigenError, match="unknown hyper-parameter 'latent'"):
        DDPM({"T": 10, "latent": 3})
    c = tiny(conditional=True)
    with pytest.raises(MinigenError, match="pass labels"):
        c.sample(2)
    with pytest.raises(MinigenError, match=r"labels must be in \[0, 10\)"):
        c.sample(2, np.array([1, 10]))


# --- the interface: registry, evaluation, checkpoints, pictures -------------------------------------------
def test_registered_and_defaults_follow_the_issue():
    assert get_family("ddpm") is DDPM
    cfg = DDPM.default_config()
    assert cfg["T"] == 1000 and cfg["schedule"] == "linear" and cfg["channels"] == [32, 64, 64]
    assert cfg["p_uncond"] == 0.1 and cfg["time_dim"] == 128 and cfg["groups"] == 8
    sched = NoiseSchedule()
    assert sched.betas[0] == pytest.approx(1e-4) and sched.betas[-1] == pytest.approx(0.02)


def test_evaluate_and_extra_state_round_trip():
    m = tiny(conditional=True)
    x, y = digits(8)
    opt = m.make_optimizers()
    m.train_step(x, y, opt, Generator(0))
    result = m.evaluate(x, y, Generator(1))
    assert set(result) == {"loss"} and 0 < result["loss"] < 10
    assert m.evaluate(x, y, Generator(1)) == result
    other = tiny(conditional=True)
    other.load_state_dict(m.state_dict())
    other.load_extra_state(m.extra_state())
    labels = np.array([1, 2])
    np.testing.assert_array_equal(other.sample(2, labels, Generator(3)), m.sample(2, labels, Generator(3)))
    with pytest.raises(CheckpointError):
        tiny(conditional=False).load_extra_state(m.extra_state())


def test_figures_write_the_noising_strips(tmp_path):
    m = tiny()
    x, y = digits(4)
    paths = m.figures(str(tmp_path), x, y, Generator(0))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["ddpm_reverse.png", "ddpm_forward.png"]
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 1000 for p in paths)
