"""The conv plan: which algorithm runs each conv part on this machine (FFTW's planner is the model).

Thresholds measured on one CPU need not hold on another (docs/fast-paths.md#the-plan). So with
MINIGEN_PLAN=measure, the first time a part (forward, input gradient, weight
gradient) of a geometry is seen, `run` times every algorithm that takes it on the call's own arrays,
runs the fastest from then on, and remembers it: in memory for the process and in a small
"wisdom" file per CPU in the cache folder ($MINIGEN_DATA, else ~/.cache/minigen), so the next
process measures nothing. The file records the CPU model, its feature flags, the thread count and
the minigen version; one made for another of these is stale, and it and a corrupt one are ignored
with a warning (then rewritten). Deleting it is always safe.

MINIGEN_PLAN=estimate times nothing: the hand-measured thresholds of the conv table decide. It is the
default of a bare conv call (and of the tests, so they are deterministic). Training (`train.train`,
the tour) and the benchmarks make measuring their default for the block they run (`default_mode`):
over a run's thousands of steps the bounded first-use cost pays back (docs/measurements.md#conv-plan).
MINIGEN_PLAN, when set, wins over both.

The budget: each candidate runs once to warm up (compiling or loading its Numba code, filling its
buffers), then up to TIMED_RUNS times more, timed. Its time is the median of its timed runs: one run
decided by a moment's load elsewhere on a shared machine would be remembered for good. A candidate
that is clearly slower stops early: not timed at all when its warm-up took SKIP_FACTOR times the best
time so far, after one timed run when that run took LOSING_FACTOR times it. A part of at most
TRIAL_MULTIPLY_ADDS is timed on the call's own arrays, and the winner's timed run is the call's
answer. A larger one is timed on a trial: the first images of the batch, as many as make up
TRIAL_MULTIPLY_ADDS, after which the winner runs the whole call. So measuring adds a bounded time
(tens of ms) to the first call of each geometry only, however large the batch.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import threading
import time
import warnings
from importlib import metadata
from pathlib import Path

import numba

from minigen.errors import ConfigError

MODES = ("estimate", "measure")
SKIP_FACTOR = 3
LOSING_FACTOR = 1.5
TIMED_RUNS = 3
# A trial's work, at least: the size from which a conv is shared between the threads
# (convbase.SERIAL_MULTIPLY_ADDS), as the whole call would be; 2-5 ms a run at these cores' rates.
TRIAL_MULTIPLY_ADDS = 1 << 27

_clock = time.perf_counter               # the tests put a fake clock here
_lock = threading.Lock()
_winners: dict[str, str] | None = None   # plan key -> algorithm; None until the wisdom file is read
timings: dict[str, dict[str, float]] = {}    # plan key -> {algorithm: seconds}, this process's measurements
multiply_adds: dict[str, int] = {}            # plan key -> the part's multiply-adds (for GFLOP/s)


_defaults: list[str] = []               # the `default_mode` blocks' modes, innermost last


def mode() -> str:
    """$MINIGEN_PLAN, else the innermost `default_mode` block's mode, else "estimate"."""
    value = os.environ.get("MINIGEN_PLAN") or (_defaults[-1] if _defaults else "estimate")
    if value not in MODES:
        raise ConfigError(f"MINIGEN_PLAN={value!r} is not a plan mode; expected one of {', '.join(MODES)}")
    return value


@contextlib.contextmanager
def default_mode(value: str):
    """Within the block, `value` is the plan mode unless MINIGEN_PLAN says otherwise."""
    if value not in MODES:
        raise ConfigError(f"plan.default_mode({value!r}): expected one of {', '.join(MODES)}")
    _defaults.append(value)
    try:
        yield
    finally:
        _defaults.pop()


