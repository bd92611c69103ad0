"""minigen vs PyTorch CPU on single layer ops, forward + backward, in one process.

    python benchmarks/ops.py [--quick] [--out benchmarks/results/ops.json]
    (or: minigen bench ops ...)

Both run with the same thread count (benchmarks/common.py). Each op: median ms over
repeats after warm-up, minigen and PyTorch timed alternately so a noisy machine hurts
both alike; GFLOP/s of the arithmetic done (forward + the backward that is needed:
first layers see data, so neither side computes their input gradient); ratio
minigen / PyTorch. Also: NumPy's float32 1024^3 matmul GFLOP/s (the practical peak)
and how long a fresh process takes to its first conv with an empty and a warm Numba cache.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import machine_info, print_table, set_threads, settle_interpreter, try_torch, write_json  # noqa: E402
from minigen import ops  # noqa: E402
from minigen.tensor import Tensor  # noqa: E402

N = 128


def conv_flops(n, c_in, c_out, out_hw, kernel, groups=1):
    return 2 * n * c_out * out_hw[0] * out_hw[1] * (c_in // groups) * kernel[0] * kernel[1]


def _cases():
    """(name, forward FLOPs, passes, build) where build(lib) returns a zero-argument function
    running forward + backward in `lib` ("minigen" or "torch"); passes = how many forward-sized
    matrix products that is (3 with an input gradient, 2 without)."""
    def conv(c_in, c_out, hw, k, stride, padding, input_grad, transposed=False, mask=None):
        def build(lib):
            rng = np.random.default_rng(0)
            w_shape = (c_in, c_out, k, k) if transposed else (c_out, c_in, k, k)
            x = rng.standard_normal((N, c_in, hw, hw), dtype=np.float32)
            w = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
            b = np.zeros(c_out, np.float32)
            if lib == "torch":
                import torch
                import torch.nn.functional as F
                xt = torch.from_numpy(x).requires_grad_(input_grad)
                wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
                mt = None if mask is None else torch.from_numpy(ops.causal_mask(k, k, mask))
                fn = F.conv_transpose2d if transposed else F.conv2d

                def step():
                    y = fn(xt, wt if mt is None else wt * mt, bt, stride=stride, padding=padding)
                    y.backward(torch.ones_like(y))
                    wt.grad = bt.grad = xt.grad = None
                return step
            xm = Tensor(x, requires_grad=input_grad)
            wm, bm = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)

            def step():
                if mask is not None:
                    y = ops.masked_conv2d(xm, wm, bm, mask)
                elif transposed:
                    y = ops.conv_transpose2d(xm, wm, bm, stride, padding)
                else:
                    y = ops.conv2d(xm, wm, bm, stride, padding)
                y.backward(np.ones(y.shape, np.float32))
                wm.grad = bm.grad = xm.grad = None
            return step
        return build

    def norm(kind):
        def build(lib):
            x = np.random.default_rng(0).standard_normal((N, 64, 28, 28), dtype=np.float32)
            w, b = np.ones(64, np.float32), np.zeros(64, np.float32)
            if lib == "torch":
                import torch
                import torch.nn.functional as F
                xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
                rm, rv = torch.zeros(64), torch.ones(64)

                def step():
                    y = F.group_norm(xt, 8, wt, bt) if kind == "group" else F.batch_norm(xt, rm, rv, wt, bt, True)
                    y.backward(torch.ones_like(y))
                    xt.grad = wt.grad = bt.grad = None
                return step
            xm, wm, bm = (Tensor(a, requires_grad=True) for a in (x, w, b))
            rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)

            def step():
                y = ops.group_norm(xm, 8, wm, bm) if kind == "group" else ops.batch_norm(xm, wm, bm, rm, rv, True)
                y.backward(np.ones(y.shape, np.float32))
                xm.grad = wm.grad = bm.grad = None
            return step
        return build

    def matmul(lib):
        rng = np.random.default_rng(0)
        a = rng.standard_normal((N, 784), dtype=np.float32)
        b = rng.standard_normal((784, 400), dtype=np.float32)
        if lib == "torch":
            import torch
            at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()

            def step():
                y = at @ bt
                y.backward(torch.ones_like(y))
                at.grad = bt.grad = None
            return step
        am, bm = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)

        def step():
            y = am @ bm
            y.backward(np.ones(y.shape, np.float32))
            am.grad = bm.grad = None
        return step

    def tiny_chain(lib):
        """Framework overhead: 10,000 elementwise ops on 16-element tensors, forward + backward."""
        x = np.linspace(-1, 1, 16, dtype=np.float32)
        if lib == "torch":
            import torch
            leaf, tanh = torch.from_numpy(x).requires_grad_(), torch.tanh
        else:
            leaf, tanh = Tensor(x, requires_grad=True), ops.tanh

        def step():
            y = leaf
            for _ in range(2500):              # 4 ops each: mul, add, tanh, sub
                y = tanh(y * 0.9 + 0.1) - 0.01
            y.sum().backward()
            leaf.grad = None
        return step

    return [
        ("10,000 tiny elementwise ops (16 values)", None, None, tiny_chain),
        ("conv2d 1->32 28x28 k3 p1", conv_flops(N, 1, 32, (28, 28), (3, 3)), 2, conv(1, 32, 28, 3, 1, 1, False)),
        ("conv2d 64->64 28x28 k3 p1", conv_flops(N, 64, 64, (28, 28), (3, 3)), 3, conv(64, 64, 28, 3, 1, 1, True)),
        ("conv2d 64->128 28->14 k4 s2 p1", conv_flops(N, 64, 128, (14, 14), (4, 4)), 3,
         conv(64, 128, 28, 4, 2, 1, True)),
        ("conv_transpose2d 128->64 7->14 k4 s2 p1", conv_flops(N, 64, 128, (7, 7), (4, 4)), 3,
         conv(128, 64, 7, 4, 2, 1, True, transposed=True)),
        ("masked conv A 1->64 28x28 k7", conv_flops(N, 1, 64, (28, 28), (7, 7)), 2,
         conv(1, 64, 28, 7, 1, 3, False, mask="A")),
        ("group_norm(8) 64x28x28", None, None, norm("group")),
        ("batch_norm 64x28x28", None, None, norm("batch")),
        ("matmul 128x784 @ 784x400", 2 * N * 784 * 400, 3, matmul),
    ]


def time_pair(fns: dict, repeats: int, warmup: int = 2) -> dict:
    """Median seconds of each function, calling them in turn so that load hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


