"""`minigen sweep` (minigen.tools.sweep): a 2x2 grid of tiny VAE runs on a local Dask cluster gives the
numbers of the same runs made one by one; a killed sweep finishes on rerun without retraining."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from benchmarks import harness
from minigen.tools import sweep
from minigen.cli import main as cli_main
from minigen.errors import MinigenError

pytest.importorskip("dask.distributed")

SPEC = """seed = 3
[train]
model = "vae"
dataset = "mnist-5k"
train_n = 128        # one batch: one step per epoch, a checkpoint after each
max_steps = 2
eval_n = 16
threads = 1
[train.set]
variant = "mlp"
[grid]
lr = [0.001, 0.002]
"set.latent_dim" = [2, 4]
"""
METRICS = ("test.neg_elbo", "test.nll_nats", "parameters", "steps")
ONE_THREAD = {name: "1" for name in sweep.THREAD_VARIABLES}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return str(path)


@pytest.fixture(scope="module")
def swept(spec, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep") / "out")
    assert cli_main(["sweep", spec, "--out", out, "--workers", "2", "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        return out, json.load(f)


def by_name(rows):
    return {r["name"]: {m: r[m] for m in METRICS} for r in rows}


def test_a_2x2_sweep_gives_the_numbers_of_the_four_runs_made_one_by_one(swept, tmp_path):
    out, rows = swept
    assert [r["name"] for r in rows] == ["lr=0.001,latent_dim=2", "lr=0.001,latent_dim=4",
                                         "lr=0.002,latent_dim=2", "lr=0.002,latent_dim=4"]
    assert all(r["status"] == "done" for r in rows)
    assert len({r["seed"] for r in rows}) == 4                         # each run its own random stream
    for row in rows:                                                  # `minigen train` typed by hand
        argv = [sys.executable, "-m", "minigen", "train", "vae", "--out", str(tmp_path / row["name"]),
                "--dataset", "mnist-5k", "--train-n", "128", "--max-steps", "2", "--eval-n", "16",
                "--set", "variant=mlp", "--set", f"latent_dim={row['set.latent_dim']}", "--lr", str(row["lr"]),
                "--seed", str(row["seed"]), "--no-progress"]
        subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **ONE_THREAD})
        with open(tmp_path / row["name"] / "summary.json") as f:
            alone = json.load(f)
        assert {m: row[m] for m in METRICS} == {"test.neg_elbo": alone["test"]["neg_elbo"],
                                                 "test.nll_nats": alone["test"]["nll_nats"],
                                                 "parameters": alone["parameters"], "steps": alone["steps"]}
    header = open(os.path.join(out, "results.csv")).readline()
    assert header.startswith("name,lr,set.latent_dim,seed,status,wall_seconds,error,")
    assert {"test.neg_elbo.png", "train_seconds.png", "wall_seconds.png"} <= set(os.listdir(os.path.join(out, "plots")))
    assert cli_main(["eval", os.path.join(out, rows[0]["name"]), "--n", "8"]) == 0      # an ordinary run directory


def test_a_killed_sweep_finishes_on_rerun_without_retraining(spec, swept, tmp_path):
    """Killed (the whole process group, SIGKILL) once a run has finished; here without Dask, the
    concurrent.futures fallback. The rerun skips the finished run and gets the same numbers."""
    out = str(tmp_path / "out")
    env = {**os.environ, "MINIGEN_NO_DASK": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minigen", "sweep", spec, "--out", out, "--workers", "1",
                             "--no-progress"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    finished = []
    while not finished and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        finished = [n for n in os.listdir(out) if os.path.exists(os.path.join(out, n, "summary.json"))] \
            if os.path.isdir(out) else []
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "Dask distributed not in use" in proc.stderr.read().decode()
    assert finished and len(finished) < 4, finished
    stamps = {n: os.stat(os.path.join(out, n, "checkpoint.npz")).st_mtime_ns for n in finished}

    rows = sweep.run_sweep(spec, out, workers=2, progress=False)
    assert all(r["status"] == "done" for r in rows)
    assert stamps == {n: os.stat(os.path.join(out, n, "checkpoint.npz")).st_mtime_ns for n in finished}
    for name in finished:                                   # trained once: one command in its log
        assert open(os.path.join(out, "logs", name + ".log")).read().count("$ minigen train") == 1
    assert by_name(rows) == by_name(swept[1])


@pytest.mark.parametrize("text, message", [
    ("[train]\nmodel = 'vae'\n[grid]\nlr = 0.001\n", "[grid] lr: expected a non-empty list of values, got 0.001"),
    ("[train]\nmodel = 'vea'\n", "[train] model: expected one of vae, flow"),
    ("[train]\nmodel = 'vae'\nlearning_rate = 0.1\n", "unknown option 'learning_rate'; expected one of: model"),
    ("[train]\nmodel = 'vae'\nseed = 1\n", "training seeds are derived from the top-level seed"),
    ("[train]\nepochs = 2\n", "no model: set [train] model"),
    ("[train]\nmodel = 'vae'\nepochs = 0\n", "[train] epochs: expected a positive integer, got 0"),
    ("[train]\nmodel = 'vae'\n[grid]\nepochs = [1, 1]\n", "the values repeat"),
    ("[train]\nmodel = 'vae'\nlr = 0.1\n[grid]\nlr = [0.2]\n", "lr in both [train] and [grid]"),
    ("[train\nmodel = 'vae'\n", "is not valid TOML"),
    ("sed = 1\n", "unknown top-level key(s) sed"),
    ("[bench]\nsuite = 'opz'\n", "[bench] suite: expected one of ops, models"),
    ("[bench]\nsuite = 'ops'\nrepeat = 2\n", "[bench]: unknown key(s) repeat; expected name, suite, options, threads"),
    ("[bench]\nsuite = 'ops'\noptions = '--quick'\n", "[bench] options: expected a list of strings"),
    ("[bench]\nsuite = 'ops'\noptions = ['--out', 'x']\n", "'--out' is not an option of the ops suite here"),
    ("[bench]\nsuite = 'models'\noptions = ['--no-convs']\n", "expected some of --quick, --full, --rounds, --models"),
    ("[bench]\nsuite = 'ops'\nthreads = [0]\n", "[bench] threads: expected a positive integer or a non-empty list"),
    ("[bench]\nsuite = 'ops'\nthreads = [1, 1]\n", "[bench] threads: the values repeat"),
    ("[[bench]]\nsuite = 'ops'\n[[bench]]\nsuite = 'ops'\n", "names repeat (ops, ops)"),
    ("[bench]\nsuite = 'ops'\nname = 'a/b'\n", "[bench] name: expected a folder name"),
    ("[bench]\nsuite = 'ops'\n[train]\nepochs = 1\n", "no model: set [train] model"),
])
def test_a_bad_spec_is_one_clear_error(tmp_path, capsys, text, message):
    path = tmp_path / "spec.toml"
    path.write_text(text)
    with pytest.raises(MinigenError) as error:
        sweep.load_spec(str(path))
    assert message in str(error.value) and str(path) in str(error.value)
    assert cli_main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_of_another_sweep_is_refused(swept, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(SPEC.replace("seed = 3", "seed = 4"))
    with pytest.raises(MinigenError, match="holds a different sweep"):
        sweep.run_sweep(str(other), swept[0], progress=False)


def test_a_time_budget_stops_training(tmp_path):
    """--max-seconds (the sweep's max_seconds): a budget far below one step's time stops after one step."""
    run = str(tmp_path / "run")
    assert cli_main(["train", "vae", "--out", run, "--dataset", "mnist-5k", "--train-n", "128", "--epochs", "50",
                     "--max-seconds", "0.001", "--eval-n", "0", "--set", "variant=mlp", "--no-progress"]) == 0
    with open(os.path.join(run, "summary.json")) as f:
        assert json.load(f)["steps"] == 1
    assert "--max-seconds" in sweep.train_argv({"model": "vae", "max_seconds": 30.0}, 0, run)
    with pytest.raises(SystemExit, match="2"):
        cli_main(["train", "vae", "--max-seconds", "0"])


def test_the_example_spec_is_valid_and_so_is_its_commented_bench_case(tmp_path):
    example = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sweep.toml")
    runs = sweep.plan(sweep.load_spec(example))
    assert len(runs) == 12 and runs[0]["name"] == "lr=0.001,latent_dim=2,replicate=0"
    assert len({r["seed"] for r in runs}) == 12
    text = open(example).read()
    uncommented = tmp_path / "sweep.toml"
    uncommented.write_text(text[:text.index("# [[bench]]")] + re.sub(r"(?m)^# ", "", text[text.index("# [[bench]]"):]))
    assert [(c["name"], c["suite"], c["threads"]) for c in sweep.load_spec(str(uncommented))["bench"]] == \
        [("vae,threads=1", "models", 1), ("vae,threads=2", "models", 2)]


# --- benchmark cases ------------------------------------------------------------------------------
BENCH_SPEC = """[train]
model = "vae"
dataset = "mnist-5k"
train_n = 128
max_steps = 1
eval_n = 16
threads = 1
[train.set]
variant = "mlp"
[bench]
suite = "ops"
options = ["--quick", "--rounds", "1", "--only", "matmul", "--no-convs"]
threads = [1]
"""
MATMUL = "matmul 128x784 @ 784x400"


def test_bench_cases_run_after_training_record_their_numbers_and_are_skipped_on_rerun(tmp_path):
    spec, out = tmp_path / "spec.toml", str(tmp_path / "out")
    spec.write_text(BENCH_SPEC)
    rows = sweep.run_sweep(str(spec), out, progress=False)
    case_dir = os.path.join(out, "bench", "ops,threads=1")
    with open(os.path.join(case_dir, "ops.json")) as f:
        written = json.load(f)
    assert [r["op"] for r in written["ops"]] == [MATMUL] and written["start"] is None    # --no-convs: no convs
    assert written["machine"]["threads"] == 1
    with open(os.path.join(case_dir, sweep.BENCH_DONE)) as f:
        record = json.load(f)
    assert record["started_at"] >= os.stat(os.path.join(out, "run", "summary.json")).st_mtime   # after training
    assert [r["name"] for r in rows] == ["run", "bench/ops,threads=1"]
    with open(os.path.join(out, "results.csv")) as f:
        bench_row = [r for r in csv.DictReader(f) if r["name"] == "bench/ops,threads=1"]
    assert len(bench_row) == 1 and bench_row[0]["status"] == "done" and bench_row[0]["measure"] == MATMUL
    assert float(bench_row[0]["minigen_median_s"]) == pytest.approx(written["ops"][0]["minigen"]["median_s"])
    if harness.available_frameworks() == ("minigen", "torch"):
        assert float(bench_row[0]["ratio"]) == pytest.approx(written["ops"][0]["ratio"])
    else:
        assert bench_row[0]["ratio"] == ""

    stamp = os.stat(os.path.join(case_dir, sweep.BENCH_DONE)).st_mtime_ns
    again = sweep.run_sweep(str(spec), out, progress=False)
    assert os.stat(os.path.join(case_dir, sweep.BENCH_DONE)).st_mtime_ns == stamp          # not run again
    assert open(os.path.join(case_dir, "bench.log")).read().count("$ ") == 1
    assert again == rows


def test_bench_rows_without_pytorch_give_minigen_alone_and_no_ratio(tmp_path):
    """What the scripts write when PyTorch is absent (the harness's summarize of minigen rounds alone)."""
    alone = harness.summarize({"minigen": [{"times_s": [0.2], "first_s": 1.0}, {"times_s": [0.4], "first_s": 1.0}]})
    (tmp_path / "ops.json").write_text(json.dumps({"ops": [{"op": MATMUL, "minigen": alone["minigen"], "torch": None,
                                                            "ratio": alone.get("ratio")}]}))
    (tmp_path / "models-quick.json").write_text(json.dumps({"models": [
        {"model": "vae", "step": alone, "sampling": [{"what": "1000 images", **alone}]}]}))
    numbers = {"minigen_median_s": pytest.approx(0.3), "minigen_min_s": 0.2, "minigen_max_s": 0.4,
               "torch_median_s": None, "ratio": None, "ratio_min": None, "ratio_max": None, "error": ""}
    assert sweep.bench_lines("ops", str(tmp_path)) == [{"measure": MATMUL, **numbers}]
    assert sweep.bench_lines("models", str(tmp_path)) == [{"measure": "vae: training step", **numbers},
                                                          {"measure": "vae: sampling 1000 images", **numbers}]


def test_a_sweep_with_bench_cases_needs_the_source_checkout(tmp_path, monkeypatch):
    spec = tmp_path / "spec.toml"
    spec.write_text(BENCH_SPEC)
    monkeypatch.setitem(sweep.BENCH_SCRIPTS, "ops", "not-in-this-checkout.py")
    with pytest.raises(MinigenError, match="the benchmarks live in the source checkout"):
        sweep.run_sweep(str(spec), str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()                 # refused before any training


def test_a_failing_bench_case_is_a_row_saying_why_and_is_retried_on_rerun(tmp_path):
    spec, out = tmp_path / "spec.toml", str(tmp_path / "out")
    spec.write_text('[bench]\nname = "bad"\nsuite = "ops"\noptions = ["--no-convs", "--rounds", "-1"]\n')
    for attempt in (1, 2):
        [row] = sweep.run_sweep(str(spec), out, progress=False)
        assert (row["name"], row["status"]) == ("bench/bad", "failed")
        assert row["error"] == "exited (status 2): ops.py: error: --rounds must be at least 1"
        assert not os.path.exists(os.path.join(out, "bench", "bad", sweep.BENCH_DONE))
        assert open(os.path.join(out, "bench", "bad", "bench.log")).read().count("$ ") == attempt


def test_a_sweep_folder_made_before_bench_cases_existed_is_still_its_own(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    loaded = sweep.load_spec(str(spec))
    out = tmp_path / "out"
    out.mkdir()
    (out / sweep.SPEC_COPY).write_text(json.dumps({k: v for k, v in loaded.items() if k != "bench"}))
    sweep._claim(str(out), loaded)                                   # no "holds a different sweep"
    with pytest.raises(MinigenError, match="holds a different sweep"):
        sweep._claim(str(out), {**loaded, "bench": [{"name": "ops", "suite": "ops", "options": [], "threads": None}]})
