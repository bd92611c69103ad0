"""Shared benchmark plumbing: thread settings, timing, machine facts, the practical FLOP peak.

Both frameworks run in the same process with the same thread count, so ratios
compare like with like on a shared, noisy machine.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import numpy as np

THREADS = int(os.environ.get("MINIGEN_BENCH_THREADS", os.cpu_count() or 1))


def set_threads(threads: int = THREADS):
    """Same thread count for NumPy's BLAS (via threadpoolctl when present), Numba and PyTorch."""
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
    except ImportError:
        pass
    torch = try_torch()
    if torch is not None:
        torch.set_num_threads(threads)


def settle_interpreter() -> None:
    """Collect, then freeze the objects alive after set-up (gc.freeze) for both frameworks alike.

    Importing PyTorch leaves ~150,000 Python objects that the cyclic garbage collector would
    re-scan on every full collection triggered by the many small objects an autograd graph
    makes. A process that only runs minigen never pays that; freezing keeps the comparison to
    the frameworks themselves."""
    import gc
    gc.collect()
    gc.freeze()


def try_torch():
    """PyTorch if installed, else None (benchmarks then report minigen alone)."""
    try:
        import torch
        return torch
    except ImportError:
        return None


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time of fn() over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def numpy_matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """The machine's practical float32 peak: GFLOP/s of NumPy's n x n x n matmul."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    import numba
    torch = try_torch()
    return {"cpu": cpu_model(), "threads": THREADS, "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "numpy_matmul_gflops": round(numpy_matmul_gflops(), 1)}


def write_json(path: str, obj) -> None:
    from minigen.serialize import atomic_write
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)
    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))
