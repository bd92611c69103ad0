"""The `minigen` command end to end: train / sample / eval / data, resume of real families,
and bad input answered with one line and exit status 2."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from minigen.cli import main
from minigen.data import write_idx
from minigen.errors import MinigenError
from minigen.models.pixelcnn import PixelCNN
from minigen.train import load_run

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
DATA = ["--dataset", "mnist-5k"] + (["--data-dir", SHARED_MNIST] if os.path.isdir(SHARED_MNIST) else [])


def run_cli(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:           # argparse's own usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, *argv, pattern):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("minigen: using")]
    assert len(lines) == 1 and pattern in lines[0], err


def test_data_info_mnist_5k(capsys):
    code, out, _ = run_cli(capsys, "data", "info", "mnist-5k")
    assert code == 0
    assert "(5000, 28, 28)" in out or "(4500, 28, 28)" in out
    assert "uint8" in out


def test_train_sample_eval_round_trip(tmp_path, capsys):
    run = str(tmp_path / "vae")
    code, out, err = run_cli(capsys, "train", "vae", "--conditional", "--out", run, "--max-steps", "3",
                             "--eval-n", "50", "--no-progress", "--set", "iw_samples=5", *DATA)
    assert code == 0, err
    for name in ("config.json", "metrics.jsonl", "checkpoint.npz", "samples.png", "summary.json"):
        assert os.path.exists(os.path.join(run, name)), name
    code, out, err = run_cli(capsys, "sample", run, "--label", "7", "--n", "8", "--out", str(tmp_path / "g.png"))
    assert code == 0 and (tmp_path / "g.png").exists(), err
    code, out, err = run_cli(capsys, "eval", run, "--n", "50")
    assert code == 0 and "neg_elbo" in out, err


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="/usr/share/datasets/fashion-mnist absent (apt-get install dataset-fashion-mnist)")
def test_train_and_eval_a_vae_on_fashion_mnist(tmp_path, capsys):
    run = tmp_path / "vae"
    code, out, err = run_cli(capsys, "train", "vae", "--dataset", "fashion-mnist", "--conditional", "--epochs", "1",
                             "--train-n", "256", "--eval-n", "50", "--out", str(run), "--no-progress",
                             "--set", "iw_samples=5")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["dataset"] == "fashion-mnist" and config["train"]["train_n"] == 256
    assert np.isfinite(json.loads((run / "summary.json").read_text())["test"]["neg_elbo"])
    assert (run / "samples.png").stat().st_size > 1000
    assert "--dataset fashion-mnist" in (run / "index.html").read_text()
    code, out, err = run_cli(capsys, "eval", str(run), "--n", "50")          # reads the Fashion test set again
    assert code == 0 and "neg_elbo" in out, err


@pytest.mark.parametrize("family, extra", [("vae", []), ("gan", ["--conditional"])])
def test_resume_is_bit_identical_for_real_families(tmp_path, capsys, family, extra):
    """Two epochs straight == one epoch, stop, resume for one (issue: at least the VAE and the GAN)."""
    common = ["--no-progress", "--eval-n", "0", "--train-n", "600", "--batch-size", "200", *extra, *DATA]
    assert run_cli(capsys, "train", family, "--out", str(tmp_path / "a"), "--epochs", "2", *common)[0] == 0
    assert run_cli(capsys, "train", family, "--out", str(tmp_path / "b"), "--epochs", "1", *common)[0] == 0
    assert run_cli(capsys, "train", "--resume", str(tmp_path / "b"), "--epochs", "2", "--no-progress")[0] == 0
    a, _, ckpt_a = load_run(str(tmp_path / "a"))
    b, _, ckpt_b = load_run(str(tmp_path / "b"))
    sa, sb = a.state_dict(), b.state_dict()
    assert ckpt_a["step"] == ckpt_b["step"] > 0
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def test_sigterm_in_a_real_process_checkpoints_and_exits_143(tmp_path):
    run = str(tmp_path / "run")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minigen", "train", "vae", "--out", run, "--epochs", "50",
                             "--no-progress", "--eval-n", "0", *DATA], stderr=subprocess.PIPE, text=True, env=env)
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.time() + 120
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "checkpoint saved to" in err and f"minigen train --resume {run}" in err
    assert load_run(run)[2]["step"] > 0


@pytest.mark.parametrize("argv, pattern", [
    (["train", "nosuch"], "invalid choice: 'nosuch'"),
    (["train", "vae", "--epochs", "0"], "expected a positive integer, got 0"),
    (["train", "vae", "--batch-size", "-3"], "expected a positive integer, got -3"),
    (["sample", "RUN", "--label", "11"], "expected a digit label 0-9, got '11'"),
    (["data", "info", "nosuch"], "invalid choice: 'nosuch'"),
])
def test_usage_errors_are_one_line(argv, pattern, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minigen", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0], proc.stderr


def test_bad_runs_and_data_are_one_line_errors(tmp_path, capsys):
    one_line_error(capsys, "train", "--resume", str(tmp_path), pattern="not a minigen run directory")
    one_line_error(capsys, "sample", str(tmp_path), pattern="not a minigen run directory")
    bad = tmp_path / "idx"
    bad.mkdir()
    write_idx(bad / "train-images-idx3-ubyte", np.zeros((3, 28, 28), np.uint8))
    (bad / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03\x01")   # 1 of 3 labels
    one_line_error(capsys, "train", "vae", "--out", str(tmp_path / "r"), "--data-dir", str(bad), "--no-progress",
                   pattern="train-labels-idx1-ubyte")
    (tmp_path / "file").write_text("not a folder")
    one_line_error(capsys, "train", "vae", "--out", str(tmp_path / "file" / "run"), "--no-progress", *DATA,
                   pattern="cannot write to run directory")


def test_label_for_unconditional_run_and_unknown_sample_option(tmp_path, capsys):
    run = str(tmp_path / "vae")
    assert run_cli(capsys, "train", "vae", "--out", run, "--max-steps", "1", "--eval-n", "0", "--no-progress",
                   *DATA)[0] == 0
    one_line_error(capsys, "sample", run, "--label", "3", pattern="not conditional")
    one_line_error(capsys, "sample", run, "--steps", "5", pattern="--steps is not an option of vae sampling")


def test_truncated_checkpoint_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "vae"
    assert run_cli(capsys, "train", "vae", "--out", str(run), "--max-steps", "1", "--eval-n", "0",
                   "--no-progress", *DATA)[0] == 0
    ckpt = run / "checkpoint.npz"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    one_line_error(capsys, "sample", str(run), pattern="checkpoint.npz: checkpoint is truncated or corrupt")


def test_train_classifier_writes_no_sample_grid(tmp_path, capsys):
    """The yardstick trains through the same command; a classifier has no samples to draw."""
    run = tmp_path / "clf"
    code, out, err = run_cli(capsys, "train", "classifier", "--out", str(run), "--max-steps", "2", "--eval-n", "50",
                             "--no-progress", *DATA)
    assert code == 0, err
    assert '"accuracy"' in out and not (run / "samples.png").exists()


# --- hyper-parameters and sampling options are checked (issue 15's table, one test per row) ----------
@pytest.mark.parametrize("family, setting, pattern", [
    ("vae", "latent_dim=abc", 'vae: latent_dim="abc" is not allowed; expected an integer in 1..4096'),
    ("vae", "latent_dim=-5", "vae: latent_dim=-5 is not allowed; expected an integer in 1..4096"),
    ("vae", "hidden_dim=0", "vae: hidden_dim=0 is not allowed; expected an integer in 1..16384"),
    ("ddpm", "channels=[0]", "ddpm: channels=[0] is not allowed; expected a list of 1..3 entries, each an integer"),
    ("gan", "latent_dim=1e9", "gan: latent_dim=1000000000.0 is not allowed; expected an integer in 1..4096"),
])
def test_bad_hyper_parameter_is_one_line_and_nothing_is_written(tmp_path, capsys, family, setting, pattern):
    out = tmp_path / "run"
    one_line_error(capsys, "train", family, "--out", str(out), "--set", setting, "--no-progress", *DATA,
                   pattern=pattern)
    assert not out.exists()


def test_a_table_row_in_a_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minigen", "train", "vae", "--set", "latent_dim=abc",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ['minigen: error: vae: latent_dim="abc" is not allowed; '
                                                'expected an integer in 1..4096']


@pytest.mark.parametrize("family, settings, pattern", [
    ("ddpm", ["groups=5"], "groups=5 does not divide channels=[32, 64, 64]"),
    ("ddpm", ["T=10", "sample_steps=50"], "sample_steps=50 is more than T=10"),
    ("flow", ["variant=conv", "num_couplings=3"], "num_couplings=3 must be even for variant=conv"),
    ("vae", ["latnet_dim=2"], "vae: unknown hyper-parameter 'latnet_dim'; expected some of: variant,"),
    ("vae", ["lr=NaN"], "vae: lr=NaN is not allowed; expected a number in (0, 10]"),
    ("ddpm", ["clip_denoised=1"], "ddpm: clip_denoised=1 is not allowed; expected true or false"),
    ("gan", ["latent_dim=[1, 2]"], "gan: latent_dim=[1, 2] is not allowed"),
])
def test_impossible_combinations_and_wrong_types_are_one_line(tmp_path, capsys, family, settings, pattern):
    args = [a for s in settings for a in ("--set", s)]
    one_line_error(capsys, "train", family, "--out", str(tmp_path / "run"), *args, *DATA, pattern=pattern)


def test_a_model_too_big_for_memory_is_refused_with_the_estimate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MINIGEN_MEMORY_LIMIT", str(50 * 2**20))
    one_line_error(capsys, "train", "gan", "--out", str(tmp_path / "run"), *DATA,
                   pattern="gan: training this model would need about 350.8 MiB (898,688 parameters, 345,160 "
                           "activation floats per example, batch_size=128), but only 50.0 MiB is available")
    assert run_cli(capsys, "train", "gan", "--out", str(tmp_path / "run"), "--batch-size", "2", "--max-steps", "1",
                   "--eval-n", "0", "--no-progress", *DATA)[0] == 0      # a smaller batch fits


def test_train_model_help_lists_its_hyper_parameters(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "ddpm", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "hyper-parameters of ddpm" in out
    line = next(line for line in out.splitlines() if line.split()[:1] == ["groups"])
    assert "8" in line and "an integer in 1..1024" in line and "must divide every entry of channels" in line


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A one-step VAE, DDPM (T=20) and flow-matching model to sample from."""
    root = tmp_path_factory.mktemp("runs")
    common = ["--max-steps", "1", "--eval-n", "0", "--no-progress", "--train-n", "64", "--batch-size", "16", *DATA]
    assert main(["train", "vae", "--out", str(root / "vae"), "--set", "hidden_dim=16", *common]) == 0
    assert main(["train", "ddpm", "--out", str(root / "ddpm"), "--conditional", "--set", "channels=[8]",
                 "--set", "groups=4", "--set", "time_dim=8", "--set", "T=20", "--set", "sample_steps=5",
                 *common]) == 0
    assert main(["train", "flowmatch", "--out", str(root / "flowmatch"), "--conditional", "--set", "channels=[8]",
                 "--set", "groups=4", "--set", "time_dim=8", "--set", "sample_steps=2", *common]) == 0
    return root


