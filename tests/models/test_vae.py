"""VAE: reparameterization statistics and gradients, analytic KL, the importance-weighted bound, training."""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen.errors import MinigenError, ShapeError
from minigen.models.vae import VAE, gaussian_kl, reparameterize
from minigen.nn import Parameter
from minigen.random import Generator, manual_seed
from minigen.tensor import Tensor, no_grad

N_DRAWS = 200_000
Z_TOL = 5.0   # tolerances below are 5 standard errors of the Monte Carlo estimate


def test_reparameterized_samples_have_the_right_mean_and_variance():
    mu = np.array([0.5, -1.0, 2.0], np.float64)
    logvar = np.log(np.array([1.0, 4.0, 0.25]))
    z = reparameterize(Tensor(np.tile(mu, (N_DRAWS, 1))), Tensor(np.tile(logvar, (N_DRAWS, 1))), Generator(0)).data
    var = np.exp(logvar)
    np.testing.assert_array_less(np.abs(z.mean(axis=0) - mu), Z_TOL * np.sqrt(var / N_DRAWS))
    # the sample variance of a Gaussian has standard error var * sqrt(2 / n)
    np.testing.assert_array_less(np.abs(z.var(axis=0) - var), Z_TOL * var * math.sqrt(2 / N_DRAWS))
    again = reparameterize(Tensor(np.tile(mu, (N_DRAWS, 1))), Tensor(np.tile(logvar, (N_DRAWS, 1))), Generator(0))
    np.testing.assert_array_equal(again.data, z)


def test_the_pathwise_gradient_of_a_quadratic_matches_the_analytic_one():
    """f(z) = sum(a z^2 + b z): E f = sum(a (mu^2 + sigma^2) + b mu), so
    dE/dmu = 2 a mu + b and dE/dlogvar = a sigma^2 (sigma^2 = exp(logvar))."""
    a, b = np.array([1.0, 0.5, 2.0]), np.array([0.3, -1.0, 0.5])
    mu, logvar = Parameter(np.array([0.5, -1.0, 0.2]), np.float64), Parameter(np.log([1.0, 2.0, 0.5]), np.float64)
    batch = Tensor(np.zeros((N_DRAWS, 3)))                  # broadcast the parameters to N_DRAWS rows
    z = reparameterize(mu + batch, logvar + batch, Generator(1))
    (z * z * a + z * b).sum(axis=1).mean().backward()
    sigma2 = np.exp(logvar.data)
    # per-draw gradients: 2 a (mu + sigma eps) + b and a (mu sigma eps + sigma^2 eps^2); their std bounds the error
    mu_se = 2 * a * np.sqrt(sigma2) / math.sqrt(N_DRAWS)
    logvar_se = a * np.sqrt(mu.data ** 2 * sigma2 + 2 * sigma2 ** 2) / math.sqrt(N_DRAWS)
    np.testing.assert_array_less(np.abs(mu.grad - (2 * a * mu.data + b)), Z_TOL * mu_se)
    np.testing.assert_array_less(np.abs(logvar.grad - a * sigma2), Z_TOL * logvar_se)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000))
