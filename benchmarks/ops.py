"""minigen vs PyTorch CPU on single ops, forward + backward, each framework in processes of its own.

    python benchmarks/ops.py [--quick | --full] [--rounds R] [--only TEXT] [--no-convs]
        [--out benchmarks/results/ops.json]
    (or: minigen bench ops ...)

The rows: every convolution the model families call in their default configs (unconditional
and conditional, the conv VAE and conv flow variants included), *listed from the models*: each
variant's default model runs one training step at batch 2 while minigen's conv ops are wrapped
to record their shapes (`model_conv_shapes`); each distinct shape is then timed at batch 128,
the training batch, forward + backward against torch.nn.functional.conv2d / conv_transpose2d.
Plus the framework-overhead case (10,000 tiny ops), a matmul and two norms.

Timing is benchmarks/harness.py: per round, all cases in one fresh minigen process, then in one
fresh PyTorch process, same thread count; median and min-max over rounds; ratio minigen /
PyTorch of the medians. GFLOP/s count the arithmetic done (forward + the backward that is
needed: first layers see data, so neither side computes their input gradient; masked convs
counted dense, as PyTorch computes them). Also NumPy's float32 1024^3 matmul GFLOP/s (the
practical peak) and how long a fresh process takes to its first conv with an empty and a warm
Numba cache (when the table has conv rows).

Targets (issue 13): every conv row <= 1.0; stride-1 3x3 conv2d rows with 32 or more channels in
and out <= 0.8.
"""
from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import VARIANTS, THREADS, machine_info, print_table, write_json  # noqa: E402
from benchmarks.harness import (Case, available_frameworks, format_ratio, format_spread,  # noqa: E402
                                run_cases)

N = 128
CONV_OPS = ("conv2d", "conv_transpose2d", "masked_conv2d")
# (rounds, timed calls per process at least, seconds of timed calls per case per process at least)
SETTINGS = {"quick": (3, 1, 0.0), "full": (3, 3, 0.6)}


# --- the conv shapes the models use ------------------------------------------------------------
def _pair(v) -> list[int]:
    return [int(v), int(v)] if np.ndim(v) == 0 else [int(a) for a in v]