@pytest.mark.parametrize("family, options, pattern", [
    ("vae", ["--temperature", "-1"], "VAE.sample: temperature must be a finite number >= 0 (0: the mode), got -1.0"),
    ("vae", ["--temperature", "nan"], "VAE.sample: temperature must be a finite number >= 0 (0: the mode), got nan"),
    ("vae", ["--temperature", "inf"], "temperature must be a finite number >= 0 (0: the mode), got inf"),
    ("vae", ["--n", "1001"], "argument --n: expected at most 1000 samples, got 1001"),
    ("ddpm", ["--guidance", "nan"], "ddpm.sample: guidance must be a finite number >= 0 (1: no guidance), got nan"),
    ("ddpm", ["--guidance", "-2"], "guidance must be a finite number >= 0"),
    ("ddpm", ["--steps", "21"], "DDIM steps must be in [1, 20], got 21"),
    ("ddpm", ["--method", "heun"], "ddpm: method must be 'ancestral' or 'ddim', got 'heun'"),
    ("flowmatch", ["--method", "ddim"], "flowmatch: method must be one of euler, heun, got 'ddim'"),
    ("flowmatch", ["--guidance", "inf"], "flowmatch.sample: guidance must be a finite number >= 0"),
    ("flowmatch", ["--steps", "0"], "argument --steps"),
])
def test_bad_sampling_options_are_one_line_and_write_no_grid(tiny_runs, tmp_path, capsys, family, options, pattern):
    grid = tmp_path / "g.png"
    one_line_error(capsys, "sample", str(tiny_runs / family), "--out", str(grid), *options, pattern=pattern)
    assert not grid.exists()


def test_good_sampling_options_still_work(tiny_runs, tmp_path, capsys):
    for family, options in (("vae", ["--temperature", "0.5"]), ("ddpm", ["--guidance", "2", "--steps", "3"]),
                            ("flowmatch", ["--method", "euler", "--steps", "2", "--guidance", "2"])):
        code, _, err = run_cli(capsys, "sample", str(tiny_runs / family), "--n", "4", "--out", str(tmp_path / "g.png"),
                               *options)
        assert code == 0 and (tmp_path / "g.png").exists(), err


def test_pixelcnn_temperature_must_be_above_zero():
    model = PixelCNN({"channels": 4, "num_blocks": 0, "image_size": 8})
    for bad in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(MinigenError, match=r"pixelcnn.sample: temperature must be a finite number > 0, got"):
            model.sample(2, temperature=bad)
