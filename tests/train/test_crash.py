"""Crash consistency under kill -9 (the out-of-memory killer, a power cut): a training process is killed with
SIGKILL at derandomized moments, several times; after each kill the checkpoint loads, `--resume` continues,
the steps in metrics.jsonl strictly increase and no temporary file is left; killed in its first epoch, before
any checkpoint, the run is started again by the same command. A tiny VAE on a tiny synthetic
IDX dataset keeps each kill to a few seconds."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigen.cli import main
from minigen.serialize import TEMP_PREFIX
from minigen.rundir import STATE
from minigen.train import LOCK, METRICS, load_run, read_metrics
from tests.commands import write_noise_idx

KILLS = int(os.environ.get("MINIGEN_CRASH_KILLS", "4"))      # more for a deliberate, longer run


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """400 training and 20 test images of noise: what the loop needs, loaded in milliseconds."""
    folder = tmp_path_factory.mktemp("idx")
    write_noise_idx(folder, 400, 20)
    return folder


def train_args(run, data, *extra):
    # 40 steps per epoch, logged every 20: a kill often lands between a logged step and the next checkpoint
    return ["train", "vae", "--out", str(run), "--dataset", "mnist", "--data-dir", str(data), "--batch-size", "10",
            "--set", "hidden_dim=16", "--set", "latent_dim=2", "--eval-n", "0", "--no-progress", *extra]


def log_lines(run) -> int:
    """Lines in metrics.jsonl so far (counted, not parsed: the process writing it may be mid-line)."""
    path = run / METRICS
    return path.read_bytes().count(b"\n") if path.exists() else 0


def step_records(run):
    return [r["step"] for r in read_metrics(run) if r["kind"] == "step"]


def test_kill_9_at_random_moments_then_resume(tmp_path, tiny_data, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, tiny_data, "--epochs", "1")) == 0        # a first checkpoint to resume from
    rng = np.random.default_rng(15)                                     # derandomized kill moments
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(KILLS):
        before = log_lines(run)
        proc = subprocess.Popen([sys.executable, "-m", "minigen", "train", "--resume", str(run), "--epochs", "100000",
                                 "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        try:
            # wait for it to be training (its first new log line), then kill it a random moment later
            deadline = time.time() + 120
            while log_lines(run) <= before and time.time() < deadline and proc.poll() is None:
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read().decode()
            capsys.readouterr()
            # while it runs, a second trainer is refused (exit status 2) and names the owner
            assert main(["train", "--resume", str(run), "--no-progress"]) == 2
            assert f"is in use: process {proc.pid}" in capsys.readouterr().err
            time.sleep(float(rng.uniform(0, 0.6)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ckpt = load_run(run)[2]                                          # the checkpoint loads
        step = int(ckpt["step"])
        # --resume continues: a few more steps, then it stops on its own and finishes the run
        assert main(["train", "--resume", str(run), "--epochs", "100000", "--max-steps", str(step + 3),
                     "--no-progress"]) == 0, capsys.readouterr().err
        assert int(load_run(run)[2]["step"]) == step + 3
        steps = step_records(run)
        assert steps == sorted(set(steps)), f"kill {kill}: steps in {METRICS} not strictly increasing: {steps}"
        assert not [n for n in os.listdir(run) if n.startswith(TEMP_PREFIX)], os.listdir(run)
        assert set(os.listdir(run)) <= {"config.json", STATE, METRICS, "checkpoint.npz", LOCK, "samples.png",
                                        "loss.png", "summary.json", "curves.png", "generation.gif", "index.html"}


def test_kill_9_in_the_first_epoch_then_the_same_command_recovers(tmp_path, tiny_data, capsys):
    """SIGKILL at derandomized moments from the process start to the end of its first epoch, several times in
    a row on one run directory: each time, the same command starts the run again (no checkpoint yet) or
    --resume continues it (a checkpoint was written), and --resume on a directory without a checkpoint says
    to run the same command. The run that finally completes matches an uninterrupted one bit for bit."""
    first_epoch = ["--epochs", "2", "--batch-size", "1"]        # 400 steps: long enough to be killed in
    argv = train_args(tmp_path / "run", tiny_data, *first_epoch)
    run = tmp_path / "run"
    rng = np.random.default_rng(26)
    for kill in range(KILLS):
        proc = subprocess.Popen([sys.executable, "-m", "minigen", *argv], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        started = time.time()
        try:
            deadline = started + 120               # until it has started the run (imports take a while) ...
            while not (run / STATE).exists() or (run / STATE).stat().st_mtime < started:
                assert time.time() < deadline and proc.poll() is None
                time.sleep(0.01)
            time.sleep(float(rng.uniform(0, 0.6)))  # ... then a moment before or within its first epoch
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if (run / "checkpoint.npz").exists():
            break                                  # the first epoch is over; resuming is the other test's
        assert main(["train", "--resume", str(run), "--no-progress"]) == 2
        assert "never reached a checkpoint" in capsys.readouterr().err
    resume = (run / "checkpoint.npz").exists()
    assert main(["train", "--resume", str(run), "--no-progress"] if resume else argv) == 0, capsys.readouterr().err
    assert main(train_args(tmp_path / "straight", tiny_data, *first_epoch)) == 0
    straight, recovered = load_run(tmp_path / "straight")[0], load_run(run)[0]
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(value, recovered.state_dict()[name], err_msg=name)
    steps = step_records(run)
    assert steps == sorted(set(steps)) and steps == step_records(tmp_path / "straight")