def machine() -> dict:
    """What a plan is only valid for: the CPU model, the features Numba compiles for, the threads
    and the minigen version."""
    from llvmlite import binding
    try:
        version = metadata.version("minigen")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {"cpu": f"{cpu_model()} ({binding.get_host_cpu_name()})",
            "features": numba.config.CPU_FEATURES or binding.get_host_cpu_features().flatten(),
            "threads": numba.config.NUMBA_NUM_THREADS, "minigen": version}


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (else the platform's processor or machine name)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def wisdom_path() -> Path:
    """The wisdom file of this CPU and thread count."""
    from llvmlite import binding
    root = Path(os.environ.get("MINIGEN_DATA") or Path.home() / ".cache" / "minigen")
    name = re.sub(r"[^A-Za-z0-9]+", "-", binding.get_host_cpu_name())
    return root / f"conv-plan-{name}-{numba.config.NUMBA_NUM_THREADS}threads.json"


def _read_wisdom() -> dict[str, str]:
    path = wisdom_path()
    if not path.exists():
        return {}
    try:
        saved = json.loads(path.read_text())
        here, winners = machine(), saved["winners"]
        if not isinstance(winners, dict):
            raise ValueError("its winners are not a table")
    except (OSError, ValueError, KeyError, TypeError) as e:
        warnings.warn(f"ignoring the conv plan file {path}: it is corrupt ({e}); the convs will be timed again")
        return {}
    if saved.get("machine") != here:
        warnings.warn(f"ignoring the conv plan file {path}: it was made for {saved.get('machine')}, not this "
                      f"machine ({here}); the convs will be timed again")
        return {}
    return {str(k): str(v) for k, v in winners.items()}


def _write_wisdom(winners: dict[str, str]) -> None:
    """Write the file whole under a temporary name, then rename it: a reader never sees half a file.
    What another process (e.g. the tour's other lane) saved since this one read the file is kept."""
    path = wisdom_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # a corrupt or stale file was reported when first read
            winners = {**_read_wisdom(), **winners}
        temporary = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_text(json.dumps({"machine": machine(), "winners": winners}, indent=1, sort_keys=True))
        os.replace(temporary, path)
    except OSError as e:
        warnings.warn(f"could not save the conv plan to {path} ({e}); it will be measured again next time")


def known(key: str) -> str | None:
    """The remembered winner for `key` (None if it was never measured here)."""
    global _winners
    with _lock:
        if _winners is None:
            _winners = _read_wisdom()
        return _winners.get(key)


def forget() -> None:
    """Drop what this process remembers (the file is read again on the next lookup)."""
    global _winners
    with _lock:
        _winners = None
        timings.clear()
        multiply_adds.clear()


def trial_images(batch: int, work: int) -> int:
    """How many of a part's `batch` images its trial takes: the fewest that make up TRIAL_MULTIPLY_ADDS
    of its `work` (all of them for a smaller part)."""
    return batch if work <= TRIAL_MULTIPLY_ADDS else min(batch, -(-TRIAL_MULTIPLY_ADDS * batch // work))


def run(key: str, candidates: list[str], estimate: str, run_candidate, work: int = 0, trial=None):
    """run_candidate(name)'s result for the algorithm the plan picks for `key` among `candidates`
    (names; `estimate` is the thresholds' pick), measuring them first if this is the first time.
    work: the part's multiply-adds, kept with the timings for reports. trial, when given, is
    (run_trial, trial_work): run_trial(name) runs the candidate on the first images of the batch
    (`trial_images`), trial_work multiply-adds, and the plan times that when it is less than the part."""
    if mode() == "estimate" or len(candidates) == 1:
        return run_candidate(estimate)
    winner = known(key)
    if winner in candidates:
        return run_candidate(winner)
    on_trial = trial is not None and trial[1] < work
    seconds, result = _measure([estimate] + [c for c in candidates if c != estimate],
                               trial[0] if on_trial else run_candidate)
    winner = min(seconds, key=seconds.get)
    with _lock:
        timings[key], multiply_adds[key] = seconds, trial[1] if on_trial else work
        _winners[key] = winner
        _write_wisdom(dict(_winners))
    return run_candidate(winner) if on_trial else result


def _measure(names: list[str], run_candidate) -> tuple[dict[str, float], object]:
    """Each candidate's time (the median of its timed runs, or its warm-up when that alone was too
    slow) and the fastest one's result."""
    seconds, best = {}, (float("inf"), None)
    for name in names:
        start = _clock()
        result = run_candidate(name)
        warm = _clock() - start
        if warm < SKIP_FACTOR * best[0]:
            runs = []
            while len(runs) < TIMED_RUNS and not (runs and runs[0] >= LOSING_FACTOR * best[0]):
                start = _clock()
                result = run_candidate(name)
                runs.append(_clock() - start)
            seconds[name] = statistics.median(runs)
        else:
            seconds[name] = warm
        if seconds[name] < best[0]:
            best = (seconds[name], result)
    return seconds, best[1]
