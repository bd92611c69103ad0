"""Every speed figure from each framework alone in a fresh process: the harness of the benchmarks.

`benchmarks/ops.py`, `benchmarks/run.py` and `minigen bench` all time through here.

Why separate processes: PyTorch's OpenMP threads and minigen's threads (Numba's pool, the conv
workers) fight over the cores when both frameworks live in one process, and whichever is
measured second pays for the other's idle-spinning threads and the objects it left behind.
So each measurement is one child process, `python -m benchmarks.worker FRAMEWORK`, that imports
one framework, runs a list of cases and prints their timings as JSON. All children get the
same thread count (OMP / MKL / OpenBLAS / Numba environment variables here, plus
`numba.set_num_threads` and `torch.set_num_threads` in the worker).

A *case* is a named function `module:function` called in the child as
`function(framework, **params)`; it does the set-up and returns the work to time: a
zero-argument callable, or a `Work` when the warm-up should be cheaper than a timed call or
each time stands for a multiple of itself. In the child: set-up, then the first call (its end
is the *time to first result*, JIT compilation included), more warm-up calls, then
`iterations` timed calls. Nothing of the warm-up is in the timings.

Rounds alternate: round 1 runs each group of cases in a minigen process, then in a PyTorch
process, round 2 again, and so on (`alternation`), so slow drifts of a shared machine hit both
alike. A round's figure for a case is the median of its timed calls; across rounds we report
the median and the spread (min-max) per framework, and the ratio minigen / PyTorch of the
medians, with the spread of the per-round ratios (round r's minigen against round r's PyTorch,
the two processes that ran back to back).

Memory cases (`measure="memory"`) run once per framework, one case per process: how far the
work raises the peak resident size above the size after set-up.
"""
from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

from benchmarks.common import THREADS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("minigen", "torch")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


@dataclass
class Case:
    """One named measurement: `func` ("module:function") is called in the worker as
    func(framework, **params) and returns the work (a callable or a `Work`)."""
    name: str
    func: str
    params: dict = field(default_factory=dict)
    iterations: int = 3            # timed calls per process, at least
    warmup: int = 1                # untimed calls before them (the first one: time to first result)
    min_seconds: float = 0.0       # more timed calls until they add up to this (fast cases: less noise)
    measure: str = "time"          # "time" or "memory"


@dataclass
class Work:
    """What a case returns when a plain callable is not enough.

    run: one timed call. warmup: the untimed calls instead of run (e.g. 2 sampling steps, which
    compile everything 50 would). scale: each time is multiplied by it (e.g. 1000 / 20 when 20
    of 1000 identical steps are timed)."""
    run: Callable[[], object]
    warmup: Callable[[], object] | None = None
    scale: float = 1.0


# --- pure parts: what runs when, and what the numbers say ------------------------------------
def alternation(groups: int, rounds: int, frameworks=FRAMEWORKS) -> Iterator[tuple[int, int, str]]:
    """(round, group, framework) in run order: every group in each framework in turn, round after
    round: minigen, torch, minigen, torch, ... for each group."""
    for round_index in range(rounds):
        for group in range(groups):
            for framework in frameworks:
                yield round_index, group, framework


def spread(values: list[float]) -> dict:
    """{"median", "min", "max"} of per-round values."""
    if not values:
        raise ValueError("spread: no values")
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(rounds: dict[str, list[dict]]) -> dict:
    """Per-framework results of one case over rounds (worker outputs) -> its summary.

    Timing: {framework: {"median_s", "min_s", "max_s", "rounds_s", "first_s" (set-up + first call),
    "since_spawn_s" (process start to first result)}, "ratio", "ratio_min", "ratio_max"}; a round's
    value is the median of its timed calls times the scale; first_s and since_spawn_s are medians.
    Memory: {framework: {"step_mb", "peak_mb", "before_mb"}, "ratio"} (step_mb ratio).
    A framework whose worker failed gets {"error": message} and no ratio."""
    out = {}
    per_round = {}
    for framework, results in rounds.items():
        errors = [r["error"] for r in results if "error" in r]
        if errors or not results:
            out[framework] = {"error": errors[0] if errors else "no result"}
            continue
        if "step_mb" in results[0]:
            out[framework] = {k: statistics.median(r[k] for r in results) for k in ("step_mb", "peak_mb", "before_mb")}
            continue
        values = [statistics.median(r["times_s"]) * r.get("scale", 1.0) for r in results]
        per_round[framework] = values
        s = spread(values)
        out[framework] = {"median_s": s["median"], "min_s": s["min"], "max_s": s["max"], "rounds_s": values,
                          "first_s": statistics.median(r["first_s"] for r in results)}
        if all("since_spawn_s" in r for r in results):
            out[framework]["since_spawn_s"] = statistics.median(r["since_spawn_s"] for r in results)
    m, t = out.get("minigen", {}), out.get("torch", {})
    if "median_s" in m and "median_s" in t:
        out["ratio"] = m["median_s"] / t["median_s"]
        pairs = [a / b for a, b in zip(per_round["minigen"], per_round["torch"])]
        out["ratio_min"], out["ratio_max"] = min(pairs), max(pairs)
    elif "step_mb" in m and "step_mb" in t:
        out["ratio"] = m["step_mb"] / max(t["step_mb"], 1e-9)
    return out


