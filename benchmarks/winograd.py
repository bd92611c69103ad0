"""Winograd vs im2col vs PyTorch on the DDPM U-Net's stride-1 3x3 convs, forward + backward.

    python benchmarks/winograd.py [--rounds 3] [--batch 128] [--only 64-64] [--shapes 8-64@14] [--ddpm] [--out FILE]

Cases of benchmarks/harness.py: each framework alone in fresh processes, alternating rounds; the
minigen processes run each conv with the algorithm forced (`kernels.conv.forced`), once each with
Winograd F(2x2, 3x3), F(4x4, 3x3) (winograd4) and im2col, each against its own PyTorch process. Reported: per shape the
median over rounds of each (ms, with the min-max spread) and the ratios winograd/im2col, winograd4/im2col and
winograd/PyTorch. First layers (1 input channel) see data, so no side computes their input
gradient. This table is what `minigen.kernels.winograd.preferred` (the estimate plan) is decided from. --ddpm
times the whole DDPM training step (batch 128, benchmarks/run.py's) instead of single convs.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import THREADS, machine_info, write_json  # noqa: E402
from benchmarks.harness import Case, format_ratio, format_spread, run_cases  # noqa: E402

ALGORITHMS = ("winograd", "winograd4", "im2col")
# (C_in, C_out, H = W) of every stride-1 3x3 conv in the default DDPM U-Net (channels 32/64/64)
SHAPES = [(1, 32, 28), (32, 32, 28), (96, 32, 28), (32, 64, 14), (64, 64, 14), (128, 64, 14),
          (64, 64, 7), (128, 64, 7), (64, 64, 28), (32, 1, 28)]


def _forced(framework, algorithm, step):
    """step, run with `algorithm` forced in a minigen process (PyTorch's step as it is)."""
    if framework == "torch":
        return step
    from minigen.kernels import conv

    def run():
        with conv.forced(algorithm):
            step()
    return run


def conv3x3_case(framework, c_in, c_out, hw, batch, algorithm):
    """A harness case: one forward + backward of the 3x3 conv, batch `batch`."""
    return _forced(framework, algorithm, _step(framework, c_in, c_out, hw, batch))


def ddpm_step_case(framework, algorithm):
    """A harness case: the DDPM training step of benchmarks/run.py."""
    from benchmarks.run import train_step_case
    return _forced(framework, algorithm, train_step_case(framework, "ddpm"))


def _step(framework, c_in, c_out, hw, batch):
    """A zero-argument function running one forward + backward of the conv in `framework`."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c_in, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32) * 0.1
    g = np.ones((batch, c_out, hw, hw), np.float32)
    input_grad = c_in > 1
    if framework == "torch":
        import torch
        import torch.nn.functional as F
        xt, wt = torch.from_numpy(x).requires_grad_(input_grad), torch.from_numpy(w).requires_grad_()
        gt = torch.from_numpy(g)

        def step():
            F.conv2d(xt, wt, padding=1).backward(gt)
            xt.grad = wt.grad = None
        return step
    from minigen import kernels as K

    def step():
        K.conv2d_forward(x, w, None, 1, 1)
        K.conv2d_backward(g, x, w, 1, 1, input_grad=input_grad)
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=THREADS)
    p.add_argument("--only", default="", help="only shapes whose name (e.g. 64-64@14) contains this text")
    p.add_argument("--shapes", default="", help="other convs instead, e.g. 4-64@14,8-64@14 (C_in-C_out@H=W)")
    p.add_argument("--ddpm", action="store_true", help="time the DDPM training step instead of single convs")
    p.add_argument("--out", help="write the results here as JSON")
    args = p.parse_args(argv)
    shapes = [tuple(int(v) for v in s.replace("@", "-").split("-")) for s in args.shapes.split(",")] \
        if args.shapes else SHAPES
    names = ["DDPM training step"] if args.ddpm else \
        [f"{c_in}-{c_out}@{hw}" for c_in, c_out, hw in shapes if args.only in f"{c_in}-{c_out}@{hw}"]
    groups = []
    for algorithm in ALGORITHMS:
        if args.ddpm:
            groups.append([Case(f"DDPM training step {algorithm}", "benchmarks.winograd:ddpm_step_case",
                                {"algorithm": algorithm})])
        else:
            groups.append([Case(f"{name} {algorithm}", "benchmarks.winograd:conv3x3_case",
                                dict(zip(("c_in", "c_out", "hw"), map(int, name.replace("@", "-").split("-"))),
                                     batch=args.batch, algorithm=algorithm), iterations=5)
                           for name in names])
    machine = machine_info(args.threads)
    results = run_cases(groups, args.rounds, threads=args.threads, progress=lambda m: print(m, file=sys.stderr))
    print(f"{machine['cpu']}, {machine['vector_bits']}-bit Numba loops, {machine['blas']}, {args.threads} threads")
    print(f"batch {args.batch}, fwd+bwd: median (min-max) over {args.rounds} rounds of separate processes")
    print("| conv | winograd ms | winograd4 ms | im2col ms | PyTorch ms | wino/im2col | wino4/im2col | wino/PyTorch |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")

    def ratio(a, b):
        return f"{a['median_s'] / b['median_s']:.2f}" if "median_s" in a and "median_s" in b else "-"
    for name in names:
        wino, wino4, im2col = (results[f"{name} {algorithm}"] for algorithm in ALGORITHMS)
        fast, fast4, slow = (r.get("minigen", {}) for r in (wino, wino4, im2col))
        print(f"| {name} | {format_spread(fast)} | {format_spread(fast4)} | {format_spread(slow)} | "
              f"{format_spread(wino.get('torch', {}))} | {ratio(fast, slow)} | {ratio(fast4, slow)} | {format_ratio(wino)} |")
    if args.out:
        write_json(args.out, {"machine": machine, "batch": args.batch, "rounds": args.rounds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
