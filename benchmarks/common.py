"""Shared benchmark plumbing: thread settings, the model variants, machine facts, the practical FLOP peak.

The timing itself is benchmarks/harness.py: each framework alone in a fresh process of its own
(benchmarks/worker.py), all with the same thread count.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

THREADS = int(os.environ.get("MINIGEN_BENCH_THREADS", os.cpu_count() or 1))


# The model variants the benchmarks measure: (name, family, config overrides). The conv VAE and the
# conv flow are variants of their families' default configs.
VARIANTS = [("vae", "vae", {}), ("vae-conv", "vae", {"variant": "conv"}), ("flow", "flow", {}),
            ("flow-conv", "flow", {"variant": "conv"}), ("nar", "nar", {}), ("pixelcnn", "pixelcnn", {}),
            ("ddpm", "ddpm", {}), ("flowmatch", "flowmatch", {}), ("gan", "gan", {})]


def variant(name: str) -> tuple[str, dict]:
    """A variant's (family, config overrides)."""
    for v, family, config in VARIANTS:
        if v == name:
            return family, config
    raise KeyError(f"unknown model variant {name!r}; expected one of {', '.join(v for v, _, _ in VARIANTS)}")


def set_threads(threads: int = THREADS, framework: str = "minigen"):
    """Same thread count for NumPy's BLAS (via threadpoolctl), Numba and, in a
    PyTorch process, PyTorch (a minigen process never imports it).

    In a PyTorch process torch is imported FIRST: importing Numba and starting its threads first
    loads the system's libgomp before PyTorch's own OpenMP runtime, and PyTorch then ran a VAE
    training step 5x slower (23.8 ms against 4.3 ms, measured), which made minigen look faster.
    In a minigen process minigen is imported first, as the `minigen` command does: its import sets
    how OpenMP's and OpenBLAS's threads wait (minigen/__init__.py), which counts only before Numba
    starts its threads and before NumPy loads OpenBLAS (this module imports NumPy only inside
    functions, so a worker has not loaded it yet)."""
    if framework == "torch":
        import torch    # noqa: F401  (before numba: see above)
    else:
        import minigen  # noqa: F401  (before numba starts its threads: its OpenMP settings, minigen/__init__.py)
    import numba
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    from threadpoolctl import threadpool_limits
    threadpool_limits(threads)
    if framework == "torch":
        import torch
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
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9


def numba_vector_bits() -> int:
    """The vector width of the loops Numba compiles here: 512 if an axpy loop uses zmm registers, 256
    for ymm, else 128. LLVM's cost model may keep an AVX-512 CPU at 256 bits (`prefer-256-bit`, e.g.
    on Intel's Skylake-SP to Rocket Lake cores) unless NUMBA_CPU_FEATURES says otherwise."""
    import numpy as np
    from numba import njit

    @njit
    def axpy(a, x, y):
        for i in range(x.size):
            y[i] += a * x[i]
    x = np.ones(64, np.float32)
    axpy(np.float32(2), x, x.copy())
    asm = next(iter(axpy.inspect_asm().values()))
    return 512 if "zmm" in asm else 256 if "ymm" in asm else 128


def machine_info(threads: int = THREADS) -> dict:
    import numba
    import numpy as np

    from minigen.kernels import convbase
    from minigen.kernels import plan
    return {"cpu": plan.machine()["cpu"], "vector_bits": numba_vector_bits(), "threads": threads,
            "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__, "torch": torch_version(),
            "blas": convbase.blas_kernels(), "numpy_matmul_gflops": round(numpy_matmul_gflops(), 1)}


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


def torch_version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def child_or_args(parser, argv, child):
    """The parsed arguments of a benchmark script that re-runs itself as its own worker: given
    `--child SPEC` (set by `spawn_child`), it runs child(SPEC) instead, prints the result as one JSON
    line and exits."""
    import argparse
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        raise SystemExit(0)
    return args


def spawn_child(script: str, spec: str, threads: int, **env) -> dict:
    """Run `python script --child spec` in a fresh process with `threads` threads for every pool
    (OpenMP, BLAS, Numba) and the extra environment `env` (a None value removes a variable); returns
    the JSON of its last line, or raises with the end of its stderr."""
    import subprocess
    import sys
    environ = {**os.environ, **{v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                           "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}}
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    out = subprocess.run([sys.executable, os.path.abspath(script), "--child", spec], env=environ,
                         capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode:
        raise RuntimeError(f"{os.path.basename(script)} --child {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
