"""Micro-benchmarks of the conv shapes the fast paths touch (3x3 direct, masked, 1x1, strided, transposed),
and DDPM DDIM sampling of 16 images: minigen (this tree), minigen (another tree, e.g. the code
before a change) and PyTorch, each in fresh processes of its own, alternating, several rounds.

    python benchmarks/fast_paths.py [--old PATH_TO_OLD_TREE] [--rounds 3] [--threads 2] [--only TEXT,TEXT] [--out FILE]

Cases of benchmarks/harness.py (one process per framework per round runs every selected case; the
other tree's minigen runs this file's cases, loaded by path). Each case: forward + backward at batch
128 (first layers: no input gradient, as in the models), median of `--repeats` after a warm-up; the
driver prints each framework's median over the rounds with the min-max spread, and the ratios to
PyTorch. Set MINIGEN_CONV to force one algorithm wherever it takes a conv.
"""
from __future__ import annotations

import argparse
import os
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


def _conv_step(framework, kind, c_in, c_out, hw, k, stride, padding, input_grad):
    import numpy as np
    rng = np.random.default_rng(0)
    transposed = kind == "transposed"
    x = rng.standard_normal((N, c_in, hw, hw), dtype=np.float32)
    w = rng.standard_normal((c_in, c_out, k, k) if transposed else (c_out, c_in, k, k), dtype=np.float32) * 0.1
    b = np.zeros(c_out, np.float32)
    mask_type = kind[-1] if kind.startswith("masked") else None
    from minigen import ops
    mask = None if mask_type is None else ops.causal_mask(k, k, mask_type)
    if framework == "torch":
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


def _ddim_step(framework):
    from minigen.models.ddpm import DDPM
    from minigen.random import Generator
    model = DDPM({})
    if framework == "torch":
        sys.path.insert(0, os.path.dirname(HERE))
        from benchmarks.twins import ddpm as twin
        torch_model = twin.build(model)
        return lambda: twin.sample(torch_model, 16, generator=Generator(0), method="ddim", steps=5)
    return lambda: model.sample(16, generator=Generator(0), method="ddim", steps=5)


def case(framework, name):
    """A harness case: the work of CASES[name] in `framework`."""
    kind = CASES[name][0]
    return _ddim_step(framework) if kind == "ddim" else _conv_step(framework, *CASES[name])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", help="another minigen tree to time as 'old' (e.g. an export of the base commit)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", default="", help="run the cases whose name contains one of these comma-separated texts")
    p.add_argument("--out", help="write the results here as JSON")
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script
    from benchmarks.common import machine_info, write_json
    from benchmarks.harness import Case, format_spread, run_cases
    names = [name for name in CASES if any(part in name for part in args.only.split(","))]
    cases = [Case(name, f"{os.path.abspath(__file__)}:case", {"name": name}, iterations=args.repeats) for name in names]
    others = {"old": os.path.abspath(args.old)} if args.old else {}
    machine = machine_info(args.threads)
    results = run_cases([cases], args.rounds, threads=args.threads, other_trees=others,
                        progress=lambda m: print(m, file=sys.stderr))
    labels = ["minigen"] + list(others) + ["torch"]
    print(f"{machine['cpu']}, {machine['vector_bits']}-bit Numba loops, {machine['blas']}, {args.threads} threads")
    print(f"{'case':34s} " + " ".join(f"{label + ' ms (min-max)':>26s}" for label in labels)
          + "  new/torch" + ("  old/torch  new/old" if others else ""))
    for name in names:
        r = results[name]
        median = {label: r.get(label, {}).get("median_s") for label in labels}
        ratio = lambda a, b: f"{median[a] / median[b]:9.2f}" if median[a] and median[b] else f"{'-':>9s}"  # noqa: E731
        ratios = ratio("minigen", "torch") + ("  " + ratio("old", "torch") + "  " + ratio("minigen", "old")
                                               if others else "")
        print(f"{name:34s} " + " ".join(f"{format_spread(r.get(label, {})):>26s}" for label in labels) + "  " + ratios,
              flush=True)
    if args.out:
        write_json(args.out, {"machine": machine, "rounds": args.rounds, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
