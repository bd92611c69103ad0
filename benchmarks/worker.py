"""One framework alone in a fresh process: run benchmark cases, print their timings as JSON.

    python -m benchmarks.worker FRAMEWORK < request.json      (what benchmarks/harness.py does)
    python -m benchmarks.worker FRAMEWORK CASE [PARAMS_JSON]  (one case by hand, e.g.
        python -m benchmarks.worker minigen benchmarks.ops:tiny_chain)

The request: {"framework", "threads", "spawned_at" (time.time() when the parent started us),
"cases": [harness.Case as a dict, ...]}. The last line printed is the answer:
{"framework", "threads", "pools" (thread counts in force), "cases": {name: result}} where a timing result is
{"times_s": [...], "scale", "setup_s", "first_s" (set-up + first call: the time to first
result, JIT compilation included), "since_spawn_s" (process start to this case's first result)},
a memory result {"before_mb", "peak_mb", "step_mb"}, and a failed case {"error": "..."}.
Whatever the cases print goes to stderr, so stdout stays JSON.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback


def resolve_case(func: str):
    """'package.module:function' (or '/path/to/file.py:function': a case of this checkout run against
    another checkout's minigen) -> the function."""
    module, _, name = func.rpartition(":")
    if not module:
        raise ValueError(f"case function must be 'module:function', got {func!r}")
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(os.path.basename(module)[:-3], module)
        loaded = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loaded)
        return getattr(loaded, name)
    return getattr(importlib.import_module(module), name)


def time_case(build, framework: str, case: dict, spawned_at: float) -> dict:
    from benchmarks.harness import Work
    start = time.perf_counter()
    work = build(framework, **case["params"])
    setup = time.perf_counter() - start
    if not isinstance(work, Work):
        work = Work(run=work)
    warm = work.warmup or work.run
    for i in range(max(case["warmup"], 1)):
        warm()
        if i == 0:
            first = time.perf_counter() - start
            since_spawn = time.time() - spawned_at
    times = []
    while len(times) < case["iterations"] or (sum(times) < case["min_seconds"] and len(times) < 1000):
        t = time.perf_counter()
        work.run()
        times.append(time.perf_counter() - t)
    return {"times_s": times, "scale": work.scale, "setup_s": setup, "first_s": first, "since_spawn_s": since_spawn}


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_case(build, framework: str, case: dict) -> dict:
    """How far `iterations` calls raise the peak resident size above the size after set-up. The
    kernel's peak mark is reset after set-up (echo 5 > /proc/self/clear_refs), so imports and
    set-up do not count."""
    from benchmarks.harness import Work
    work = build(framework, **case["params"])
    run = work.run if isinstance(work, Work) else work
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    for _ in range(max(case["iterations"], 1)):
        run()
    peak = _status_mb("VmHWM")
    return {"before_mb": before, "peak_mb": peak, "step_mb": max(peak - before, 0.0)}


def run_request(request: dict) -> dict:
    """The request's cases in this process. minigen's convs run with the plan measured on this machine
    (MINIGEN_PLAN, when set, still wins); the timing happens in each case's untimed warm-up."""
    from benchmarks.common import set_threads, settle_interpreter
    from minigen.kernels import plan
    framework, threads = request["framework"], int(request["threads"])
    set_threads(threads, framework)
    settle_interpreter()
    results = {}
    with plan.default_mode("measure"):
        _run_cases(request, framework, results)
    return {"framework": framework, "threads": threads, "pools": thread_pools(), "cases": results}


def _run_cases(request: dict, framework: str, results: dict) -> None:
    for case in request["cases"]:
        try:
            build = resolve_case(case["func"])
            with contextlib.redirect_stdout(sys.stderr):
                if case.get("measure", "time") == "memory":
                    results[case["name"]] = memory_case(build, framework, case)
                else:
                    results[case["name"]] = time_case(build, framework, case, request["spawned_at"])
        except Exception as e:  # one failing case must not hide the others' results
            traceback.print_exc()
            results[case["name"]] = {"error": f"{type(e).__name__}: {e}"}


def thread_pools() -> dict:
    """The thread counts actually in force: Numba's, and PyTorch's in a PyTorch process."""
    import numba
    pools = {"numba": numba.get_num_threads()}
    if "torch" in sys.modules:
        pools["torch"] = sys.modules["torch"].get_num_threads()
    return pools


def main(argv: list[str]) -> int:
    from dataclasses import asdict

    from benchmarks.common import THREADS
    from benchmarks.harness import FRAMEWORKS, Case
    if not argv or argv[0] not in FRAMEWORKS or len(argv) > 3:
        print(__doc__, file=sys.stderr)
        return 2
    if len(argv) == 1:
        request = json.load(sys.stdin)
    else:
        params = json.loads(argv[2]) if len(argv) == 3 else {}
        request = {"framework": argv[0], "threads": THREADS, "spawned_at": time.time(),
                   "cases": [asdict(Case(argv[1], argv[1], params))]}
    if request["framework"] != argv[0]:
        print(f"worker: request is for {request['framework']!r}, started as {argv[0]!r}", file=sys.stderr)
        return 2
    print(json.dumps(run_request(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
