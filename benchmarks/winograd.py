"""Winograd vs im2col vs PyTorch on the DDPM U-Net's stride-1 3x3 convs, forward + backward.

    python benchmarks/winograd.py [--rounds 3] [--repeats 5] [--batch 128] [--only 64-64] [--shapes 8-64@14] [--ddpm]

Each of minigen-winograd, minigen-im2col and PyTorch runs alone in a fresh process of its
own (same thread count, benchmarks/common.py), alternating for several rounds; every
process times every shape (median of --repeats after a warm-up). Reported: per shape the
median over rounds of each (ms, with the min-max spread) and the ratios winograd/im2col and
winograd/PyTorch. First layers (1 input channel) see data, so no side computes their input
gradient. This table is what `minigen.kernels.winograd.preferred` (the estimate plan) is decided from. --ddpm
times the whole DDPM training step (batch 128, benchmarks/run.py's) instead of single convs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

IMPLS = ("winograd", "im2col", "torch")
# (C_in, C_out, H = W) of every stride-1 3x3 conv in the default DDPM U-Net (channels 32/64/64)
SHAPES = [(1, 32, 28), (32, 32, 28), (96, 32, 28), (32, 64, 14), (64, 64, 14), (128, 64, 14),
          (64, 64, 7), (128, 64, 7), (64, 64, 28), (32, 1, 28)]


def _step(impl, c_in, c_out, hw, batch):
    """A zero-argument function running one forward + backward of the conv in `impl`."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, c_in, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 3), dtype=np.float32) * 0.1
    g = np.ones((batch, c_out, hw, hw), np.float32)
    input_grad = c_in > 1
    if impl == "torch":
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


def child(impl, shapes, batch, repeats, ddpm=False) -> dict:
    from benchmarks.common import median_seconds, set_threads, settle_interpreter
    set_threads()
    if impl != "torch":                  # force the algorithm under test wherever it takes the conv
        os.environ["MINIGEN_CONV"] = impl
    if ddpm:
        from benchmarks.run import training_step
        step = training_step("ddpm", "torch" if impl == "torch" else "minigen")
        settle_interpreter()
        return {"DDPM training step": 1e3 * median_seconds(step, repeats)}
    settle_interpreter()
    return {f"{c_in}-{c_out}@{hw}": 1e3 * median_seconds(_step(impl, c_in, c_out, hw, batch), repeats)
            for c_in, c_out, hw in shapes}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--only", default="", help="only shapes whose name (e.g. 64-64@14) contains this text")
    p.add_argument("--shapes", default="", help="other convs instead, e.g. 4-64@14,8-64@14 (C_in-C_out@H=W)")
    p.add_argument("--ddpm", action="store_true", help="time the DDPM training step instead of single convs")
    p.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    shapes = [tuple(int(v) for v in s.replace("@", "-").split("-")) for s in args.shapes.split(",")] \
        if args.shapes else SHAPES
    shapes = [s for s in shapes if args.only in f"{s[0]}-{s[1]}@{s[2]}"]
    if args.child:
        print(json.dumps(child(args.child, shapes, args.batch, args.repeats, args.ddpm)))
        return 0
    times = {impl: [] for impl in IMPLS}
    for r in range(args.rounds):
        for impl in IMPLS:
            cmd = [sys.executable, os.path.abspath(__file__), "--child", impl, "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--only", args.only, "--shapes", args.shapes] + \
                (["--ddpm"] if args.ddpm else [])
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            times[impl].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r + 1} {impl} done", file=sys.stderr, flush=True)
    print(f"batch {args.batch}, fwd+bwd ms: median (min-max) over {args.rounds} rounds of separate processes")
    print("| conv | winograd | im2col | PyTorch | wino/im2col | wino/PyTorch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in times["winograd"][0]:
        cells, med = [], {}
        for impl in IMPLS:
            vals = [t[name] for t in times[impl]]
            med[impl] = statistics.median(vals)
            cells.append(f"{med[impl]:.1f} ({min(vals):.1f}-{max(vals):.1f})")
        # ratios within each round's alternated runs, then their median: the machine is shared
        r_im, r_pt = (statistics.median(t[name] / o[name] for t, o in zip(times["winograd"], times[other]))
                      for other in ("im2col", "torch"))
        print(f"| {name} | " + " | ".join(cells) + f" | {r_im:.2f} | {r_pt:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