FIRST_CONV = ("import time; t = time.perf_counter(); import numpy as np; from minigen import kernels; "
              "kernels.conv2d_forward(np.ones((2, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32), "
              "None, 1, 1); print(time.perf_counter() - t)")


def start_times() -> dict:
    """Seconds for a fresh Python process to import minigen and run its first conv forward, with an
    empty Numba cache (everything compiles) and then with the cache that run left (a second start)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        result = {}
        for label in ("cold_s", "warm_s"):
            start = time.perf_counter()
            inner = subprocess.run([sys.executable, "-c", FIRST_CONV], env=env, capture_output=True, text=True,
                                   check=True, cwd=os.path.dirname(HERE))
            result[label] = round(time.perf_counter() - start, 2)
            result[label.replace("_s", "_in_process_s")] = round(float(inner.stdout), 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (a rough number in ~1 minute)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "ops.json"), help="where to write the JSON")
    p.add_argument("--only", default="", help="run only the ops whose name contains this text")
    args = p.parse_args(argv)
    set_threads()
    settle_interpreter()
    torch = try_torch()
    if torch is None:
        print("PyTorch is not installed: reporting minigen alone.")
    repeats = 3 if args.quick else 10
    info = machine_info()
    peak = info["numpy_matmul_gflops"]
    rows = []
    for name, flops, passes, build in _cases():
        if args.only not in name:
            continue
        fns = {"minigen": build("minigen")}
        if torch is not None:
            fns["torch"] = build("torch")
        t = time_pair(fns, repeats)
        row = {"op": name, "minigen_ms": 1e3 * t["minigen"], "torch_ms": None, "ratio": None,
               "minigen_gflops": None, "torch_gflops": None, "pct_peak": None}
        if torch is not None:
            row["torch_ms"] = 1e3 * t["torch"]
            row["ratio"] = t["minigen"] / t["torch"]
        if flops is not None:
            work = flops * passes / 1e9
            row["minigen_gflops"] = work / t["minigen"]
            row["pct_peak"] = 100 * row["minigen_gflops"] / peak
            if torch is not None:
                row["torch_gflops"] = work / t["torch"]
        rows.append(row)
        print(f"  {name}: minigen {row['minigen_ms']:.1f} ms" +
              (f", torch {row['torch_ms']:.1f} ms, ratio {row['ratio']:.2f}" if torch is not None else ""),
              flush=True)
    starts = start_times()
    print(f"\n{info['cpu']}, {info['threads']} threads; NumPy float32 1024^3 matmul: {peak} GFLOP/s "
          f"(practical peak); load average {os.getloadavg()[0]:.1f}")
    print("forward + backward, median over", repeats, "repeats after warm-up:\n")
    print_table(rows, ["op", "minigen_ms", "torch_ms", "ratio", "minigen_gflops", "torch_gflops", "pct_peak"])
    print(f"\nfresh process to first conv: {starts['cold_s']} s with an empty Numba cache, "
          f"{starts['warm_s']} s with a warm one")
    write_json(args.out, {"machine": info, "repeats": repeats, "load_average": os.getloadavg(),
                          "ops": rows, "start": starts})
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
