"""DCGAN: each player's step does its job, seeded sampling, the collapse warning, the interface."""
import warnings

import numpy as np
import pytest

from minigen import ops
from minigen.errors import CheckpointError, DTypeError, MinigenError, ShapeError
from minigen.models import gan as gan_module
from minigen.models import get_family
from minigen.models.gan import GAN
from minigen.nn import Module, Parameter
from minigen.optim import Adam
from minigen.random import Generator
from minigen.serialize import load, save
from minigen.tensor import Tensor, no_grad
from tests.models.synthetic import bar_digits

SMALL = {"batch_size": 8, "collapse_check_every": 0, "eval_examples": 8, "collapse_samples": 10}


def small(**overrides):
    return GAN({**SMALL, **overrides}, generator=Generator(0))


digits = bar_digits


def _d_loss(model, real, fake, labels):
    with no_grad():
        return (ops.binary_cross_entropy_with_logits(model.D(real, labels), np.ones(len(real), np.float32))
                + ops.binary_cross_entropy_with_logits(model.D(fake, labels), np.zeros(len(fake), np.float32))).item()


@pytest.mark.parametrize("conditional", [False, True])
def test_one_discriminator_step_lowers_its_loss_on_the_same_batch(conditional):
    m = small(conditional=conditional)
    x, y = digits(8)
    labels = y if conditional else None
    real = Tensor(2 * x - 1)
    fake = m.G(Tensor(Generator(1).normal((8, 100))), labels).detach()
    before = _d_loss(m, real, fake, labels)
    stats = m.discriminator_step(real, fake, labels, m.make_optimizers()["discriminator"])
    assert stats["d_loss"] == pytest.approx(before, rel=1e-5)       # reported loss is the pre-step one
    assert _d_loss(m, real, fake, labels) < before - 1e-3


@pytest.mark.parametrize("conditional", [False, True])
def test_one_generator_step_raises_the_discriminators_score_of_its_samples(conditional):
    m = small(conditional=conditional)
    y = np.arange(8) % 10 if conditional else None
    z = Tensor(Generator(2).normal((8, 100)))
    d_weights = {n: p.data.copy() for n, p in m.D.named_parameters()}

    def score():
        with no_grad():
            return float(m.D(m.G(z, y), y).data.mean())
    before = score()
    m.generator_step(m.G(z, y), y, m.make_optimizers()["generator"])
    assert score() > before + 1e-3
    for n, p in m.D.named_parameters():          # D is only the judge in G's step
        np.testing.assert_array_equal(p.data, d_weights[n])
        assert p.requires_grad and p.grad is None


def test_train_step_logs_both_players():
    m = small()
    x, y = digits(8)
    opt = m.make_optimizers()
    log = m.train_step(x, y, opt, Generator(0))
    assert set(log) == {"loss", "d_loss", "g_loss", "d_real_acc", "d_fake_acc"}
    assert log["loss"] == log["d_loss"] and 0 <= log["d_real_acc"] <= 1 and 0 <= log["d_fake_acc"] <= 1
    assert opt["generator"].step_count == opt["discriminator"].step_count == 1
    for _ in range(3):
        log = m.train_step(x, y, opt, Generator(1))
    assert all(np.isfinite(v) for v in log.values())


def test_sampling_is_seeded_in_range_and_leaves_the_model_as_it_was():
    m = small()
    m.train_step(*digits(8), m.make_optimizers(), Generator(0))
    running = m.G.bn0.running_mean.data.copy()
    a = m.sample(5, generator=Generator(3))
    assert a.shape == (5, 1, 28, 28) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, m.sample(5, generator=Generator(3)))
    assert not np.array_equal(a, m.sample(5, generator=Generator(4)))
    assert m.G.training                                               # mode restored
    np.testing.assert_array_equal(m.G.bn0.running_mean.data, running)  # no statistics updated
    # temperature 0 puts every sample at z = 0
    still = m.sample(3, generator=Generator(5), temperature=0.0)
    np.testing.assert_array_equal(still[0], still[2])


