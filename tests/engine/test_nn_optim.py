"""Modules, optimisers, seeding and checkpoint files."""
import math
import os
import stat

import numpy as np
import pytest

import minigen
from minigen import nn, ops, optim
from minigen.errors import CheckpointError
from minigen.serialize import load, save
from minigen.tensor import Tensor


class TwoLayer(nn.Module):
    def __init__(self, generator=None):
        self.hidden = nn.Linear(4, 8, generator=generator)
        self.blocks = [nn.Linear(8, 8, generator=generator), nn.Linear(8, 3, generator=generator)]
        self.norm = nn.BatchNorm(3)
        self.drop = nn.Dropout(0.5, generator=generator)

    def forward(self, x):
        return self.blocks[1](self.drop(ops.relu(self.blocks[0](ops.relu(self.hidden(x))))))


def test_named_parameters_and_buffers_walk_the_tree():
    names = [n for n, _ in TwoLayer().named_parameters()]
    assert names == ["hidden.weight", "hidden.bias", "blocks.0.weight", "blocks.0.bias", "blocks.1.weight",
                     "blocks.1.bias", "norm.weight", "norm.bias"]
    assert [n for n, _ in TwoLayer().named_buffers()] == ["norm.running_mean", "norm.running_var"]
    assert TwoLayer().num_parameters() == 4 * 8 + 8 + 8 * 8 + 8 + 8 * 3 + 3 + 3 + 3


