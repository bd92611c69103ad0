"""`minigen sweep SPEC.toml --out DIR [--workers N | --scheduler tcp://HOST:8786]`: a grid of
`minigen train` runs, each an ordinary run directory DIR/NAME (so `minigen eval`, `sample` and
`train --resume` work on it), run as independent jobs on Dask or local processes (minigen.tools.jobs),
and then the spec's `minigen bench` cases, if any.

A spec (read with Python's tomllib):

    seed = 0                    # the sweep's seed: each run's training seed is derived from it and
                                # the run's name, so every run has its own random stream and the
                                # same spec and seed give the same numbers
    [train]                     # options every run shares: the long options of `minigen train`
    model = "vae"
    dataset = "mnist-5k"
    train_n = 256
    max_steps = 50
    threads = 1                 # threads per run (numba and BLAS), so parallel runs do not fight
    [train.set]                 # model hyper-parameters shared by every run (--set KEY=VALUE)
    variant = "mlp"
    [grid]                      # each key a list; the runs are every combination
    lr = [0.001, 0.003]
    "set.latent_dim" = [2, 8]
    replicate = [0, 1]          # only tells runs apart, so each gets its own seed
    [[bench]]                   # a `minigen bench` case ([bench] for one, [[bench]] for several)
    name = "matmul"             # its folder DIR/bench/NAME (default: the suite)
    suite = "ops"               # `minigen bench ops` (benchmarks/ops.py) or "models" (benchmarks/run.py)
    options = ["--quick", "--rounds", "1", "--only", "matmul", "--no-convs"]    # the script's own options
    threads = [1, 2]            # optional: one case per thread count (default: every core)

Options: model, dataset, data_dir (relative to the spec), epochs, batch_size, lr, conditional,
train_n, max_steps, max_seconds (a training-time budget), eval_n, threads, replicate, set.NAME.

A run is named after its grid values, e.g. DIR/lr=0.001,latent_dim=2,replicate=0. Rerunning the
same command skips finished runs (summary.json present), resumes interrupted ones from their last
checkpoint and starts the rest. At the end: DIR/results.csv and DIR/results.json (one row per run:
its grid values, seed, status, final metrics and timings) and DIR/plots/METRIC.png.

Benchmark cases run after every training run has finished, one at a time, on the machine that runs
`minigen sweep`, never in parallel and never on the workers, even with --workers N or --scheduler:
a timing means something only when nothing else runs on the cores. Each case is the suite's script
from the source checkout (benchmarks/ is not installed with the package), which times minigen and
PyTorch (when installed; else minigen alone) each in fresh processes of its own, rounds
alternating (benchmarks/harness.py). Its JSON, log (bench.log) and, once it succeeded, the sweep's
record bench.json go to DIR/bench/NAME; a rerun skips a case whose bench.json exists. Options of
a case: ops: --quick, --full, --rounds, --only, --no-convs; models: --quick, --full, --rounds,
--models, --memory, --scaling, --quality, --quality-epochs (--out is the sweep's). In the table, a
finished case gives one row per measured line: name bench/NAME, suite, threads, measure (the op, or
"vae: training step"), status, wall_seconds, minigen_median_s (min, max), torch_median_s, ratio
(minigen / PyTorch of the medians; empty without PyTorch) with its per-round spread.
A spec of [bench] cases alone (no [train], no [grid]) trains nothing.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import os
import signal
import sys
import time
import tomllib

from minigen.data import NAMES as DATASETS
from minigen.errors import MinigenError
from minigen.models import FAMILIES as REGISTERED
from minigen.rundir import read_json, read_summary, require
from minigen.serialize import atomic_write_text
from minigen.tools.jobs import run_jobs, run_limited

__all__ = ["load_spec", "plan", "run_sweep", "run_one", "derive_seed"]

SPEC_COPY, RESULTS = "sweep.json", "results"
FAMILIES = tuple(REGISTERED)        # the registry (minigen/models/base.py) is the one list of families
# option -> (type, check, what it must be); the keys of [train] and [grid]
OPTIONS = {
    "model": (str, lambda v: v in FAMILIES, f"one of {', '.join(FAMILIES)}"),
    "dataset": (str, lambda v: v in DATASETS, f"one of {', '.join(DATASETS)}"),
    "data_dir": (str, lambda v: bool(v), "a folder"),
    "epochs": (int, lambda v: v > 0, "a positive integer"),
    "batch_size": (int, lambda v: v > 0, "a positive integer"),
    "lr": (float, lambda v: v > 0, "a positive number"),
    "conditional": (bool, lambda v: True, "true or false"),
    "train_n": (int, lambda v: v > 0, "a positive integer"),
    "max_steps": (int, lambda v: v > 0, "a positive integer"),
    "max_seconds": (float, lambda v: v > 0, "a positive number of seconds (a training-time budget)"),
    "eval_n": (int, lambda v: v >= 0, "a non-negative integer"),
    "threads": (int, lambda v: v > 0, "a positive integer"),
    "replicate": (int, lambda v: v >= 0, "a non-negative integer"),
}
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# `minigen bench SUITE`: the script in the source checkout's benchmarks/
BENCH_SCRIPTS = {"ops": "ops.py", "models": "run.py", "quality": "quality_time.py", "plan": "plan.py"}
# the suites a sweep can run and the options a sweep passes on to their scripts (--out is the
# sweep's: DIR/bench/NAME). Quality-at-equal-time runs train for many minutes: a sweep's [train] grid
# with max_seconds is the way to study those.
BENCH_SUITES = {
    "ops": ("--quick", "--full", "--rounds", "--only", "--no-convs"),
    "models": ("--quick", "--full", "--rounds", "--models", "--memory", "--scaling", "--quality", "--quality-epochs"),
}
BENCH_KEYS = ("name", "suite", "options", "threads")
BENCH_DONE = "bench.json"        # the sweep's record of a finished case: its command, time and key numbers


def _check_value(where: str, key: str, value):
    if key.startswith("set."):
        if not key[4:] or not isinstance(value, (bool, int, float, str)):
            raise MinigenError(f"{where} {key}: a model hyper-parameter must be a number, string or boolean, "
                               f"got {value!r}")
        return value
    if key not in OPTIONS:
        raise MinigenError(f"{where}: unknown option {key!r}; expected one of: {', '.join(OPTIONS)}, or set.NAME "
                           f"for a model hyper-parameter" + (" (training seeds are derived from the top-level seed)"
                                                             if key == "seed" else ""))
    kind, ok, what = OPTIONS[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)) or not ok(value):
        raise MinigenError(f"{where} {key}: expected {what}, got {value!r}")
    return value


def load_spec(path: str) -> dict:
    """Read and check a sweep spec; returns {"seed", "train": {option: value}, "grid": {option: [values]},
    "bench": [case]} (see _check_bench).
    Every mistake is one MinigenError naming the file, the key and what was expected."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise MinigenError(f"sweep spec {path} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise MinigenError(f"{path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"seed", "train", "grid", "bench"})
    if unknown:
        raise MinigenError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected seed, [train], [grid], "
                           f"[bench]")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise MinigenError(f"{path}: seed: expected a non-negative integer, got {seed!r}")
    train, grid = raw.get("train", {}), raw.get("grid", {})
    for name, table in (("[train]", train), ("[grid]", grid), ("[train.set]", train.get("set", {}) if
                                                                isinstance(train, dict) else {})):
        if not isinstance(table, dict):
            raise MinigenError(f"{path}: {name} must be a table (KEY = VALUE lines under a {name} header), got "
                               f"{table!r}")
    train, grid = dict(train), dict(grid)
    shared = {f"set.{k}": v for k, v in train.pop("set", {}).items()}
    shared.update(train)
    checked_train = {k: _check_value(f"{path}: [train]", k, v) for k, v in shared.items()}
    checked_grid = {}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise MinigenError(f"{path}: [grid] {key}: expected a non-empty list of values, got {values!r}")
        checked = [_check_value(f"{path}: [grid]", key, v) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise MinigenError(f"{path}: [grid] {key}: the values repeat ({values!r}); each run must differ")
        checked_grid[key] = checked
    here = os.path.dirname(os.path.abspath(path))      # a relative data_dir: relative to the spec, on any worker
    if "data_dir" in checked_train:
        checked_train["data_dir"] = os.path.join(here, checked_train["data_dir"])
    if "data_dir" in checked_grid:
        raise MinigenError(f"{path}: [grid] data_dir: a folder cannot name a run; set data_dir in [train], "
                           f"or make one sweep per data folder")
    both = sorted(set(checked_train) & set(checked_grid))
    if both:
        raise MinigenError(f"{path}: {', '.join(both)} in both [train] and [grid]; keep each in one place")
    bench = _check_bench(path, raw.get("bench", []))
    if "model" not in checked_train and "model" not in checked_grid and (checked_train or checked_grid or not bench):
        raise MinigenError(f"{path}: no model: set [train] model = \"vae\" (or list models in [grid])")
    return {"seed": seed, "train": checked_train, "grid": checked_grid, "bench": bench}


def _is_option(token: str) -> bool:
    """'--quick' and '--rounds=2' are options; '2', 'vae' and '-1' are values."""
    try:
        float(token)
        return False
    except ValueError:
        return token.startswith("-")


def _check_bench(path: str, raw) -> list[dict]:
    """[bench] (one table) or [[bench]] (several) -> the benchmark cases, in order:
    [{"name", "suite", "options": [str], "threads": int | None}]; a list of threads is one case per count."""
    tables = [raw] if isinstance(raw, dict) else raw
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise MinigenError(f"{path}: bench must be a [bench] table or [[bench]] tables")
    cases = []
    for table in tables:
        where = f"{path}: [bench]"
        unknown = sorted(set(table) - set(BENCH_KEYS))
        if unknown:
            raise MinigenError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {', '.join(BENCH_KEYS)}")
        suite = table.get("suite")
        if suite not in BENCH_SUITES:
            raise MinigenError(f"{where} suite: expected one of {', '.join(BENCH_SUITES)} (as in `minigen bench "
                               f"SUITE`), got {suite!r}")
        options = table.get("options", [])
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise MinigenError(f"{where} options: expected a list of strings such as [\"--quick\"], got {options!r}")
        allowed = BENCH_SUITES[suite]
        for option in options:
            if _is_option(option) and option.split("=")[0] not in allowed:
                raise MinigenError(f"{where} options: {option!r} is not an option of the {suite} suite here; "
                                   f"expected some of {', '.join(allowed)} (--out is the sweep's: DIR/bench/NAME)")
        name = table.get("name", suite)
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise MinigenError(f"{where} name: expected a folder name (no '/', not starting with '.'), got {name!r}")
        threads = table.get("threads")          # absent: the script's default, every core
        counts = threads if isinstance(threads, list) else [threads]
        if threads is not None and (not counts or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0
                                                          for t in counts)):
            raise MinigenError(f"{where} threads: expected a positive integer or a non-empty list of them, "
                               f"got {threads!r}")
        if len(set(counts)) != len(counts):
            raise MinigenError(f"{where} threads: the values repeat ({threads!r}); each case must differ")
        for count in counts:
            cases.append({"name": f"{name},threads={count}" if isinstance(threads, list) else name, "suite": suite,
                          "options": options, "threads": count})
    names = [c["name"] for c in cases]
    if len(set(names)) != len(names):
        raise MinigenError(f"{path}: [[bench]] names repeat ({', '.join(names)}); give each [[bench]] its own name")
    return cases