def test_conditional_samples_depend_on_the_label():
    m = small(conditional=True)
    a = m.sample(2, np.array([1, 1]), Generator(6))
    b = m.sample(2, np.array([1, 7]), Generator(6))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[1], b[1])


def test_collapse_warning(monkeypatch):
    m = small(collapse_check_every=2)
    x, y = digits(8)
    opt = m.make_optimizers()
    seen = []
    monkeypatch.setattr(gan_module, "distinct_digits", lambda images: seen.append(len(images)) or 3)
    m.train_step(x, y, opt, Generator(0))
    assert seen == []                                       # only every 2nd step
    with pytest.warns(UserWarning, match="mode collapse at step 2: .* only 3 different digits in 10"):
        m.train_step(x, y, opt, Generator(1))
    assert seen == [10]
    monkeypatch.setattr(gan_module, "distinct_digits", lambda images: 9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.train_step(x, y, opt, Generator(2))
        m.train_step(x, y, opt, Generator(3))
    monkeypatch.setattr(gan_module, "distinct_digits", lambda images: None)    # no yardstick: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.warn_if_collapsed(6) is None


def test_bad_requests_get_clear_errors():
    m = small()
    with pytest.raises(MinigenError, match="only 'temperature'"):
        m.sample(2, steps=50)
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        m.train_step(np.zeros((2, 784), np.float32), np.zeros(2, np.int64), m.make_optimizers(), Generator(0))
    with pytest.raises(DTypeError, match=r"floats in \[0, 1\]"):
        m.train_step(np.zeros((2, 1, 28, 28), np.uint8), np.zeros(2, np.int64), m.make_optimizers(), Generator(0))
    with pytest.raises(MinigenError, match="unknown hyper-parameter 'latent'"):
        GAN({"latent": 3})
    c = small(conditional=True)
    with pytest.raises(MinigenError, match="pass labels"):
        c.sample(2)
    with pytest.raises(ShapeError, match="labels must be an integer array"):
        c.sample(2, np.array([0.5, 1.0]))


def test_interface_architecture_evaluate_and_figures(tmp_path):
    assert get_family("gan") is GAN
    cfg = GAN.default_config()
    assert (cfg["lr"], cfg["beta1"], cfg["beta2"], cfg["latent_dim"]) == (2e-4, 0.5, 0.999, 100)
    m = small(conditional=True)
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert shapes["G.fc.weight"] == (128 * 7 * 7, 150) and shapes["G.deconv1.weight"] == (128, 64, 4, 4)
    assert shapes["D.conv1.weight"] == (64, 2, 4, 4) and shapes["D.fc.weight"] == (1, 6272)
    assert abs(m.D.conv2.weight.data.std() - 0.02) < 0.002          # DCGAN init
    opts = m.make_optimizers()
    assert opts["generator"].betas == (0.5, 0.999) and opts["discriminator"].lr == 2e-4
    x, y = digits(8)
    result = m.evaluate(x, y, Generator(0))
    assert {"d_loss", "d_real_acc", "d_fake_acc"} <= set(result) and result["d_loss"] > 0
    path = m.figures(str(tmp_path), x, y, Generator(0))[0]
    assert path.endswith("gan_latent.png") and (tmp_path / "gan_latent.png").stat().st_size > 1000


def test_a_conditional_gan_warns_of_the_digits_its_samples_fail_to_cover(monkeypatch):
    m = small(conditional=True, collapse_check_every=2, collapse_samples=20)
    x, y = digits(8)
    opt = m.make_optimizers()
    seen = []

    def coverage(images, labels, reference, reference_labels):
        seen.append((len(images), np.bincount(reference_labels, minlength=10).max()))
        return {digit: 0.05 if digit in (3, 7) else 0.9 for digit in range(10)}
    monkeypatch.setattr(gan_module, "digit_coverage", coverage)
    monkeypatch.setattr(gan_module, "distinct_digits", lambda images: pytest.fail("the fallback was used"))
    m.train_step(x, y, opt, Generator(0))
    with pytest.warns(UserWarning, match=r"step 2: the samples asked for digit\(s\) 3, 7 cover little .*"
                                         r"coverage 0.05, 0.05, expected at least 0.25"):
        m.train_step(x, y, opt, Generator(1))
    assert seen == [(20, 2)]               # real training digits kept, at most 20 / 10 of each
    assert set(m.reference_labels) <= set(y) and len(m.reference_images) == len(m.reference_labels) <= 20
    monkeypatch.setattr(gan_module, "digit_coverage", lambda *args: {d: 0.9 for d in range(10)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.warn_if_collapsed(4) == {d: 0.9 for d in range(10)}
    # too few real digits yet (or no yardstick): the distinct-digit count decides
    monkeypatch.setattr(gan_module, "digit_coverage", lambda *args: None)
    monkeypatch.setattr(gan_module, "distinct_digits", lambda images: 2)
    with pytest.warns(UserWarning, match="only 2 different digits in 20"):
        assert m.warn_if_collapsed(6) == 2


def test_digit_coverage_of_real_digits_is_high_and_of_one_repeated_digit_low(monkeypatch):
    """With the yardstick replaced by a stand-in whose features are the pixels."""
    from minigen import metrics

    class Pixels:
        def features(self, images):
            return np.asarray(images).reshape(len(images), -1)
    monkeypatch.setattr(metrics, "yardstick", lambda train_if_missing: Pixels())

    def noisy_digits(n, seed):            # bar_digits come in 16 exact copies: noise makes every one its own
        images, labels = digits(n, seed)
        return images + 0.1 * Generator(seed).normal(images.shape), labels
    x, y = noisy_digits(400, 0)
    fakes, labels = noisy_digits(400, 1)
    coverage = gan_module.digit_coverage(fakes, labels, x, y)
    assert sorted(coverage) == sorted(set(y)) and min(coverage.values()) > 0.5
    collapsed = np.stack([x[y == label][0] + 0.01 * i for i, label in enumerate(labels)])
    low = gan_module.digit_coverage(collapsed.astype(np.float32), labels, x, y)
    assert max(low.values()) < 0.3
    assert gan_module.digit_coverage(fakes[:5], labels[:5], x, y) is None      # too few of each digit

# --- the knobs of later GANs: hinge loss, spectral norm, TTUR, EMA of G ----------------------------------
class FixedLogits(Module):
    """A stand-in D whose logits are given (plus a trainable 0 times the image, so gradients flow)."""

    def __init__(self, *logits):
        self.queue = [np.asarray(v, np.float32) for v in logits]
        self.w = Parameter(np.zeros(1, np.float32))

    def forward(self, x, labels=None):
        return Tensor(self.queue.pop(0)) + self.w * x.reshape(x.shape[0], -1).sum(axis=1)


def test_hinge_losses_against_a_hand_computed_case():
    m = small(loss="hinge")
    x = Tensor(np.zeros((3, 1, 28, 28), np.float32))
    # D: relu(1 - [2, 0.5, -1]) = [0, 0.5, 2] -> 5/6; relu(1 + [-2, 0, 0.5]) = [0, 1, 1.5] -> 5/6
    m.D = FixedLogits([2.0, 0.5, -1.0], [-2.0, 0.0, 0.5])
    stats = m.discriminator_step(x, x, None, Adam(m.D.parameters()))
    assert stats["d_loss"] == pytest.approx(5 / 3, rel=1e-6)
    assert stats["d_real_acc"] == pytest.approx(2 / 3) and stats["d_fake_acc"] == pytest.approx(1 / 3)
    m.D = FixedLogits([-2.0, 0.5, 3.0])                # G: -mean(D(G(z))) = -0.5
    fake = Parameter(np.zeros((3, 1, 28, 28), np.float32))       # stands for G's output, with a graph
    assert m.generator_step(fake, None, Adam([fake])) == pytest.approx(-0.5, rel=1e-6)


def test_knobs_build_what_they_say():
    m = small(spectral_norm=True, d_batchnorm=False, lr=1e-4, lr_d=4e-4)
    assert m.D.bn2 is None and m.D.conv2.bias is not None
    assert {"D.conv1.weight_u", "D.conv2.weight_u", "D.fc.weight_u"} <= set(m.state_dict())
    opts = m.make_optimizers()
    assert (opts["generator"].lr, opts["discriminator"].lr) == (1e-4, 4e-4)
    assert small().D.conv1.weight_u is None and small().ema is None        # defaults: today's DCGAN
    with pytest.raises(MinigenError, match="loss"):
        small(loss="wasserstein")


def test_samples_come_from_the_ema_of_the_generator():
    m = small(ema_decay=0.9)
    x, y = digits(8)
    opt = m.make_optimizers()
    for i in range(3):
        m.train_step(x, y, opt, Generator(i))
    own = {n: p.data.copy() for n, p in m.G.named_parameters()}
    stats = {n: b.data.copy() for n, b in m.G.named_buffers()}
    z = Generator(5).normal((4, 100))
    with no_grad(), gan_module._eval_mode(m.G):
        raw = np.clip((m.G(Tensor(z)).data + 1) / 2, 0, 1)
        for n, p in m.G.named_parameters():
            p.data = m.ema.shadow[n].copy()
        for n, b in m.G.named_buffers():
            b.data = m.ema.shadow[n].copy()
        averaged = np.clip((m.G(Tensor(z)).data + 1) / 2, 0, 1)
        for n, p in m.G.named_parameters():
            p.data = own[n]
        for n, b in m.G.named_buffers():
            b.data = stats[n]
    out = m.generate(z)
    np.testing.assert_allclose(out, averaged, atol=1e-6)
    assert np.abs(out - raw).max() > 1e-3                                   # not G's own weights
    for n, p in m.G.named_parameters():                                     # G's own weights are back
        np.testing.assert_array_equal(p.data, own[n])
    # the warm-up: after 3 steps the decay is min(0.9, 4 / 13)
    assert m.ema.decay == pytest.approx(4 / 13)


def test_checkpoint_round_trip_keeps_the_ema_and_the_power_iteration(tmp_path):
    config = {"ema_decay": 0.99, "spectral_norm": True, "loss": "hinge"}
    m = small(**config)
    x, y = digits(8)
    opt = m.make_optimizers()
    for i in range(3):
        m.train_step(x, y, opt, Generator(i))
    save({"model": m.state_dict(), "extra": m.extra_state()}, tmp_path / "gan.ckpt")
    back = load(tmp_path / "gan.ckpt")
    fresh = GAN({**SMALL, **config}, generator=Generator(7))
    fresh.load_state_dict(back["model"])
    fresh.load_extra_state(back["extra"])
    np.testing.assert_array_equal(fresh.D.conv1.weight_u.data, m.D.conv1.weight_u.data)
    np.testing.assert_array_equal(fresh.sample(4, generator=Generator(3)), m.sample(4, generator=Generator(3)))
    assert fresh.ema.decay == m.ema.decay
    with pytest.raises(CheckpointError, match="no EMA"):
        fresh.load_extra_state({k: v for k, v in back["extra"].items() if k != "ema"})


def test_tiny_training_with_every_knob_plays_the_game():
    """Hinge + spectral norm without D's BatchNorm + TTUR + EMA on synthetic digits: D learns to tell
    them apart (its hinge loss falls from ~2, the value at D = 0), G answers (its loss -mean D(G(z)) is
    not left to run away), everything stays finite, and samples are images."""
    m = GAN({**SMALL, "batch_size": 16, "loss": "hinge", "spectral_norm": True, "d_batchnorm": False,
             "lr": 2e-4, "lr_d": 8e-4, "ema_decay": 0.999}, generator=Generator(0))
    x, y = digits(16)
    opt = m.make_optimizers()
    logs = [m.train_step(x, y, opt, Generator(i)) for i in range(30)]
    d = [r["d_loss"] for r in logs]
    assert all(np.isfinite(v) for r in logs for v in r.values())
    assert d[0] == pytest.approx(2, abs=0.3) and np.mean(d[-5:]) < d[0] - 0.3
    assert all(abs(r["g_loss"]) < 10 for r in logs)              # SN keeps D's scores bounded
    for layer in (m.D.conv1, m.D.conv2, m.D.fc):                 # D's layers stay 1-Lipschitz
        w = layer.weight.data.reshape(len(layer.weight.data), -1)
        sigma = float(layer.weight_u.data @ w @ (w.T @ layer.weight_u.data)) / np.linalg.norm(w.T @ layer.weight_u.data)
        assert sigma == pytest.approx(np.linalg.svd(w, compute_uv=False)[0], rel=0.05)
    s = m.sample(4, generator=Generator(1))
    assert s.shape == (4, 1, 28, 28) and 0 <= s.min() and s.max() <= 1


def test_width_sets_both_networks_channels_and_64_is_the_dcgan_of_before():
    assert sum(p.data.size for p in small().parameters()) == 898_370      # DCGAN's count before the knob
    m = small(width=16, conditional=True, spectral_norm=True, d_batchnorm=False, loss="hinge")
    shapes = {n: p.shape for n, p in m.named_parameters()}
    assert shapes["G.fc.weight"] == (32 * 7 * 7, 150) and shapes["G.bn0.weight"] == (32,)
    assert shapes["G.deconv1.weight"] == (32, 16, 4, 4) and shapes["G.deconv2.weight"] == (16, 1, 4, 4)
    assert shapes["D.conv1.weight"] == (16, 2, 4, 4) and shapes["D.conv2.weight"] == (32, 16, 4, 4)
    assert shapes["D.fc.weight"] == (1, 32 * 7 * 7)
    # the memory estimate follows the width: its parameter count is the model's to within the biases
    params, _ = m.hparams.memory_floats()
    assert params == pytest.approx(sum(p.data.size for p in m.parameters()), rel=0.01)
    assert small(width=32).hparams.memory_floats()[1] < small().hparams.memory_floats()[1]
    with pytest.raises(MinigenError, match="width"):
        small(width=0)


def test_a_narrow_gan_trains_and_round_trips_through_a_checkpoint(tmp_path):
    config = {"width": 16, "ema_decay": 0.99, "spectral_norm": True, "d_batchnorm": False, "loss": "hinge"}
    m = small(**config)
    x, y = digits(8)
    opt = m.make_optimizers()
    logs = [m.train_step(x, y, opt, Generator(i)) for i in range(2)]
    assert all(np.isfinite(v) for r in logs for v in r.values())
    save({"model": m.state_dict(), "extra": m.extra_state()}, tmp_path / "gan.ckpt")
    back = load(tmp_path / "gan.ckpt")
    fresh = GAN({**SMALL, **config}, generator=Generator(7))
    fresh.load_state_dict(back["model"])
    fresh.load_extra_state(back["extra"])
    np.testing.assert_array_equal(fresh.sample(4, generator=Generator(3)), m.sample(4, generator=Generator(3)))
    with pytest.raises(CheckpointError):            # a width-64 model cannot take the width-16 weights
        small(**{**config, "width": 64}).load_state_dict(back["model"])


def test_the_pytorch_twin_copies_a_narrow_gan_and_trains_the_same_numbers():
    pytest.importorskip("torch")
    from benchmarks.twins import gan as twin_module
    m = small(width=16, conditional=True, loss="hinge", spectral_norm=True, d_batchnorm=False, lr_d=8e-4,
              ema_decay=0.9)
    twin = twin_module.build(m)
    x, y = digits(8)
    ours, theirs = m.make_optimizers(), twin_module.make_optimizers(twin, m.config)
    for i in range(2):
        a, b = m.train_step(x, y, ours, Generator(i)), twin_module.train_step(twin, theirs, x, y, Generator(i))
        assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-5)
        assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(m.sample(4, np.arange(4), Generator(3)),
                               twin_module.sample(twin, 4, np.arange(4), Generator(3)), atol=1e-5)