def test_state_dict_round_trip_through_a_file(tmp_path):
    a, b = TwoLayer(minigen.Generator(1)), TwoLayer(minigen.Generator(2))
    save({"model": a.state_dict()}, tmp_path / "m.npz")
    b.load_state_dict(load(tmp_path / "m.npz")["model"])
    for (_, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        np.testing.assert_array_equal(pa.data, pb.data)


def test_load_state_dict_names_every_bad_key():
    model = TwoLayer()
    state = model.state_dict()
    del state["hidden.bias"]
    state["extra.weight"] = np.zeros(2)
    state["blocks.1.weight"] = np.zeros((2, 2))
    before = model.hidden.weight.data.copy()
    with pytest.raises(CheckpointError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "missing keys: hidden.bias" in msg and "unexpected keys: extra.weight" in msg
    assert "blocks.1.weight: checkpoint (2, 2) vs model (3, 8)" in msg
    np.testing.assert_array_equal(model.hidden.weight.data, before)   # nothing was half-loaded


def test_train_eval_switch_reaches_every_submodule():
    model = TwoLayer().eval()
    assert not any(m.training for m in model.modules())
    x = Tensor(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(model(x).data, model(x).data)   # no dropout in eval


def test_sgd_momentum_matches_hand_computation():
    p = nn.Parameter(np.array([1.0, -2.0], np.float32))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.array([1.0, 1.0], np.float32)
    opt.step()                                  # v = g; p = p - 0.1 g
    np.testing.assert_allclose(p.data, [0.9, -2.1], rtol=1e-6)
    p.grad = np.array([2.0, 0.0], np.float32)
    opt.step()                                  # v = 0.9 v + g = [2.9, 0.9]
    np.testing.assert_allclose(p.data, [0.9 - 0.29, -2.1 - 0.09], rtol=1e-6)


@pytest.mark.parametrize("cls, wd", [(optim.Adam, 0.0), (optim.Adam, 0.1), (optim.AdamW, 0.1)])
def test_adam_matches_hand_computation(cls, wd):
    w0, lr, (b1, b2), eps = 0.5, 0.01, (0.9, 0.999), 1e-8
    p = nn.Parameter(np.array([w0]))
    opt = cls([p], lr=lr, weight_decay=wd)
    w, m, v = w0, 0.0, 0.0
    for step, g in enumerate([0.3, -0.1, 0.7], start=1):
        p.grad = np.array([g])
        opt.step()
        if cls is optim.AdamW:
            w *= 1 - lr * wd
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w -= lr / (1 - b1 ** step) * m / (math.sqrt(v) / math.sqrt(1 - b2 ** step) + eps)
        assert p.data[0] == pytest.approx(w, rel=1e-12)


def test_optimizer_state_round_trip(tmp_path):
    p = nn.Parameter(np.ones(3))
    opt = optim.Adam([p])
    p.grad = np.ones(3)
    opt.step()
    save({"opt": opt.state_dict()}, tmp_path / "o.npz")
    q = nn.Parameter(np.ones(3))
    opt2 = optim.Adam([q])
    opt2.load_state_dict(load(tmp_path / "o.npz")["opt"])
    assert opt2.step_count == 1
    np.testing.assert_array_equal(opt2.state["m"][0], opt.state["m"][0])
    with pytest.raises(CheckpointError, match="from a Adam optimiser"):
        optim.SGD([q], lr=0.1).load_state_dict(opt.state_dict())


def test_clip_grad_norm():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert optim.clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    assert np.sqrt((a.grad ** 2).sum() + (b.grad ** 2).sum()) == pytest.approx(1.0, rel=1e-5)


def test_ema_tracks_weights():
    model = nn.Linear(2, 1)
    ema = optim.EMA(model, decay=0.5)
    w0 = model.weight.data.copy()
    model.weight.data = w0 + 2
    ema.update(model)
    np.testing.assert_allclose(ema.shadow["weight"], w0 + 1, rtol=1e-6)     # float32 weights
    ema.copy_to(model)
    np.testing.assert_allclose(model.weight.data, w0 + 1, rtol=1e-6)


def test_lr_factor_warms_up_linearly_then_follows_the_cosine_to_zero():
    # warm-up alone: (step + 1) / warmup_steps, then 1
    assert [optim.lr_factor(s, 4, 0.0, "none") for s in (0, 1, 3, 4, 100)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert optim.lr_factor(0, 0, 0.0, "none") == 1.0
    # cosine: 1 at the start of the budget, 1/2 halfway, 0 at its end (and past it)
    assert optim.lr_factor(50, 0, 0.0, "cosine") == pytest.approx(1.0)
    assert optim.lr_factor(50, 0, 0.5, "cosine") == pytest.approx(0.5)
    assert optim.lr_factor(50, 0, 0.25, "cosine") == pytest.approx((1 + np.cos(np.pi / 4)) / 2)
    assert optim.lr_factor(50, 0, 1.0, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert optim.lr_factor(50, 0, 1.7, "cosine") == pytest.approx(0.0, abs=1e-12)
    # both: the warm-up ramp times the cosine
    assert optim.lr_factor(1, 4, 0.5, "cosine") == pytest.approx(0.5 * 0.5)
    with pytest.raises(ValueError, match="decay must be one of none, cosine"):
        optim.lr_factor(0, 0, 0.0, "linear")


def test_ema_decay_warms_up_from_averaging_everything_to_the_set_decay():
    # after 0 steps the shadow takes 9/10 of the new weights; the decay then grows towards max_decay
    assert optim.ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert optim.ema_decay_at(1, 0.999) == pytest.approx(2 / 11)
    assert optim.ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert optim.ema_decay_at(100_000, 0.999) == 0.999
    decays = [optim.ema_decay_at(s, 0.99) for s in range(2000)]
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.99


def test_same_seed_gives_bit_identical_training():
    def run(seed):
        minigen.manual_seed(seed)
        model = TwoLayer()
        opt = optim.Adam(model.parameters())
        x = minigen.randn(16, 4)
        for _ in range(3):
            opt.zero_grad()
            ops.mse_loss(model(x), Tensor(np.zeros((16, 3), np.float32))).backward()
            opt.step()
        return model.state_dict()
    a, b, c = run(3), run(3), run(4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_save_load_nested_values(tmp_path):
    obj = {"model": {"w": np.arange(3.0)}, "step": 7, "rng": minigen.Generator(5).get_state(), "name": "vae",
           "history": [1.5, 2.5], "none": None}
    save(obj, tmp_path / "c.npz")
    back = load(tmp_path / "c.npz")
    np.testing.assert_array_equal(back["model"]["w"], obj["model"]["w"])
    assert back["rng"] == obj["rng"] and back["step"] == 7 and back["history"] == [1.5, 2.5]
    assert back["none"] is None


def test_failed_write_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    save({"w": np.ones(3)}, path)

    def exploding_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(CheckpointError, match="No space left on device.*unchanged"):
        save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(load(path)["w"], np.ones(3))
    assert os.listdir(tmp_path) == ["ckpt.npz"]      # no temp file left behind


@pytest.mark.parametrize("damage, pattern", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated or corrupt"),
    (lambda p: p.write_bytes(b"not a zip file at all"), "truncated or corrupt"),
    (lambda p: np.savez(p, w=np.ones(2)), "not a minigen checkpoint"),
    (lambda p: np.savez(p, __format__=np.array(99), __meta__=np.array("{}")), "format version 99"),
])
def test_bad_checkpoints_are_named(tmp_path, damage, pattern):
    path = tmp_path / "c.npz"
    save({"w": np.ones(100)}, path)
    damage(path)
    with pytest.raises(CheckpointError, match=pattern) as err:
        load(path)
    assert "c.npz" in str(err.value)


def test_manual_seed_rejects_bad_seeds():
    with pytest.raises(ValueError, match="non-negative integer"):
        minigen.manual_seed(-1)


def test_atomic_write_gives_the_permissions_of_any_new_file(tmp_path):
    from minigen.serialize import atomic_write
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "report.html", lambda f: f.write(b"<p>hi</p>"))
        open(tmp_path / "plain.html", "wb").close()
    finally:
        os.umask(old)
    mode = lambda name: stat.S_IMODE(os.stat(tmp_path / name).st_mode)   # noqa: E731
    assert mode("report.html") == mode("plain.html") == 0o644
    assert (tmp_path / "report.html").read_bytes() == b"<p>hi</p>"


def test_ema_with_buffers_averages_batchnorm_statistics_and_swaps_back():
    bn = nn.BatchNorm(2)
    ema = optim.EMA(bn, 0.5, buffers=True)
    assert set(ema.shadow) == {"weight", "bias", "running_mean", "running_var"}
    bn(Tensor(np.array([[1.0, 3.0], [3.0, 5.0]], np.float32)))       # running_mean 0 -> 0.1 * [2, 4]
    bn.weight.data = np.array([3.0, 3.0], np.float32)
    ema.update(bn)
    np.testing.assert_allclose(ema.shadow["running_mean"], [0.1, 0.2])
    np.testing.assert_allclose(ema.shadow["weight"], [2.0, 2.0])
    with ema.applied_to(bn):
        np.testing.assert_allclose(bn.running_mean.data, [0.1, 0.2])
        np.testing.assert_allclose(bn.weight.data, [2.0, 2.0])
    np.testing.assert_allclose(bn.running_mean.data, [0.2, 0.4])      # the model's own state is back
    np.testing.assert_allclose(bn.weight.data, [3.0, 3.0])
    assert set(optim.EMA(bn, 0.5).shadow) == {"weight", "bias"}       # default: parameters only
