"""Micro-benchmarks of the conv shapes the fast paths touch (3x3 direct, masked, 1x1, strided, transposed),
and DDPM DDIM sampling of 16 images: minigen (this tree), minigen (another tree, e.g. the code
before a change) and PyTorch, each in a fresh process of its own, alternating, several rounds.

    python benchmarks/fast_paths.py [--old PATH_TO_OLD_TREE] [--rounds 3] [--threads 2] [--only TEXT,TEXT]

Each process runs one case: forward + backward at batch 128 (first layers: no input
gradient, as in the models), median of `--repeats` after a warm-up; the driver prints each
framework's median over the rounds with the min-max spread, and the ratios to PyTorch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
N = 128

# name -> (kind, c_in, c_out, hw, k, stride, padding, input_grad)
CASES = {
    "3x3 64->64 7 (DDPM bottom)": ("conv", 64, 64, 7, 3, 1, 1, True),
    "3x3 128->64 7 (DDPM up)": ("conv", 128, 64, 7, 3, 1, 1, True),
    "3x3 64->64 14 (DDPM, conv flow)": ("conv", 64, 64, 14, 3, 1, 1, True),
    "3x3 128->64 14 (DDPM up)": ("conv", 128, 64, 14, 3, 1, 1, True),
    "3x3 32->64 14 (DDPM)": ("conv", 32, 64, 14, 3, 1, 1, True),
    "3x3 14->64 14 (conv flow, first)": ("conv", 14, 64, 14, 3, 1, 1, False),
    "3x3 4->64 14 (conv flow, first)": ("conv", 4, 64, 14, 3, 1, 1, False),
    "3x3 64->8 14 (conv flow, last)": ("conv", 64, 8, 14, 3, 1, 1, True),
    "3x3 32->32 28 (DDPM)": ("conv", 32, 32, 28, 3, 1, 1, True),
    "3x3 11->64 28 (DDPM, first)": ("conv", 11, 64, 28, 3, 1, 1, False),
    "3x3 64->2 28 (conv flow, last)": ("conv", 64, 2, 28, 3, 1, 1, True),
    "3x3 32->1 28 (DDPM, last)": ("conv", 32, 1, 28, 3, 1, 1, True),
    "masked A 1->64 28 k7": ("masked-A", 1, 64, 28, 7, 1, 3, False),
    "masked B 64->64 28 k3": ("masked-B", 64, 64, 28, 3, 1, 1, True),
    "1x1 64->64 28 (PixelCNN)": ("conv", 64, 64, 28, 1, 1, 0, True),
    "1x1 96->32 28 (DDPM skip)": ("conv", 96, 32, 28, 1, 1, 0, True),
    "1x1 128->64 14 (DDPM skip)": ("conv", 128, 64, 14, 1, 1, 0, True),
    "1x1 32->64 14 (DDPM skip)": ("conv", 32, 64, 14, 1, 1, 0, True),
    "k4s2 64->128 14->7 (GAN D)": ("conv", 64, 128, 14, 4, 2, 1, True),
    "k4s2 32->64 14->7 (VAE enc)": ("conv", 32, 64, 14, 4, 2, 1, True),
    "k3s2 32->32 28->14 (DDPM down)": ("conv", 32, 32, 28, 3, 2, 1, True),
    "k3s2 64->64 14->7 (DDPM down)": ("conv", 64, 64, 14, 3, 2, 1, True),
    "T k4s2 128->64 7->14 (GAN G)": ("transposed", 128, 64, 7, 4, 2, 1, True),
    "T k4s2 64->1 14->28 (GAN G)": ("transposed", 64, 1, 14, 4, 2, 1, True),
    "T k4s2 64->32 7->14 (VAE dec)": ("transposed", 64, 32, 7, 4, 2, 1, True),
    "T k4s2 32->1 14->28 (VAE dec)": ("transposed", 32, 1, 14, 4, 2, 1, True),
    "DDPM DDIM 16 images, 5 steps": ("ddim", 0, 0, 0, 0, 0, 0, False),
}


def _conv_step(lib, kind, c_in, c_out, hw, k, stride, padding, input_grad):
    import numpy as np
    rng = np.random.default_rng(0)
    transposed = kind == "transposed"
    x = rng.standard_normal((N, c_in, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c_in, c_out, k, k) if transposed else (c_out, c_in, k, k), dtype=np.float32) * 0.1
    b = np.zeros(c_out, np.float32)
    mask_type = kind[-1] if kind.startswith("masked") else None
    from minigen import ops
    mask = None if mask_type is None else ops.causal_mask(k, k, mask_type)
    if lib == "torch":
        import torch
        import torch.nn.functional as F
        xt = torch.from_numpy(x).requires_grad_(input_grad)
        wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
        mt = None if mask is None else torch.from_numpy(mask)

        def step():
            if transposed:
                y = F.conv_transpose2d(xt, wt, bt, stride=stride, padding=padding)
            else:
                y = F.conv2d(xt, wt if mt is None else wt * mt, bt, stride=stride, padding=padding)
            y.backward(torch.ones_like(y))
            wt.grad = bt.grad = xt.grad = None
        return step
    from minigen.tensor import Tensor
    xm = Tensor(x, requires_grad=input_grad)
    wm, bm = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)

    def step():
        if mask_type is not None:
            y = ops.masked_conv2d(xm, wm, bm, mask_type)
        elif transposed:
            y = ops.conv_transpose2d(xm, wm, bm, stride, padding)
        else:
            y = ops.conv2d(xm, wm, bm, stride, padding)
        y.backward(np.ones(y.shape, np.float32))
        wm.grad = bm.grad = xm.grad = None
    return step


def _ddim_step(lib):
    from minigen.models.ddpm import DDPM
    from minigen.random import Generator
    model = DDPM({})
    if lib == "torch":
        sys.path.insert(0, os.path.dirname(HERE))
        from benchmarks.twins import ddpm as twin
        torch_model = twin.build(model)
        return lambda: twin.sample(torch_model, 16, generator=Generator(0), method="ddim", steps=5)
    return lambda: model.sample(16, generator=Generator(0), method="ddim", steps=5)


def run_one(lib, name, repeats):
    """In this process: time one case, print {"ms": ...} as JSON."""
    kind = CASES[name][0]
    step = _ddim_step(lib) if kind == "ddim" else _conv_step(lib, *CASES[name])
    from benchmarks.common import median_seconds     # the tree under test's (an older tree has it too)
    print(json.dumps({"ms": 1e3 * median_seconds(step, repeats)}))


def _spawn(lib, tree, name, repeats, threads):
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", lib, "--case", name,
                          "--repeats", str(repeats)], env=env, capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise RuntimeError(f"{lib} {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="another minigen tree to time as 'old' (e.g. an export of the base commit)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="run the cases whose name contains one of these comma-separated texts")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        if args.child == "torch":
            import torch
            torch.set_num_threads(args.threads)
        run_one(args.child, args.case, args.repeats)
        return 0
    new = os.path.dirname(HERE)
    runs = [("new", "minigen", new)] + ([("old", "minigen", os.path.abspath(args.old))] if args.old else []) \
        + [("torch", "torch", new)]
    print(f"{'case':34s} " + " ".join(f"{label + ' ms (min-max)':>24s}" for label, _, _ in runs)
          + "  new/torch" + ("  old/torch  new/old" if args.old else ""))
    for name in CASES:
        if not any(part in name for part in args.only.split(",")):
            continue
        times = {label: [] for label, _, _ in runs}
        for _ in range(args.rounds):
            for label, lib, tree in runs:
                times[label].append(_spawn(lib, tree, name, args.repeats, args.threads))
        med = {label: statistics.median(t) for label, t in times.items()}
        cells = " ".join(f"{med[l]:9.1f} ({min(t):6.1f}-{max(t):6.1f})" for l, t in times.items())
        ratios = f"  {med['new'] / med['torch']:9.2f}"
        if args.old:
            ratios += f"  {med['old'] / med['torch']:9.2f}  {med['new'] / med['old']:7.2f}"
        print(f"{name:34s} {cells}{ratios}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