def test_the_analytic_kl_matches_a_monte_carlo_estimate(seed):
    g = Generator(seed)
    mu, logvar = g.normal((1, 4), dtype=np.float64), g.uniform((1, 4), -2, 1, dtype=np.float64)
    kl = gaussian_kl(Tensor(mu), Tensor(logvar)).data[0]
    z = mu + np.exp(0.5 * logvar) * g.normal((N_DRAWS // 4, 4), dtype=np.float64)
    log_ratio = (-0.5 * ((z - mu) ** 2 / np.exp(logvar) + logvar) + 0.5 * z ** 2).sum(axis=1)   # log q - log p
    assert abs(log_ratio.mean() - kl) < Z_TOL * log_ratio.std() / math.sqrt(len(z))
    assert gaussian_kl(Tensor(np.zeros((1, 4))), Tensor(np.zeros((1, 4)))).data[0] == 0.0


TINY = {"hidden_dim": 16, "latent_dim": 4, "conv_channels": 4, "eval_examples": None}


def synthetic_digits(n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Bright vertical bars at a position given by the label: structure a tiny model learns in a few steps."""
    x = np.full((n, 1, 28, 28), 0.05, np.float32)
    labels = np.arange(n, dtype=np.int64) % 10
    for i, label in enumerate(labels):
        x[i, 0, 4:24, 4 + 2 * label:7 + 2 * label] = 0.95
    return x, labels


def test_the_importance_weighted_estimate_matches_the_exact_likelihood_of_a_1d_latent_model():
    """With one latent dimension log p(x) = log integral p(x | z) N(z) dz is a 1-d quadrature."""
    manual_seed(0)          # the weights, so the result does not depend on which tests ran before
    model = VAE({**TINY, "latent_dim": 1})
    x = (synthetic_digits(3)[0] > 0.5).astype(np.float32)
    with no_grad():
        iw, elbo = model.iw_log_likelihood(x, None, k=4000, generator=Generator(0))
        z = np.linspace(-10, 10, 4001, dtype=np.float32)
        logits = model.decode(Tensor(z[:, None])).data.reshape(len(z), 784)
        log_px_z = -(np.logaddexp(0, logits)[None] - x.reshape(3, 1, 784) * logits[None]).sum(axis=2)
        log_joint = log_px_z - 0.5 * (z ** 2 + math.log(2 * math.pi))
        top = log_joint.max(axis=1, keepdims=True)
        exact = (top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1) * (z[1] - z[0])))
    np.testing.assert_allclose(iw, exact, atol=0.05)
    assert (elbo < exact).all()     # the ELBO is a lower bound, and a strict one for a random encoder


def test_evaluate_reports_an_iw_bound_tighter_than_the_elbo_and_is_reproducible():
    model = VAE({**TINY, "iw_samples": 50})
    x, y = synthetic_digits(20)
    metrics = model.evaluate(x, y, Generator(0))
    assert metrics["nll_nats"] < metrics["neg_elbo"]
    assert metrics["examples"] == 20 and metrics["iw_samples"] == 50
    assert model.evaluate(x, y, Generator(0)) == metrics
    assert VAE({**TINY, "iw_samples": 50, "eval_examples": 5}).evaluate(x, y)["examples"] == 5


@pytest.mark.parametrize("config", [{"variant": "mlp"}, {"variant": "mlp", "conditional": True},
                                    {"variant": "conv"}, {"variant": "conv", "conditional": True}],
                         ids=["mlp", "mlp-conditional", "conv", "conv-conditional"])
def test_training_a_tiny_vae_lowers_its_negative_elbo(config):
    model = VAE({**TINY, **config, "lr": 3e-3, "iw_samples": 1})
    x, y = synthetic_digits()
    before = model.evaluate(x, y, Generator(0))["neg_elbo"]
    optimizers = model.make_optimizers()
    g = Generator(1)
    logs = [model.train_step(x, y, optimizers, g) for _ in range(30)]
    after = model.evaluate(x, y, Generator(0))["neg_elbo"]
    assert all(np.isfinite(log["loss"]) and log["loss"] == pytest.approx(log["recon"] + log["kl"], rel=1e-5)
               for log in logs)
    assert after < 0.8 * before, (before, after)


def test_sampling_shapes_labels_and_reproducibility():
    model = VAE({**TINY, "conditional": True})
    labels = np.array([0, 3, 3, 9])
    a = model.sample(4, labels, Generator(2))
    assert a.shape == (4, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, model.sample(4, labels, Generator(2)))
    cold = model.sample(4, labels, Generator(2), temperature=0.0)
    np.testing.assert_array_equal(cold[1], cold[2])            # z = 0 and the same label: the same image
    assert not np.array_equal(cold[0], cold[1])
    binary = model.sample(4, labels, Generator(2), binary=True)
    assert set(np.unique(binary)) <= {0.0, 1.0}


def test_bad_inputs_get_clear_errors():
    model = VAE({**TINY, "conditional": True})
    x, y = synthetic_digits(4)
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        model.train_step(x.reshape(4, 784), y, model.make_optimizers(), Generator(0))
    with pytest.raises(ShapeError, match="labels must be"):
        model.evaluate(x, y[:3])
    with pytest.raises(MinigenError, match="pass labels"):
        model.sample(3)
    with pytest.raises(MinigenError, match=r"labels must be in \[0, 10\)"):
        model.sample(2, np.array([-1, 2]))
    with pytest.raises(MinigenError, match="variant"):
        VAE({"variant": "transformer"})
    with pytest.raises(MinigenError, match="unknown hyper-parameter 'latent_dims'"):   # a typo is not ignored
        VAE({"latent_dims": 2})


def test_figures_for_a_conditional_2d_latent_model(tmp_path):
    model = VAE({**TINY, "latent_dim": 2, "conditional": True})
    x, y = synthetic_digits(40)
    paths = model.figures(str(tmp_path), x, y, Generator(0))
    names = sorted(os.path.basename(p) for p in paths)
    assert names == ["interpolation.png", "latent_manifold.png", "latent_scatter.png", "reconstructions.png",
                     "samples.png"]
    assert all(os.path.getsize(p) > 1000 for p in paths)