def record_conv_calls(fn) -> list[dict]:
    """Run fn() with minigen.ops' conv functions wrapped; one dict per call: op, n, c_in, h, w,
    c_out, kernel, stride, padding, dilation, groups, output_padding (transposed), mask (masked:
    "A"/"B"), input_grad (whether x needed a gradient). A conv called from inside another
    recorded conv is not recorded twice."""
    from minigen import ops
    calls, depth = [], [0]
    originals = {name: getattr(ops, name) for name in CONV_OPS}

    def wrapped(name, original):
        signature = inspect.signature(original)

        def record(*args, **kwargs):
            if depth[0] == 0:
                a = signature.bind(*args, **kwargs)
                a.apply_defaults()
                a = a.arguments
                x, w = a["x"], a["w"]
                transposed = name == "conv_transpose2d"
                dilation = _pair(a.get("dilation", 1))
                kernel = [int(k) for k in w.shape[2:]]
                padding = a.get("padding", 0)
                if padding is None:              # masked_conv2d's default keeps the size
                    padding = [d * (k // 2) for d, k in zip(dilation, kernel)]
                groups = int(a.get("groups", 1))
                calls.append({
                    "op": name, "n": int(x.shape[0]), "c_in": int(x.shape[1]), "h": int(x.shape[2]),
                    "w": int(x.shape[3]), "c_out": int(w.shape[1] * groups if transposed else w.shape[0]),
                    "kernel": kernel, "stride": _pair(a.get("stride", 1)), "padding": _pair(padding),
                    "dilation": dilation, "groups": groups,
                    "output_padding": _pair(a.get("output_padding", 0)),
                    "mask": a.get("mask_type") if name == "masked_conv2d" else None,
                    "bias": a.get("b") is not None,
                    "input_grad": bool(getattr(x, "requires_grad", False))})
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1
        return record
    for name, original in originals.items():
        setattr(ops, name, wrapped(name, original))
    try:
        fn()
    finally:
        for name, original in originals.items():
            setattr(ops, name, original)
    return calls


def shape_key(call: dict) -> tuple:
    """What makes two conv calls the same benchmark row (batch and input-gradient need aside)."""
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(call.items())
                 if k not in ("n", "input_grad", "bias", "families"))


def model_conv_shapes(variants=VARIANTS, batch: int = 2) -> list[dict]:
    """Every distinct conv call of one training step of each variant's default model, unconditional
    and conditional, in first-seen order; each with "families" (the variants using it) and
    "input_grad" / "bias" true if any call needed them."""
    import minigen
    from minigen.models import get_family
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = np.arange(batch, dtype=np.int64) % 10
    shapes: dict[tuple, dict] = {}
    for name, family, overrides in variants:
        for conditional in (False, True):
            minigen.manual_seed(0)
            cls = get_family(family)
            model = cls({**cls.default_config(), **overrides, "conditional": conditional})
            opts = model.make_optimizers()
            for call in record_conv_calls(lambda: model.train_step(x, y, opts, minigen.Generator(1))):
                row = shapes.setdefault(shape_key(call), {**call, "input_grad": False, "bias": False, "families": []})
                row["input_grad"] |= call["input_grad"]
                row["bias"] |= call["bias"]
                if name not in row["families"]:
                    row["families"].append(name)
    return list(shapes.values())


def _dims(v: list[int], sep="x") -> str:
    return str(v[0]) if v[0] == v[1] else sep.join(map(str, v))


def conv_out_hw(s: dict) -> tuple[int, int]:
    hw = []
    for i, size in enumerate((s["h"], s["w"])):
        k, st, p, d = s["kernel"][i], s["stride"][i], s["padding"][i], s["dilation"][i]
        if s["op"] == "conv_transpose2d":
            hw.append((size - 1) * st - 2 * p + d * (k - 1) + s["output_padding"][i] + 1)
        else:
            hw.append((size + 2 * p - d * (k - 1) - 1) // st + 1)
    return hw[0], hw[1]


def conv_name(s: dict) -> str:
    """e.g. 'conv2d 64->64 14x14 k3 s1 p1', 'conv_transpose2d 128->64 7->14 k4 s2 p1', 'masked_conv2d B 64->64 ...'."""
    oh, ow = conv_out_hw(s)
    if (oh, ow) == (s["h"], s["w"]):
        size = f"{oh}x{ow}"
    elif s["h"] == s["w"] and oh == ow:
        size = f"{s['h']}->{oh}"
    else:
        size = f"{s['h']}x{s['w']}->{oh}x{ow}"
    op = s["op"] + (f" {s['mask']}" if s["mask"] else "")
    extra = "".join(f" {label}{_dims(s[key])}" for key, label, default in
                    (("dilation", "d", 1), ("output_padding", "op", 0)) if s[key] != [default, default])
    extra += f" g{s['groups']}" if s["groups"] != 1 else ""
    return (f"{op} {s['c_in']}->{s['c_out']} {size} k{_dims(s['kernel'])} s{_dims(s['stride'])} "
            f"p{_dims(s['padding'])}{extra}")


def conv_target(s: dict) -> float:
    """Issue 13: <= 0.8 for stride-1 3x3 conv2d with >= 32 channels in and out, else <= 1.0."""
    fast = (s["op"] == "conv2d" and s["kernel"] == [3, 3] and s["stride"] == [1, 1] and s["groups"] == 1
            and min(s["c_in"], s["c_out"]) >= 32)
    return 0.8 if fast else 1.0


def conv_flops(s: dict, batch: int = N) -> tuple[float, int]:
    """(forward FLOPs, passes): passes = forward-sized products of forward + backward (3 with an
    input gradient, 2 without)."""
    oh, ow = conv_out_hw(s)
    per_output = s["kernel"][0] * s["kernel"][1] * s["c_in"] // s["groups"]
    if s["op"] == "conv_transpose2d":            # it is the input gradient of a conv with in/out swapped
        flops = 2 * batch * s["h"] * s["w"] * s["kernel"][0] * s["kernel"][1] * s["c_out"] // s["groups"] * s["c_in"]
    else:
        flops = 2 * batch * oh * ow * s["c_out"] * per_output
    return float(flops), 3 if s["input_grad"] else 2


# --- the cases (run inside benchmarks/worker.py) ------------------------------------------------
def conv_case(framework: str, shape: dict, batch: int = N):
    """Forward + backward of one conv call `shape` (a model_conv_shapes() row) at `batch`."""
    s = shape
    rng = np.random.default_rng(0)
    transposed = s["op"] == "conv_transpose2d"
    cg = (s["c_out"] if transposed else s["c_in"]) // s["groups"]
    w_shape = (s["c_in"], cg, *s["kernel"]) if transposed else (s["c_out"], cg, *s["kernel"])
    x = rng.standard_normal((batch, s["c_in"], s["h"], s["w"]), dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
    b = np.zeros(s["c_out"], np.float32) if s["bias"] else None
    geometry = dict(stride=tuple(s["stride"]), padding=tuple(s["padding"]), dilation=tuple(s["dilation"]))
    if not s["mask"]:
        geometry["groups"] = s["groups"]
    if transposed:
        geometry["output_padding"] = tuple(s["output_padding"])
    if framework == "torch":
        import torch
        import torch.nn.functional as F

        from minigen.ops import causal_mask
        xt, wt = torch.from_numpy(x).requires_grad_(s["input_grad"]), torch.from_numpy(w).requires_grad_()
        bt = None if b is None else torch.from_numpy(b).requires_grad_()
        mt = None if not s["mask"] else torch.from_numpy(causal_mask(*s["kernel"], s["mask"]))
        fn = F.conv_transpose2d if transposed else F.conv2d

        def step():
            y = fn(xt, wt if mt is None else wt * mt, bt, **geometry)
            y.backward(torch.ones_like(y))
            wt.grad = xt.grad = None
            if bt is not None:
                bt.grad = None
        return step
    from minigen import ops
    from minigen.tensor import Tensor
    xm, wm = Tensor(x, requires_grad=s["input_grad"]), Tensor(w, requires_grad=True)
    bm = None if b is None else Tensor(b, requires_grad=True)
    fn = ops.masked_conv2d if s["mask"] else getattr(ops, s["op"])
    if s["mask"]:
        geometry["mask_type"] = s["mask"]

    def step():
        y = fn(xm, wm, bm, **geometry)
        y.backward(np.ones(y.shape, np.float32))
        wm.grad = xm.grad = None
        if bm is not None:
            bm.grad = None
    return step


def norm_case(framework: str, kind: str):
    """group_norm(8 groups) or batch_norm (training) of (128, 64, 28, 28), forward + backward."""
    x = np.random.default_rng(0).standard_normal((N, 64, 28, 28), dtype=np.float32)
    w, b = np.ones(64, np.float32), np.zeros(64, np.float32)
    if framework == "torch":
        import torch
        import torch.nn.functional as F
        xt, wt, bt = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        rm, rv = torch.zeros(64), torch.ones(64)

        def step():
            y = F.group_norm(xt, 8, wt, bt) if kind == "group" else F.batch_norm(xt, rm, rv, wt, bt, True)
            y.backward(torch.ones_like(y))
            xt.grad = wt.grad = bt.grad = None
        return step
    from minigen import ops
    from minigen.tensor import Tensor
    xm, wm, bm = (Tensor(a, requires_grad=True) for a in (x, w, b))
    rm, rv = np.zeros(64, np.float32), np.ones(64, np.float32)

    def step():
        y = ops.group_norm(xm, 8, wm, bm) if kind == "group" else ops.batch_norm(xm, wm, bm, rm, rv, True)
        y.backward(np.ones(y.shape, np.float32))
        xm.grad = wm.grad = bm.grad = None
    return step


def matmul_case(framework: str):
    """(128, 784) @ (784, 400), forward + backward (the VAE's first layer)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((N, 784), dtype=np.float32)
    b = rng.standard_normal((784, 400), dtype=np.float32)
    if framework == "torch":
        import torch
        at, bt = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()

        def step():
            y = at @ bt
            y.backward(torch.ones_like(y))
            at.grad = bt.grad = None
        return step
    from minigen.tensor import Tensor
    am, bm = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)

    def step():
        y = am @ bm
        y.backward(np.ones(y.shape, np.float32))
        am.grad = bm.grad = None
    return step


def tiny_chain(framework: str):
    """Framework overhead: 10,000 elementwise ops on 16-element tensors, forward + backward."""
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    if framework == "torch":
        import torch
        leaf, tanh = torch.from_numpy(x).requires_grad_(), torch.tanh
    else:
        from minigen import ops
        from minigen.tensor import Tensor
        leaf, tanh = Tensor(x, requires_grad=True), ops.tanh

    def step():
        y = leaf
        for _ in range(2500):              # 4 ops each: mul, add, tanh, sub
            y = tanh(y * 0.9 + 0.1) - 0.01
        y.sum().backward()
        leaf.grad = None
    return step


def op_rows(shapes: list[dict]) -> list[dict]:
    """Every row of the table, before timing: {"op", "case" (harness.Case kwargs), "flops",
    "passes", "target", "shape"/"families" for convs}."""
    rows = [{"op": "10,000 tiny elementwise ops (16 values)", "func": "tiny_chain", "params": {}, "target": 1.0}]
    for s in shapes:
        flops, passes = conv_flops(s)
        rows.append({"op": conv_name(s), "func": "conv_case", "params": {"shape": s}, "flops": flops,
                     "passes": passes, "target": conv_target(s), "shape": s, "families": s["families"]})
    rows += [{"op": "group_norm(8) 64x28x28", "func": "norm_case", "params": {"kind": "group"}, "target": 1.5},
             {"op": "batch_norm 64x28x28", "func": "norm_case", "params": {"kind": "batch"}, "target": 1.5},
             {"op": "matmul 128x784 @ 784x400", "func": "matmul_case", "params": {}, "flops": 2.0 * N * 784 * 400,
              "passes": 3, "target": 1.5}]
    return rows


FIRST_CONV = ("import time; t = time.perf_counter(); import numpy as np; from minigen import kernels; "
              "kernels.conv2d_forward(np.ones((2, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32), "
              "None, 1, 1); print(time.perf_counter() - t)")


def start_times() -> dict:
    """Seconds for a fresh Python process to import minigen and run its first conv forward, with an
    empty Numba cache (everything compiles) and then with the cache that run left (a second start)."""
    from benchmarks.harness import worker_env
    with tempfile.TemporaryDirectory() as cache:
        env = dict(worker_env(THREADS), NUMBA_CACHE_DIR=cache)
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
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="one timed call per case per process (~3 minutes)")
    size.add_argument("--full", action="store_true", help="the default: >= 3 timed calls and >= 0.6 s per case "
                                                          "per process")
    p.add_argument("--rounds", type=int, default=None, help="processes per framework (default 3)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "ops.json"), help="where to write the JSON")
    p.add_argument("--only", default="", help="run only the ops whose name contains this text")
    p.add_argument("--no-convs", action="store_true", help="only the tiny-op, norm and matmul rows: no conv rows, "
                                                           "so no listing of the models' convs (seconds, not minutes)")
    p.add_argument("--list", action="store_true", help="print the conv shapes found in the models and exit")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    rounds, iterations, min_seconds = SETTINGS[mode]
    rounds = args.rounds or rounds
    if rounds < 1:
        p.error("--rounds must be at least 1")
    started = time.perf_counter()
    shapes = [] if args.no_convs else model_conv_shapes()
    rows = [r for r in op_rows(shapes) if args.only in r["op"]]
    if args.list:
        for r in rows:
            if "shape" in r:
                print(f"{r['op']}  (N={N}; {', '.join(r['families'])}; input grad {r['shape']['input_grad']})")
        return 0
    frameworks = available_frameworks()
    if "torch" not in frameworks:
        print("PyTorch is not installed: reporting minigen alone.")
    print(f"{len(rows)} ops ({len(shapes)} conv shapes from the models), {rounds} rounds, "
          f"{' / '.join(frameworks)} alternating, each in a fresh process", flush=True)
    cases = [Case(r["op"], f"benchmarks.ops:{r['func']}", r["params"], iterations, 1, min_seconds) for r in rows]
    timings = run_cases([cases], rounds, frameworks)
    info = machine_info()
    peak = info["numpy_matmul_gflops"]
    results = []
    for r in rows:
        t = timings[r["op"]]
        row = {k: r[k] for k in ("op", "target", "families", "shape", "flops", "passes") if k in r}
        row.update({"minigen": t.get("minigen"), "torch": t.get("torch"), "ratio": t.get("ratio"),
                    "ratio_min": t.get("ratio_min"), "ratio_max": t.get("ratio_max")})
        for fw in frameworks:
            med = (t.get(fw) or {}).get("median_s")
            row[f"{fw}_ms"] = None if med is None else 1e3 * med
            if "flops" in r and med:
                row[f"{fw}_gflops"] = r["flops"] * r["passes"] / 1e9 / med
        if row.get("minigen_gflops"):
            row["pct_peak"] = 100 * row["minigen_gflops"] / peak
        results.append(row)
    # the start times are about the first conv: measured when the table has conv rows
    starts = start_times() if any("shape" in r for r in rows) else None
    seconds = time.perf_counter() - started
    print(f"\n{info['cpu']}, {info['threads']} threads; NumPy float32 1024^3 matmul: {peak} GFLOP/s "
          f"(practical peak); load average {os.getloadavg()[0]:.1f}")
    print(f"forward + backward at batch {N}, ms: median (min-max) of {rounds} rounds, each framework in "
          f"fresh processes:\n")
    print_table([{"op": r["op"], "minigen ms": format_spread(r["minigen"]), "torch ms": format_spread(r["torch"]),
                  "ratio": format_ratio(r), "target": r["target"], "GFLOP/s": r.get("minigen_gflops"),
                  "% peak": r.get("pct_peak")} for r in results],
                ["op", "minigen ms", "torch ms", "ratio", "target", "GFLOP/s", "% peak"])
    if starts:
        print(f"\nfresh process to first conv: {starts['cold_s']} s with an empty Numba cache, "
              f"{starts['warm_s']} s with a warm one")
    print(f"this run took {seconds:.0f} s")
    write_json(args.out, {"command": "python benchmarks/ops.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "mode": mode, "machine": info, "rounds": rounds, "iterations": iterations,
                          "min_seconds": min_seconds, "batch": N, "load_average": os.getloadavg(),
                          "ops": results, "start": starts, "seconds": seconds})
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
