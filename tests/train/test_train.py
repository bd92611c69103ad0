"""The shared trainer: run directories, bit-identical resume, interrupts, NaN guards, bad input.

A tiny family ("toy", registered only here) keeps these tests fast; the same
behaviour is checked on real families in their own test files.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from minigen import nn, ops, optim
from minigen.config import HyperParameters, batch_size_knob, conditional_knob, knob, lr_knob
from minigen.errors import CheckpointError, ConfigError, MinigenError
from minigen.models import get_family
from minigen.models.base import FAMILIES, GenerativeModel, register_family
from minigen.rundir import STATE
from minigen.serialize import save
from minigen.tensor import Tensor
from minigen.train import (CHECKPOINT, LOCK, METRICS, RunLock, TrainingStopped, TrainOptions, load_run, read_metrics,
                           train)

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
DATA_DIR = SHARED_MNIST if os.path.isdir(SHARED_MNIST) else None


@dataclass(frozen=True)
class ToyConfig(HyperParameters):
    lr: float = lr_knob(1e-2)
    batch_size: int = batch_size_knob(100)
    conditional: bool = conditional_knob(True)
    hidden: int = knob(16, 1, 1024, "width of the label embedding")

    def memory_floats(self):
        return 10 * self.hidden + self.hidden * 785, 2 * (self.hidden + 784)


@register_family("toy")
class Toy(GenerativeModel):
    """Per-pixel Bernoulli logits from a small MLP of the label, plus noise: just enough to train."""

    hooks = {}          # test hooks: step number -> callable run inside train_step
    Config = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(10, self.config["hidden"])
        self.out = nn.Linear(self.config["hidden"], 28 * 28)
        self.steps = 0

    def make_optimizers(self):
        return {"model": optim.Adam(self.parameters(), lr=self.config["lr"])}

    def logits(self, y):
        return self.out(ops.relu(self.embed(y)))

    def train_step(self, x, y, optimizers, generator):
        self.steps += 1
        noise = generator.normal((len(x), 28 * 28), std=0.01)      # uses the model's random stream
        target = Tensor((x.reshape(len(x), -1) > 0.5).astype(np.float32))
        loss = ops.binary_cross_entropy_with_logits(self.logits(y) + Tensor(noise), target, "sum") / len(x)
        if self.steps in Toy.hooks:
            loss = Toy.hooks[self.steps](loss)
        optimizers["model"].zero_grad()
        loss.backward()
        optimizers["model"].step()
        return {"loss": loss.item()}

    def sample(self, n, labels=None, generator=None, **options):
        return ops.sigmoid(self.logits(labels)).data.reshape(n, 1, 28, 28)

    def evaluate(self, x, y, generator=None):
        target = Tensor((x.reshape(len(x), -1) > 0.5).astype(np.float32))
        return {"nll_nats": ops.binary_cross_entropy_with_logits(self.logits(y), target, "sum").item() / len(x)}


@pytest.fixture(autouse=True)
def clear_hooks():
    Toy.hooks = {}
    yield
    Toy.hooks = {}


def options(tmp_path, name="run", **kw):
    base = dict(model="toy", out=str(tmp_path / name), dataset="mnist-5k", data_dir=DATA_DIR, epochs=2, conditional=True,
                eval_n=50, n_samples=10, progress=False, log_every=5)
    base.update(kw)
    return TrainOptions(**base)


def weights(run_dir):
    model, _, _ = load_run(run_dir)
    return model.state_dict()


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_run_directory_contents_and_loss_goes_down(tmp_path):
    model, summary = train(options(tmp_path))
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", CHECKPOINT, "samples.png", "loss.png", "summary.json"):
        assert (run / name).exists(), name
    steps = [r for r in read_metrics(run) if r["kind"] == "step"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert summary["epochs"] == 2 and "nll_nats" in summary["test"]
    assert json.loads((run / "config.json").read_text())["model"] == "toy"


def test_resume_after_one_epoch_is_bit_identical(tmp_path):
    train(options(tmp_path, "straight", epochs=2))
    train(options(tmp_path, "split", epochs=1))
    train(options(tmp_path, "split", epochs=2), resume=True)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "split"))


def test_interrupt_mid_epoch_checkpoints_and_resumes_bit_identically(tmp_path):
    train(options(tmp_path, "straight"))
    Toy.hooks = {7: lambda loss: (os.kill(os.getpid(), signal.SIGINT), loss)[1]}
    with pytest.raises(TrainingStopped, match=r"interrupted at epoch 1, step 7.*--resume") as stopped:
        train(options(tmp_path, "interrupted"))
    assert stopped.value.exit_status == 130
    Toy.hooks = {}
    train(options(tmp_path, "interrupted"), resume=True)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "interrupted"))


class Killed(BaseException):
    """Stands for kill -9 in-process: nothing in train() may catch it and save."""


def kill_at(step):
    def hook(loss):
        raise Killed(f"killed at step {step}")
    return {step: hook}


def test_checkpoints_within_an_epoch_resume_bit_identically(tmp_path):
    """checkpoint_minutes=0: a checkpoint after every step; a kill at step 13 (the 3rd of 10 steps of epoch 2)
    loses one step, and the resumed run ends with the same weights and the same metrics.jsonl (its epoch
    averages too)."""
    small = dict(checkpoint_minutes=0, train_n=1000, log_every=2)
    train(options(tmp_path, "straight", **small))
    Toy.hooks = kill_at(13)
    with pytest.raises(Killed):
        train(options(tmp_path, "killed", **small))
    Toy.hooks = {}
    ckpt = load_run(tmp_path / "killed", resuming=True)[2]
    assert (ckpt["epoch"], ckpt["step"], ckpt["epoch_count"]) == (1, 12, 2)
    assert json.loads((tmp_path / "killed" / STATE).read_text()) == {"state": "failed",
                                                                      "reason": "Killed: killed at step 13"}
    train(options(tmp_path, "killed", **small), resume=True)
    assert_same(weights(tmp_path / "straight"), weights(tmp_path / "killed"))
    assert read_metrics(tmp_path / "straight") == read_metrics(tmp_path / "killed")


def test_no_checkpoint_within_an_epoch_before_checkpoint_minutes(tmp_path):
    Toy.hooks = kill_at(13)
    with pytest.raises(Killed):
        train(options(tmp_path, "run"))              # the default: every 5 minutes, and the epoch takes less
    assert not (tmp_path / "run" / CHECKPOINT).exists()


def test_states_of_a_run(tmp_path):
    Toy.hooks = kill_at(8)                           # after the record of step 5
    with pytest.raises(Killed):
        train(options(tmp_path, "run", epochs=1))
    assert json.loads((tmp_path / "run" / STATE).read_text())["state"] == "failed"
    Toy.hooks = {}
    train(options(tmp_path, "run", epochs=1))       # never checkpointed: the same call starts it again
    assert json.loads((tmp_path / "run" / STATE).read_text()) == {"state": "finished", "reason": ""}
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and steps[0] == 5       # the first start's records were replaced


def test_second_interrupt_stops_at_once_and_keeps_last_checkpoint(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    before = weights(tmp_path / "run")

    def two_signals(loss):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return loss
    Toy.hooks = {3: two_signals}
    with pytest.raises(KeyboardInterrupt):
        train(options(tmp_path, "run", epochs=2), resume=True)
    assert_same(before, weights(tmp_path / "run"))   # the epoch-1 checkpoint is untouched


def test_sigterm_exit_status_is_143(tmp_path):
    Toy.hooks = {2: lambda loss: (os.kill(os.getpid(), signal.SIGTERM), loss)[1]}
    with pytest.raises(TrainingStopped) as stopped:
        train(options(tmp_path))
    assert stopped.value.exit_status == 143


def test_nan_loss_stops_naming_step_terms_and_parameter(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    before = weights(tmp_path / "run")
    Toy.hooks = {4: lambda loss: loss * float("nan")}
    with pytest.raises(TrainingStopped, match=r"step \d+ .*loss=nan.*first non-finite parameter or gradient: "
                                              r"embed.weight.*unchanged") as stopped:
        train(options(tmp_path, "run", epochs=2), resume=True)
    assert stopped.value.exit_status == 1
    assert_same(before, weights(tmp_path / "run"))


def test_run_directory_of_another_run_is_never_overwritten(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    with pytest.raises(MinigenError, match="already holds a 'toy' run.*--resume"):
        train(options(tmp_path, "run", epochs=1))
    cfg = tmp_path / "run" / "config.json"
    cfg.write_text(cfg.read_text().replace('"model": "toy"', '"model": "vae"'))
    with pytest.raises(MinigenError, match="belongs to a 'vae' run, not 'toy'"):
        train(options(tmp_path, "run", epochs=1), resume=True)


def test_truncated_checkpoint_is_named_on_resume(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    ckpt = tmp_path / "run" / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"checkpoint.npz: checkpoint is truncated or corrupt"):
        train(options(tmp_path, "run", epochs=2), resume=True)


@pytest.mark.parametrize("field, value, pattern", [
    ("epochs", 0, "--epochs must be a positive integer"),
    ("batch_size", -1, "--batch-size must be a positive integer"),
    ("model", "nosuch", "unknown model 'nosuch'"),
    ("warmup_steps", -1, "--warmup-steps must be a non-negative integer"),
    ("lr_decay", "linear", "--lr-decay must be one of none, cosine, got 'linear'"),
])
def test_bad_options(tmp_path, field, value, pattern):
    with pytest.raises(MinigenError, match=pattern):
        train(options(tmp_path, **{field: value}))


def test_unwritable_run_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(MinigenError, match="cannot write to run directory"):
        train(options(tmp_path, "file/run"))


def _lrs_per_step(tmp_path, monkeypatch, seconds_per_step, **kw):
    """The lr each train_step saw, with a fake clock that advances seconds_per_step per step."""
    import minigen.train
    clock = {"now": 0.0}
    monkeypatch.setattr(minigen.train.time, "perf_counter", lambda: clock["now"])
    lrs = []

    def tick(loss):
        clock["now"] += seconds_per_step
        return loss
    Toy.hooks = {k: tick for k in range(1, 1000)}
    original = Toy.train_step
    monkeypatch.setattr(Toy, "train_step", lambda self, x, y, opts, g: (lrs.append(opts["model"].lr),
                                                                         original(self, x, y, opts, g))[1])
    train(options(tmp_path, epochs=50, eval_n=0, n_samples=0, **kw))
    return lrs


def test_time_budgeted_cosine_schedule_ends_with_the_budget(tmp_path, monkeypatch):
    # 10 s budget, 1 s per step: step k starts at k s, so its progress is k / 10
    lrs = _lrs_per_step(tmp_path, monkeypatch, 1.0, max_seconds=10, lr_decay="cosine", warmup_steps=2)
    assert len(lrs) == 10
    assert lrs[0] == pytest.approx(1e-2 * 0.5)                       # warm-up: half the lr at step 0
    assert lrs[1] == pytest.approx(1e-2 * (1 + np.cos(np.pi * 0.1)) / 2)
    assert lrs[5] == pytest.approx(1e-2 * 0.5)                       # half the budget spent: half the lr
    assert lrs[9] == pytest.approx(1e-2 * (1 + np.cos(np.pi * 0.9)) / 2)   # about 2% of it at the end


def test_step_schedule_without_a_time_budget_and_constant_default(tmp_path, monkeypatch):
    # no time budget: progress is step / max_steps
    lrs = _lrs_per_step(tmp_path, monkeypatch, 0.0, max_steps=8, lr_decay="cosine")
    assert len(lrs) == 8 and lrs[4] == pytest.approx(1e-2 * 0.5) and lrs[0] == pytest.approx(1e-2)
    # the default: the family's constant lr, as before schedules existed
    monkeypatch.undo()
    lrs = _lrs_per_step(tmp_path / "b", monkeypatch, 0.0, max_steps=5)
    assert lrs == [pytest.approx(1e-2)] * 5


@pytest.mark.parametrize("env, expected", [(None, "measure"), ("estimate", "estimate")])
def test_training_measures_the_conv_plan_unless_minigen_plan_says_otherwise(tmp_path, monkeypatch, env, expected):
    from minigen.kernels import plan
    if env is None:
        monkeypatch.delenv("MINIGEN_PLAN", raising=False)
    else:
        monkeypatch.setenv("MINIGEN_PLAN", env)
    modes = []
    Toy.hooks = {1: lambda loss: modes.append(plan.mode()) or loss}
    train(options(tmp_path, epochs=1, eval_n=0, n_samples=0, max_steps=1))
    assert modes == [expected]
    assert plan.mode() == ("estimate" if env is None else env)          # only while training


def test_toy_is_only_registered_for_tests():
    assert FAMILIES["toy"] is Toy


# --- locked run directories ----------------------------------------------------------------------
def test_a_live_run_directory_is_locked_against_a_second_trainer(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    run = str(tmp_path / "run")
    owner = f"process {os.getpid()} on {socket.gethostname()}"
    with RunLock(run):          # stands for another process training there (flocks of two open files conflict)
        with pytest.raises(MinigenError, match=re.escape(f"run directory {run} is in use: {owner} is training")):
            train(options(tmp_path, "run", epochs=2), resume=True)
        with pytest.raises(MinigenError, match="is in use"):
            train(options(tmp_path, "run", epochs=1))
    _, summary = train(options(tmp_path, "run", epochs=2), resume=True)    # released: the resume goes ahead
    assert summary["epochs"] == 2


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / "run" / LOCK
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    train(options(tmp_path, "run", epochs=2), resume=True)
    assert json.loads(lock.read_text())["pid"] == os.getpid()


# --- crash consistency: what a killed process leaves behind is cleaned up on resume ---------------
def test_resume_cuts_the_log_back_to_the_checkpoint_and_removes_temp_files(tmp_path):
    train(options(tmp_path, "run", epochs=1))
    run = tmp_path / "run"
    ckpt_step = load_run(run)[2]["step"]
    with open(run / METRICS, "a") as f:     # logged after the checkpoint, then a line cut short by kill -9
        f.write(json.dumps({"kind": "step", "step": ckpt_step + 5, "epoch": 1, "loss": 9.0}) + '\n{"kind": "st')
    (run / ".tmp-x1y2checkpoint.npz").write_bytes(b"half a checkpoint")
    train(options(tmp_path, "run", epochs=2), resume=True)
    steps = [r["step"] for r in read_metrics(run) if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and ckpt_step + 5 in steps          # logged once, by the resumed run
    assert 9.0 not in [r["loss"] for r in read_metrics(run) if r["kind"] == "step"]
    assert not list(run.glob(".tmp-*"))


# --- run directories written before the typed hyper-parameters -------------------------------------
OLD_CONFIGS = {   # config.json "model_config" as minigen 0.x wrote it (the families' default_config dicts)
    "vae": {"variant": "mlp", "conditional": True, "latent_dim": 2, "hidden_dim": 16, "conv_channels": 32,
            "num_classes": 10, "lr": 0.001, "batch_size": 128, "grad_clip": None, "iw_samples": 100,
            "eval_examples": 2000, "eval_batch_size": 100, "binarize_seed": 0},
    "ddpm": {"lr": 0.0002, "batch_size": 128, "conditional": False, "num_classes": 10, "schedule": "linear",
             "T": 1000, "beta_start": 0.0001, "beta_end": 0.02, "channels": [8, 8], "time_dim": 16, "groups": 4,
             "p_uncond": 0.1, "ema_decay": 0.999, "grad_clip": 1.0, "clip_denoised": True, "sample_method": "ddim",
             "sample_steps": 50, "eta": 0.0, "guidance": 1.0, "eval_examples": 1000},
}


def write_old_run(run, family, model_config, version="0.1.0"):
    """A run directory as the dict-config minigen wrote it: config.json plus a checkpoint of the weights."""
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": family, "model_config": model_config,
                                                 "minigen_version": version, "train": {"dataset": "mnist-5k"}}))
    model = get_family(family)(model_config)
    save({"model_family": family, "model": model.state_dict(), "extra": model.extra_state(), "epoch": 1,
          "step": 10}, run / CHECKPOINT)
    return model


@pytest.mark.parametrize("family", sorted(OLD_CONFIGS))
def test_runs_written_with_dict_configs_still_load(tmp_path, family):
    written = write_old_run(tmp_path / "old", family, OLD_CONFIGS[family])
    model, config, ckpt = load_run(tmp_path / "old")
    # the old values are kept; keys added since get their defaults (which keep the old behaviour)
    assert {k: model.config[k] for k in OLD_CONFIGS[family]} == OLD_CONFIGS[family] and ckpt["step"] == 10
    assert set(model.config) - set(OLD_CONFIGS[family]) <= {"prediction"}
    assert model.config.get("prediction", "eps") == "eps"
    assert_same(model.state_dict(), written.state_dict())


def test_a_config_this_minigen_cannot_read_names_the_file_and_version(tmp_path):
    write_old_run(tmp_path / "old", "vae", OLD_CONFIGS["vae"], version="9.0")
    cfg = tmp_path / "old" / "config.json"
    cfg.write_text(cfg.read_text().replace('"latent_dim"', '"z_dim"'))
    with pytest.raises(ConfigError, match=re.escape(f"{cfg} (written by minigen 9.0) does not fit this minigen")
                       + ".*unknown hyper-parameter 'z_dim'"):
        load_run(tmp_path / "old")