def format_spread(summary: dict, unit: str = "ms") -> str:
    """'12.3 ms (11.9-13.0)' for one framework's summary; '-' when missing, 'error' on failure."""
    if not summary:
        return "-"
    if "error" in summary:
        return "error"
    k = 1e3 if unit == "ms" else 1.0
    return f"{k * summary['median_s']:.4g} ({k * summary['min_s']:.3g}-{k * summary['max_s']:.3g})"


def format_ratio(summary: dict) -> str:
    if summary.get("ratio") is None:
        return "-"
    if "ratio_min" not in summary:
        return f"{summary['ratio']:.2f}"
    return f"{summary['ratio']:.2f} ({summary['ratio_min']:.2f}-{summary['ratio_max']:.2f})"


# --- running workers --------------------------------------------------------------------------
def available_frameworks() -> tuple[str, ...]:
    """minigen, and torch when it is installed (found without importing it here)."""
    return FRAMEWORKS if importlib.util.find_spec("torch") is not None else FRAMEWORKS[:1]


def worker_env(threads: int, tree: str = ROOT) -> dict:
    """The environment of every worker: the same thread count for every pool, the checkout `tree`
    importable (so `benchmarks.` and that checkout's `minigen` are found)."""
    env = dict(os.environ, MINIGEN_BENCH_THREADS=str(threads))
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env["PYTHONPATH"] = os.pathsep.join([tree] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_worker(framework: str, cases: list[Case], threads: int = THREADS, timeout: float = 1800,
               tree: str = ROOT) -> dict:
    """Run `cases` in one fresh `framework` process; {case name: worker result or {"error"}}. tree: the
    checkout whose minigen it imports (this checkout's worker runs there: e.g. the code before a change,
    with cases given as '/path/to/file.py:function' of this checkout)."""
    request = {"framework": framework, "threads": threads, "spawned_at": time.time(),
               "cases": [asdict(c) for c in cases]}
    worker = os.path.join(ROOT, "benchmarks", "worker.py")
    try:
        proc = subprocess.run([sys.executable, worker, framework], input=json.dumps(request), capture_output=True,
                              text=True, timeout=timeout, env=worker_env(threads, tree), cwd=tree)
    except subprocess.TimeoutExpired:
        return {c.name: {"error": f"worker timed out after {timeout:.0f} s"} for c in cases}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()
        why = tail[-1] if tail else f"worker exited with status {proc.returncode}"
        return {c.name: {"error": why} for c in cases}
    return json.loads(lines[-1])["cases"]


def run_cases(groups: list[list[Case]], rounds: int, frameworks=None, threads: int = THREADS,
              progress: Callable[[str], None] | None = print, other_trees: dict | None = None) -> dict:
    """Time every case: each group in one process per framework per round, rounds alternating.
    other_trees: {label: checkout}: minigen from these checkouts too, each under its label, after
    this checkout's minigen in every round. Returns {case name: summarize(...)} in the order the
    cases were given (the other trees' results under their labels)."""
    other_trees = other_trees or {}
    frameworks = tuple(frameworks or available_frameworks())
    frameworks = frameworks[:1] + tuple(other_trees) + frameworks[1:]
    names = [c.name for g in groups for c in g]
    if len(set(names)) != len(names):
        raise ValueError("run_cases: case names must be unique")
    raw = {name: {fw: [] for fw in frameworks} for name in names}
    started = time.perf_counter()
    for round_index, group, framework in alternation(len(groups), rounds, frameworks):
        if progress:
            progress(f"[{time.perf_counter() - started:6.0f}s] round {round_index + 1}/{rounds} {framework}: "
                     + ", ".join(c.name for c in groups[group][:3]) + (" ..." if len(groups[group]) > 3 else ""))
        tree = other_trees.get(framework, ROOT)
        runs_as = "minigen" if framework in other_trees else framework
        for name, result in run_worker(runs_as, groups[group], threads, tree=tree).items():
            raw[name][framework].append(result)
            if progress and "error" in result:
                progress(f"    {name} ({framework}) failed: {result['error']}")
    return {name: summarize(raw[name]) for name in names}


def run_memory(cases: list[Case], frameworks=None, threads: int = THREADS, rounds: int = 3,
               progress: Callable[[str], None] | None = print) -> dict:
    """Each memory case alone in a fresh process per framework, `rounds` times, alternating; the
    median of each. (One round is not enough: PyTorch's rise for the same conv VAE step read 80 and
    92 MB in two runs, minigen's 124.2 and 123.9.)"""
    for c in cases:
        if c.measure != "memory":
            raise ValueError(f"run_memory: case {c.name!r} measures {c.measure!r}, not memory")
    return run_cases([[c] for c in cases], rounds, frameworks, threads, progress)