def derive_seed(sweep_seed: int, name: str) -> int:
    """The training seed of the run `name`: a hash of the sweep's seed and the name (stable across
    machines and orders), so no two runs share a stream and reruns give the same numbers."""
    digest = hashlib.sha256(f"{sweep_seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2 ** 31)


MAX_RUNS = 1000      # a bigger grid is more likely a typo than a plan; --max-runs raises the cap


def plan(spec: dict, max_runs: int = MAX_RUNS) -> list[dict]:
    """The runs: [{"name", "grid": {key: value}, "options": {key: value}, "seed"}], in grid order
    (none for a spec of benchmark cases alone). Refuses, before building any of it, a grid of more than
    `max_runs` runs, and two grid points whose values print alike (2 and "2") and so would share a folder."""
    if not spec["train"] and not spec["grid"]:
        return []
    keys = list(spec["grid"])
    count = math.prod(len(spec["grid"][k]) for k in keys)
    if count > max_runs:
        raise MinigenError(f"the grid makes {count:,} runs ({' x '.join(str(len(spec['grid'][k])) for k in keys)} "
                           f"values of {', '.join(keys)}), more than the cap of {max_runs:,}; trim the grid or "
                           f"pass --max-runs {count}")
    runs, points = [], {}
    for values in itertools.product(*(spec["grid"][k] for k in keys)):
        grid = dict(zip(keys, values))
        name = ",".join(f"{k.removeprefix('set.')}={v}" for k, v in grid.items()) or "run"
        if "/" in name or name.startswith("."):
            raise MinigenError(f"run name {name!r} is not a folder name: grid values may not contain '/'")
        if name in points:
            raise MinigenError(f"grid points {json.dumps(points[name])} and {json.dumps(grid)} would both be run "
                               f"{name!r} (one folder for two runs); make the values differ in print, e.g. all "
                               f"numbers or all strings")
        points[name] = grid
        runs.append({"name": name, "grid": grid, "options": {**spec["train"], **grid},
                     "seed": derive_seed(spec["seed"], name)})
    return runs


def train_argv(options: dict, seed: int, run_dir: str) -> list[str]:
    """The `minigen train` command line of one run (what you would type to make it by hand)."""
    argv = ["train", options["model"], "--out", run_dir, "--seed", str(seed), "--no-progress"]
    for key, value in sorted(options.items()):
        if key in ("model", "threads", "replicate"):
            continue
        if key.startswith("set."):
            argv += ["--set", f"{key[4:]}={json.dumps(value)}"]
        elif key == "conditional":
            argv += ["--conditional"] if value else []
        else:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def run_one(job: dict) -> dict:
    """One run, in a subprocess `python -m minigen train ...` (a job for minigen.tools.jobs.run_jobs; never
    raises). Starts it, or resumes it from its checkpoint; its output goes to DIR/logs/NAME.log."""
    from minigen.train import CHECKPOINT
    run, out = job["run"], job["out"]
    run_dir = os.path.join(out, run["name"])
    result = {"name": run["name"], "status": "failed", "wall_seconds": None, "error": ""}
    try:
        options = run["options"]    # a run that died before its first checkpoint: `train` starts it again in place
        if os.path.exists(os.path.join(run_dir, CHECKPOINT)):
            argv = ["train", "--resume", run_dir, "--no-progress"]
            for key in ("max_steps", "max_seconds", "epochs"):     # what `--resume` does not read back
                argv += [f"--{key.replace('_', '-')}", str(options[key])] if key in options else []
        else:
            argv = train_argv(options, run["seed"], run_dir)
        env = dict(os.environ)
        if "threads" in options:
            env.update({name: str(options["threads"]) for name in THREAD_VARIABLES})
        os.makedirs(os.path.join(out, "logs"), exist_ok=True)
        log = os.path.join(out, "logs", run["name"] + ".log")
        with open(log, "a") as f:
            f.write(f"$ minigen {' '.join(argv)}\n")
        # -P: a minigen/ folder in the worker's current folder is never imported instead of the installed one;
        # SIGTERM if the sweep is killed: the run saves a checkpoint and stops
        done = run_limited([sys.executable, "-P", "-m", "minigen", *argv], timeout=job.get("timeout"), env=env,
                           on_parent_death=signal.SIGTERM, log=log)
        result["wall_seconds"] = round(done.seconds, 3)
        if done.how == "exited" and done.returncode == 0:
            result["status"] = "done"
        else:
            result["error"] = _failure(done)
    except Exception as e:                    # this run's trouble, never the sweep's
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def _failure(done) -> str:
    """How a command (a minigen.tools.jobs.Finished) failed, with its last line of output."""
    lines = [line for line in done.output.splitlines() if line.strip()]
    return f"{done.how} (status {done.returncode}): {lines[-1] if lines else 'no output'}"[:300]


# --- benchmark cases: after the training runs, one at a time, on this machine -------------------------
def benchmark_script(suite: str) -> str:
    """The script of `minigen bench SUITE` in the source checkout minigen runs from. benchmarks/ is not
    part of the installed package: without the checkout, a MinigenError saying so."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "benchmarks", BENCH_SCRIPTS[suite])
    if not os.path.exists(script):
        raise MinigenError(f"the benchmarks live in the source checkout ({script} not found); "
                           f"clone the repository and install it with `pip install -e .`")
    return script


def bench_argv(case: dict, case_dir: str) -> list[str]:
    """The command of one case: the suite's script, the spec's options, --out into DIR/bench/NAME
    (ops.py takes a file, run.py a folder)."""
    out = os.path.join(case_dir, "ops.json") if case["suite"] == "ops" else case_dir
    return [sys.executable, benchmark_script(case["suite"]), *case["options"], "--out", out]


def _key_numbers(summary: dict) -> dict:
    """One benchmark line's numbers (a benchmarks.harness.summarize result): minigen's median and
    min-max seconds over rounds, PyTorch's median, the ratio minigen / PyTorch of the medians with its
    per-round spread (None without PyTorch), and a framework's failure, if any."""
    m, t = summary.get("minigen") or {}, summary.get("torch") or {}
    errors = [f"{fw}: {s['error']}" for fw, s in (("minigen", m), ("torch", t)) if "error" in s]
    return {"minigen_median_s": m.get("median_s"), "minigen_min_s": m.get("min_s"), "minigen_max_s": m.get("max_s"),
            "torch_median_s": t.get("median_s"), "ratio": summary.get("ratio"), "ratio_min": summary.get("ratio_min"),
            "ratio_max": summary.get("ratio_max"), "error": "; ".join(errors)}


def bench_lines(suite: str, case_dir: str) -> list[dict]:
    """The key numbers of a finished case, from the JSON its script wrote: one dict per measured line
    ({"measure": "matmul 128x784 @ 784x400", **_key_numbers}; models: each variant's training step and
    sampling)."""
    if suite == "ops":
        with open(os.path.join(case_dir, "ops.json")) as f:
            return [{"measure": r["op"], **_key_numbers(r)} for r in json.load(f)["ops"]]
    lines = []
    for mode in ("quick", "full"):
        path = os.path.join(case_dir, f"models-{mode}.json")
        if os.path.exists(path):
            with open(path) as f:
                for r in json.load(f)["models"]:
                    lines.append({"measure": f"{r['model']}: training step", **_key_numbers(r["step"])})
                    lines += [{"measure": f"{r['model']}: sampling {s['what']}", **_key_numbers(s)}
                              for s in r["sampling"]]
    return lines


def run_bench(case: dict, out: str, timeout: float | None = None) -> dict:
    """One benchmark case in a subprocess (the suite's script, which times each framework in fresh
    processes of its own through benchmarks/harness.py); never raises. Its files and its log
    (bench.log) go to DIR/bench/NAME; when it succeeds, DIR/bench/NAME/bench.json records its command,
    wall time and key numbers, and marks it done for reruns."""
    case_dir = os.path.join(out, "bench", case["name"])
    result = {"name": case["name"], "status": "failed", "wall_seconds": None, "error": ""}
    try:
        argv = bench_argv(case, case_dir)
        env = dict(os.environ)
        if case["threads"]:                   # the harness gives every worker MINIGEN_BENCH_THREADS threads
            env.update({name: str(case["threads"]) for name in (*THREAD_VARIABLES, "MINIGEN_BENCH_THREADS")})
        os.makedirs(case_dir, exist_ok=True)
        log = os.path.join(case_dir, "bench.log")
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n")
        started_at = time.time()
        done = run_limited(argv, timeout=timeout, env=env, log=log)
        result["wall_seconds"] = round(done.seconds, 3)
        if done.how == "exited" and done.returncode == 0:
            record = {"command": argv[1:], "threads": case["threads"], "started_at": started_at,
                      "wall_seconds": result["wall_seconds"], "lines": bench_lines(case["suite"], case_dir)}
            atomic_write_text(os.path.join(case_dir, BENCH_DONE), json.dumps(record, indent=2))
            result["status"] = "done"
        else:
            result["error"] = _failure(done)
    except Exception as e:                    # this case's trouble, never the sweep's
        result["error"] = f"{type(e).__name__}: {e}"
    return result


def _flatten(prefix: str, value, into: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, into)
    else:
        into[prefix] = value




def _table(out: str, runs: list[dict], outcomes: dict) -> tuple[list[dict], list[str]]:
    """One row per run: name, grid values, seed, status, wall_seconds, error, then its summary.json
    flattened (test.neg_elbo, train_seconds, ...). Also returns the numeric summary keys: the metrics."""
    rows, metrics = [], []
    for run in runs:
        outcome = outcomes.get(run["name"], {})
        row = {"name": run["name"], **run["grid"], "seed": run["seed"], "status": outcome.get("status", "not run"),
               "wall_seconds": outcome.get("wall_seconds"), "error": outcome.get("error", "")}
        finished = read_summary(os.path.join(out, run["name"]))
        if finished is not None:
            summary = {}
            _flatten("", finished, summary)
            row.update(summary, status="done")
            metrics += [k for k, v in summary.items() if k not in metrics and isinstance(v, (int, float))
                        and not isinstance(v, bool)]
        rows.append(row)
    return rows, metrics + ["wall_seconds"]


def _bench_table(out: str, cases: list[dict], outcomes: dict) -> list[dict]:
    """The benchmark cases' rows: per finished case one row per measured line (name bench/NAME, suite,
    threads, measure, status, wall_seconds, error, then _key_numbers); a case not finished: one row
    saying why."""
    rows = []
    for case in cases:
        base = {"name": f"bench/{case['name']}", "suite": case["suite"], "threads": case["threads"]}
        record_path = os.path.join(out, "bench", case["name"], BENCH_DONE)
        if os.path.lexists(record_path):
            record = read_json(record_path, "the sweep's record of a finished benchmark case (a JSON object)")
            require(record_path, record, "wall_seconds", (int, float), "a number")
            require(record_path, record, "lines", list, "a list of objects with a measure",
                    lambda lines: all(isinstance(line, dict) and "measure" in line for line in lines))
            rows += [{**base, "measure": line["measure"], "status": "done", "wall_seconds": record["wall_seconds"],
                      **line} for line in record["lines"]]
        else:
            outcome = outcomes.get(case["name"], {})
            rows.append({**base, "measure": "", "status": outcome.get("status", "not run"),
                         "wall_seconds": outcome.get("wall_seconds"), "error": outcome.get("error", "")})
    return rows


def _write_table(out: str, rows: list[dict]) -> None:
    columns = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    atomic_write_text(os.path.join(out, RESULTS + ".json"), json.dumps(rows, indent=2))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(os.path.join(out, RESULTS + ".csv"), buffer.getvalue())


def _plottable(value) -> float | None:
    """A summary's number as a finite float, None if it is none (a string, NaN, an integer past float range)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _plot(out: str, rows: list[dict], metrics: list[str]) -> list[str]:
    """One bar chart per metric across the finished runs: DIR/plots/METRIC.png (constant ones skipped)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigen.plots import _save_figure
    done = [r for r in rows if r["status"] == "done"]
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    written = []
    for metric in metrics:
        values = [_plottable(r.get(metric)) for r in done]
        if not values or None in values or \
                (len(values) > 1 and len(set(values)) == 1):
            continue                      # a missing or constant number (steps, examples) is no comparison
        fig = plt.figure(figsize=(max(4.0, 0.6 * len(done) + 2), 3.2))
        plt.bar(range(len(done)), values)
        plt.xticks(range(len(done)), [r["name"] for r in done], rotation=30, ha="right", fontsize=7)
        plt.title(metric, fontsize=9)
        path = os.path.join(out, "plots", metric + ".png")
        _save_figure(fig, path)
        written.append(path)
    return written


def _claim(out: str, spec: dict) -> None:
    """DIR belongs to this spec: a new or empty folder, or one an earlier run of the same spec made."""
    marker = os.path.join(out, SPEC_COPY)
    if os.path.lexists(marker):
        earlier = read_json(marker, "the spec of the sweep that made this folder (a JSON object)")
        earlier.setdefault("bench", [])       # a sweep made before specs had [bench] cases
        if earlier != json.loads(json.dumps(spec)):
            raise MinigenError(f"--out {out} holds a different sweep (its spec is in {marker}); "
                               f"choose another --out or restore that spec")
        return
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise MinigenError(f"--out {out} already exists and is not a sweep folder; choose a new one")
    os.makedirs(out, exist_ok=True)
    atomic_write_text(marker, json.dumps(spec, indent=2))


def run_sweep(spec_path: str, out: str, *, workers: int = 1, scheduler: str | None = None,
              timeout: float | None = None, use_dask: bool | None = None, progress: bool = True,
              max_runs: int = MAX_RUNS) -> list[dict]:
    """Run (or finish) the sweep; returns the table's rows."""
    spec = load_spec(spec_path)
    runs, cases = plan(spec, max_runs), spec["bench"]
    for case in cases:                      # before any training: a missing checkout is known at once
        benchmark_script(case["suite"])
    _claim(out, spec)
    finished = {r["name"] for r in runs if os.path.exists(os.path.join(out, r["name"], "summary.json"))}
    todo = [r for r in runs if r["name"] not in finished]
    outcomes = {}
    previous = os.path.join(out, RESULTS + ".json")
    if os.path.lexists(previous):          # keep the timings of runs an earlier invocation finished
        rows = read_json(previous, "a list of result rows (objects with a name)", list)
        outcomes = {r["name"]: {"status": "done", "wall_seconds": r.get("wall_seconds")} for r in rows
                    if isinstance(r, dict) and r.get("name") in finished}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(runs), initial=len(finished), desc="sweep", unit="run", file=sys.stderr,
                   dynamic_ncols=True)
    counts = {"done": 0, "failed": 0}

    def show():
        if bar is not None:
            left = len(todo) - counts["done"] - counts["failed"]
            bar.set_postfix(done=len(finished) + counts["done"], running=left if scheduler else min(workers, left),
                            failed=counts["failed"])
    show()
    jobs = [{"run": r, "out": os.path.abspath(out), "timeout": timeout} for r in todo]
    started = time.perf_counter()
    try:
        for _, result in run_jobs(run_one, jobs, workers=workers, scheduler=scheduler, use_dask=use_dask):
            outcomes[result["name"]] = result
            counts[result["status"]] += 1
            show()
            if bar is not None:
                bar.update(1)
            # after every run: an interrupt keeps the table
            _write_table(out, _table(out, runs, outcomes)[0] + _bench_table(out, cases, {}))
    finally:
        if bar is not None:
            bar.close()
    if todo:
        print(f"minigen sweep: {counts['done']} run(s) finished, {counts['failed']} failed, "
              f"{len(finished)} already done, in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows, metrics = _table(out, runs, outcomes)
    # Timings mean something only with nothing else on the cores: the cases run after every training run,
    # one at a time, here (never on the workers, whatever --workers or --scheduler say)
    bench_outcomes = {}
    for number, case in enumerate(cases, 1):
        if os.path.exists(os.path.join(out, "bench", case["name"], BENCH_DONE)):
            continue                          # finished by an earlier invocation
        print(f"minigen sweep: bench {case['name']} ({number}/{len(cases)}), alone on this machine", file=sys.stderr)
        bench_outcomes[case["name"]] = run_bench(case, os.path.abspath(out), timeout)
        _write_table(out, rows + _bench_table(out, cases, bench_outcomes))
    every_row = rows + _bench_table(out, cases, bench_outcomes)
    _write_table(out, every_row)
    _plot(out, rows, metrics)
    return every_row
