"""minigen vs PyTorch on the model families: each framework alone in fresh processes, alternating.

    python benchmarks/run.py [--quick | --full] [--rounds R] [--models vae,flow,...] [--out DIR]
        [--memory] [--scaling] [--quality]
    (or: minigen bench models ...)

For each model variant (benchmarks.common.VARIANTS: vae, vae-conv, flow, flow-conv, nar,
pixelcnn, ddpm, flowmatch, gan; default configs, unconditional), the identical architecture in minigen and
in PyTorch (the twin in benchmarks/twins/, weights copied from a minigen model built with the
same seed), timed by benchmarks/harness.py: per round, one fresh minigen process then one fresh
PyTorch process per variant, same thread count; median and min-max over rounds, ratio minigen /
PyTorch of the medians. Warm-up calls (JIT compilation) are not timed; the time to first result
is reported apart.

* training step at batch 128 on real mnist-5k digits, and achieved GFLOP/s (3 x the forward
  matmul/conv FLOPs counted during one step) against NumPy's float32 matmul GFLOP/s;
* sampling: VAE, flow, GAN, NAR 1000 images; PixelCNN 16 images (4 with --quick) with its
  cached sampler; DDPM 16 images with DDIM-50 and with 1000 ancestral steps; flow matching 16
  images with 4 Euler and with 10 Heun steps. The ancestral
  figure is timed on a model whose schedule has fewer steps (T = 20; 5 with --quick), the
  same network, and scaled to 1000 steps: every ancestral step costs the same;
* (--full, or --memory) peak memory growth of a training step, each framework alone in a process
  (3 rounds, alternating, median);
* (--scaling) how cost grows: a small conv net's training step against batch size and image
  size, PixelCNN sampling time against image size (same harness; PNG plots);
* (--quality) quality at the same budget: both frameworks trained in one process with the same
  seed and data order on mnist-5k, test metrics side by side (numbers, not times; quality.json).

Writes models-quick.json / models-full.json (and scaling.json, quality.json) into --out
(default benchmarks/results) and prints a table. Without PyTorch it reports minigen alone.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import VARIANTS, machine_info, print_table, try_torch, variant, write_json  # noqa: E402
from benchmarks.harness import (Case, Work, available_frameworks, format_ratio, format_spread,  # noqa: E402
                                run_cases, run_memory)

BATCH = 128
MODELS = [name for name, _, _ in VARIANTS]
# (rounds, timed calls per process at least, seconds of timed training steps per process at least)
SETTINGS = {"quick": (3, 1, 0.2), "full": (3, 3, 2.0)}
# Sampling measured per variant: (label, params of sample_case) for --quick and --full.
DDIM = {"method": "ddim", "steps": 50}
SAMPLING = {
    "vae": {"quick": [("1000 images", {"n": 1000})], "full": [("1000 images", {"n": 1000})]},
    "flow": {"quick": [("1000 images", {"n": 1000})], "full": [("1000 images", {"n": 1000})]},
    "nar": {"quick": [("1000 images", {"n": 1000})], "full": [("1000 images", {"n": 1000})]},
    "pixelcnn": {"quick": [("4 images, 784 steps, cached", {"n": 4})],
                 "full": [("16 images, 784 steps, cached", {"n": 16})]},
    "ddpm": {"quick": [("16 images, DDIM 50", {"n": 16, "options": DDIM}),
                       ("16 images, ancestral 1000 (5 timed)", {"n": 16, "ancestral_steps": 5})],
             "full": [("16 images, DDIM 50", {"n": 16, "options": DDIM}),
                      ("16 images, ancestral 1000 (20 timed)", {"n": 16, "ancestral_steps": 20})]},
    "flowmatch": {mode: [("16 images, Euler 4", {"n": 16, "options": {"method": "euler", "steps": 4}}),
                         ("16 images, Heun 10", {"n": 16, "options": {"method": "heun", "steps": 10}})]
                  for mode in ("quick", "full")},
    "gan": {"quick": [("1000 images", {"n": 1000})], "full": [("1000 images", {"n": 1000})]},
}


def load_batch(n: int = BATCH, image_size: int = 28):
    """A real batch from mnist-5k: x (n, 1, S, S) float32 in [0, 1], y (n,) int64."""
    from minigen import data
    ds = data.load("mnist-5k", "train", download=False)
    x = data.to_float(ds.images[:n])
    if image_size != 28:
        x = resize(x, image_size)
    return x, ds.labels[:n]


def synthetic_batch(n: int = BATCH):
    """Random images and labels: what the memory probe uses (parsing the data file would set the peak)."""
    rng = np.random.default_rng(0)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, 1, 28, 28) images to (N, 1, size, size)."""
    idx = (np.arange(size) * x.shape[-1] / size).astype(int)
    return np.ascontiguousarray(x[:, :, idx][:, :, :, idx])


def build_model(name: str, config: dict | None = None, seed: int = 0):
    """The minigen model of variant `name` (default config, unconditional, plus `config`)."""
    import minigen
    from minigen.models import get_family
    family, overrides = variant(name)
    minigen.manual_seed(seed)
    cls = get_family(family)
    return cls({**cls.default_config(), "conditional": False, **overrides, **(config or {})})


def build_twin(model):
    """(twin, its module) for a minigen model: the PyTorch copy with the same weights."""
    module = importlib.import_module(f"benchmarks.twins.{model.family}")
    return module.build(model), module


def build_pair(name: str, config: dict | None = None, seed: int = 0):
    """The minigen model and, when PyTorch is installed, its twin and the twin's module (else None, None)."""
    model = build_model(name, config, seed)
    return (model, *build_twin(model)) if try_torch() is not None else (model, None, None)


# --- the cases (run inside benchmarks/worker.py) -------------------------------------------------
def train_step_case(framework: str, model: str, synthetic: bool = False):
    """One training step at batch 128 of variant `model` in `framework`: first 128 mnist-5k digits,
    or random ones (synthetic) for the memory probe."""
    import minigen
    x, y = synthetic_batch() if synthetic else load_batch()
    m = build_model(model)
    if framework == "minigen":
        opts = m.make_optimizers()
        return lambda: m.train_step(x, y, opts, minigen.Generator(1))
    twin, module = build_twin(m)
    opts = module.make_optimizers(twin, m.config)
    return lambda: module.train_step(twin, opts, x, y, minigen.Generator(1))


def sample_case(framework: str, model: str, n: int, options: dict | None = None, ancestral_steps: int = 0) -> Work:
    """Sampling n images from variant `model`. ancestral_steps > 0 (DDPM): ancestral sampling on
    a schedule of that many steps, scaled to 1000 (each step costs the same). Iterative samplers
    warm up with 2 steps of their method (DDPM's ancestral sampler: 2 DDIM steps), which compile what
    50 or 1000 would."""
    import minigen
    options = dict(options or {})
    # a short schedule for the per-step cost of ancestral sampling (its DDIM default must fit in it)
    m = build_model(model, {"T": ancestral_steps, "sample_steps": ancestral_steps} if ancestral_steps else None)
    scale = 1.0
    if ancestral_steps:
        options, scale = {"method": "ancestral"}, 1000 / ancestral_steps
    if framework == "minigen":
        sample = m.sample
    else:
        twin, module = build_twin(m)

        def sample(k, **kw):
            return module.sample(twin, k, None, **kw)

    def run():
        sample(n, generator=minigen.Generator(2), **options)
    warmup = None
    if "method" in options:
        method = "ddim" if options["method"] == "ancestral" else options["method"]
        warmup = lambda: sample(n, generator=minigen.Generator(2), method=method, steps=2)  # noqa: E731
    return Work(run, warmup, scale)


def conv_net_pair(seed: int = 0, torch_twin: bool = True):
    """A small all-convolutional classifier (works at any image size): minigen net, PyTorch twin or None."""
    import minigen
    from minigen import nn, ops
    minigen.manual_seed(seed)

    class ConvNet(nn.Module):
        def __init__(self):
            self.c1 = nn.Conv2d(1, 32, 3, padding=1)
            self.c2 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
            self.c3 = nn.Conv2d(64, 64, 3, padding=1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            h = ops.relu(self.c3(ops.relu(self.c2(ops.relu(self.c1(x))))))
            return self.fc(h.mean(axis=(2, 3)))
    net = ConvNet()
    twin = None
    if torch_twin:
        import torch
        twin = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return net, twin


def conv_net_case(framework: str, batch: int, size: int):
    """One SGD step of the conv net on `batch` images of side `size`."""
    from minigen import ops
    from minigen.optim import SGD
    from minigen.tensor import Tensor
    net, twin = conv_net_pair(torch_twin=framework == "torch")
    x, y = load_batch(batch, size)
    if framework == "minigen":
        opt = SGD(net.parameters(), lr=0.01)
        return lambda: (opt.zero_grad(), ops.cross_entropy(net(Tensor(x)), y).backward(), opt.step())
    import torch
    topt = torch.optim.SGD(twin.parameters(), lr=0.01)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    return lambda: (topt.zero_grad(), torch.nn.functional.cross_entropy(twin(tx), ty).backward(), topt.step())


# --- FLOP counting: wrap the ops that do the arithmetic and count what one step asks of them ---
def count_forward_flops(fn) -> float:
    """FLOPs of the matmuls and convolutions that fn() runs (forward only)."""
    from minigen import ops
    total = [0.0]
    originals = {}

    def wrap(name, flops_of):
        original = getattr(ops, name)
        originals[name] = original

        def counted(*args, **kwargs):
            out = original(*args, **kwargs)
            total[0] += flops_of(args, out)
            return out
        setattr(ops, name, counted)

    for name in ("matmul", "linear"):          # 2 x outputs x the inner dimension
        wrap(name, lambda a, out: 2.0 * out.size * a[0].shape[-1])
    for name in ("conv2d", "masked_conv2d"):   # 2 x outputs x (C_in / groups) x kH x kW
        wrap(name, lambda a, out: 2.0 * out.size * int(np.prod(a[1].shape[1:])))
    # 2 x inputs x (C_out / groups) x kH x kW
    wrap("conv_transpose2d", lambda a, out: 2.0 * a[0].size * int(np.prod(a[1].shape[1:])))
    try:
        fn()
    finally:
        for name, original in originals.items():
            setattr(ops, name, original)
    return total[0]


def step_flops(name: str) -> float:
    """3 x the forward FLOPs of one training step of variant `name` at batch 128 (counted here)."""
    import minigen
    m = build_model(name)
    x, y = synthetic_batch()
    opts = m.make_optimizers()
    return 3 * count_forward_flops(lambda: m.train_step(x, y, opts, minigen.Generator(1)))


# --- the measurements ------------------------------------------------------------------------------
def speed_cases(models: list[str], mode: str) -> list[list[Case]]:
    """One group (= one process per framework per round) per variant: its training step and sampling."""
    _, iterations, min_seconds = SETTINGS[mode]
    groups = []
    for name in models:
        group = [Case(f"{name}: training step", "benchmarks.run:train_step_case", {"model": name},
                      iterations, 1, min_seconds)]
        for label, params in SAMPLING.get(name, {}).get(mode, []):
            iterative = "options" in params or "ancestral_steps" in params
            group.append(Case(f"{name}: sampling {label}", "benchmarks.run:sample_case", {"model": name, **params},
                              1 if iterative else iterations, 1, 0.0 if iterative else min_seconds / 2))
        groups.append(group)
    return groups


def memory_cases(models: list[str]) -> list[Case]:
    return [Case(f"{name}: training step memory", "benchmarks.run:train_step_case", {"model": name, "synthetic": True},
                 3, 0, measure="memory") for name in models]


SCALING_BATCHES, SCALING_SIZES, PIXELCNN_SIZES = (16, 32, 64, 128, 256), (14, 28, 56), (14, 28)


def scaling(rounds: int, frameworks) -> dict:
    """Conv-net step time against batch size (28x28) and image size (batch 64); PixelCNN sampling
    time per image (4 images) against image size. All in one process per framework per round."""
    cases = ([Case(f"conv net batch {b}", "benchmarks.run:conv_net_case", {"batch": b, "size": 28}, 2, 1, 0.5)
              for b in SCALING_BATCHES]
             + [Case(f"conv net size {s}", "benchmarks.run:conv_net_case", {"batch": 64, "size": s}, 2, 1, 0.5)
                for s in SCALING_SIZES if s != 28]
             + [Case(f"pixelcnn sampling size {s}", "benchmarks.run:pixelcnn_sampling_case", {"size": s}, 1, 1)
                for s in PIXELCNN_SIZES])
    t = run_cases([cases], rounds, frameworks)

    def row(case, suffix="_s", per=1, **keys):
        return {**keys, "ratio": t[case].get("ratio"),
                **{f"{fw}{suffix}": t[case][fw]["median_s"] / per for fw in frameworks if "median_s" in t[case][fw]}}
    return {"conv_by_batch": [row(f"conv net batch {b}", batch=b, image_size=28) for b in SCALING_BATCHES],
            "conv_by_image_size": [row(f"conv net size {s}" if s != 28 else "conv net batch 64", batch=64,
                                       image_size=s) for s in SCALING_SIZES],
            "pixelcnn_sampling": [row(f"pixelcnn sampling size {s}", "_s_per_image", 4, image_size=s)
                                  for s in PIXELCNN_SIZES]}


def pixelcnn_sampling_case(framework: str, size: int):
    """4 PixelCNN images of side `size` with the cached sampler."""
    import minigen
    m = build_model("pixelcnn", {"image_size": size})
    if framework == "minigen":
        return lambda: m.sample(4, generator=minigen.Generator(0))
    twin, module = build_twin(m)
    return lambda: module.sample(twin, 4, None, minigen.Generator(0))


def plot_scaling(results: dict, out_dir: str) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigen.serialize import atomic_write
    paths = []
    for key, xkey, title, xlabel in [("conv_by_batch", "batch", "conv net training step vs batch size", "batch"),
                                     ("conv_by_image_size", "image_size", "conv net step vs image size (batch 64)",
                                      "image side (pixels)"),
                                     ("pixelcnn_sampling", "image_size", "PixelCNN sampling time per image",
                                      "image side (pixels)")]:
        rows = results[key]
        fig = plt.figure(figsize=(5, 3.4))
        for fw in ("minigen", "torch"):
            col = next((c for c in (f"{fw}_s", f"{fw}_s_per_image") if c in rows[0]), None)
            if col:
                plt.plot([r[xkey] for r in rows], [r[col] for r in rows], "o-", label=fw)
        plt.xlabel(xlabel), plt.ylabel("seconds (median, separate processes)"), plt.title(title, fontsize=9)
        plt.xscale("log", base=2), plt.yscale("log"), plt.grid(alpha=0.3), plt.legend()
        path = os.path.join(out_dir, f"{key}.png")
        atomic_write(path, lambda f: fig.savefig(f, format="png", bbox_inches="tight", dpi=100))
        plt.close(fig)
        paths.append(path)
    return paths


# --- quality at the same budget ----------------------------------------------------------------
def quality(family: str, epochs: int, eval_n: int = 1000, seed: int = 0) -> dict:
    """Both frameworks trained from the same weights, data order and noise; test metrics side by side."""
    import minigen
    from minigen import data
    model, twin, twin_module = build_pair(family, seed=seed)
    train = data.load("mnist-5k", "train", download=False)
    test = data.load("mnist-5k", "test", download=False)
    x, y = data.to_float(train.images), train.labels
    xt, yt = data.to_float(test.images[:eval_n]), test.labels[:eval_n]
    result = {"model": family, "epochs": epochs, "test_source": test.source}
    runs = [("minigen", model, lambda m, o, xb, yb, g: m.train_step(xb, yb, o, g), model.make_optimizers())]
    if twin is not None:
        runs.append(("torch", twin, lambda m, o, xb, yb, g: twin_module.train_step(m, o, xb, yb, g),
                     twin_module.make_optimizers(twin, model.config)))
    for name, m, step, opts in runs:
        loader = data.DataLoader(x, y, BATCH, drop_last=True, generator=minigen.Generator(seed + 1))
        noise = minigen.Generator(seed + 2)
        start = time.perf_counter()
        for _ in range(epochs):
            for xb, yb in loader:
                step(m, opts, xb, yb, noise)
        seconds = time.perf_counter() - start
        metrics = (model.evaluate(xt, yt, minigen.Generator(3)) if name == "minigen"
                   else twin_module.evaluate(twin, xt, yt, minigen.Generator(3)))
        if family in ("ddpm", "flowmatch", "gan"):
            from minigen.metrics import fid_mnist, yardstick
            sampler = model.sample if name == "minigen" else (lambda n, **kw: twin_module.sample(twin, n, **kw))
            samples = sampler(200, generator=minigen.Generator(4))
            metrics["fid_mnist"] = fid_mnist(samples, xt, yardstick("mnist-5k"))
        result[name] = {"train_s": seconds, **{k: float(v) for k, v in metrics.items()}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="the default: 1+ timed call per process, small "
                                                           "sampling sizes (a few minutes)")
    size.add_argument("--full", action="store_true", help="3+ timed calls per process, and memory (~10 minutes)")
    parser.add_argument("--rounds", type=int, default=None, help="processes per framework and variant (default 3)")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--memory", action="store_true", help="measure peak memory also without --full")
    parser.add_argument("--scaling", action="store_true", help="also how cost grows (scaling.json, PNG plots)")
    parser.add_argument("--quality", action="store_true", help="also quality at the same budget (quality.json)")
    parser.add_argument("--quality-epochs", type=int, default=1, help="epochs of the quality runs")
    args = parser.parse_args(argv)
    models = [f.strip() for f in args.models.split(",") if f.strip()]
    unknown = [f for f in models if f not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected some of {', '.join(MODELS)}")
    mode = "full" if args.full else "quick"
    rounds = args.rounds or SETTINGS[mode][0]
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    frameworks = available_frameworks()
    if "torch" not in frameworks:
        print("PyTorch is not installed: reporting minigen alone (pip install torch==2.13.0 for the CPU build)")
    started = time.perf_counter()
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"{len(models)} models, {rounds} rounds, {' / '.join(frameworks)} alternating, each in a fresh process",
          flush=True)
    timings = run_cases(speed_cases(models, mode), rounds, frameworks)
    memory = run_memory(memory_cases(models), frameworks) if args.full or args.memory else {}
    results = {"command": command, "mode": mode, "rounds": rounds, "batch": BATCH, "machine": machine_info(),
               "models": []}
    for name in models:
        step = timings[f"{name}: training step"]
        flops = step_flops(name)
        row = {"model": name, "parameters": build_model(name).num_parameters(), "gflop_per_step": flops / 1e9,
               "step": step, "target": 1.0, "sampling": []}
        for fw in frameworks:
            if "median_s" in step.get(fw, {}):
                row[f"{fw}_gflops"] = flops / step[fw]["median_s"] / 1e9
        for label, _ in SAMPLING.get(name, {}).get(mode, []):
            row["sampling"].append({"what": label, **timings[f"{name}: sampling {label}"], "target": 1.0})
        if memory:
            row["memory"] = {**memory[f"{name}: training step memory"], "target": 1.5}
        results["models"].append(row)
    results["load_average"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"models-{mode}.json")
    write_json(path, results)
    report(results)
    print(f"wrote {path} ({results['seconds']:.0f} s)")
    if args.scaling:
        print("scaling: conv net step against batch and image size, PixelCNN sampling against image size", flush=True)
        scaled = {"command": command, "rounds": rounds, "machine": results["machine"],
                  **scaling(rounds, frameworks)}
        write_json(os.path.join(args.out, "scaling.json"), scaled)
        print("wrote", ", ".join([os.path.join(args.out, "scaling.json")] + plot_scaling(scaled, args.out)))
    if args.quality:
        out = {"command": command, "machine": results["machine"], "quality": []}
        for name in models:
            print(f"[{time.perf_counter() - started:6.0f}s] {name}: quality at the same budget", flush=True)
            out["quality"].append(quality(name, args.quality_epochs))
        write_json(os.path.join(args.out, "quality.json"), out)
        report_quality(out["quality"])
    return 0


def report(results: dict) -> None:
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['threads']} threads; numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}; "
          f"NumPy float32 matmul peak {m['numpy_matmul_gflops']} GFLOP/s; median (min-max) of "
          f"{results['rounds']} rounds, each framework in fresh processes")
    rows = []
    for r in results["models"]:
        mem = r.get("memory", {})
        rows.append({"model": r["model"], "params": r["parameters"],
                     "minigen s": format_spread(r["step"]["minigen"], "s"),
                     "torch s": format_spread(r["step"].get("torch"), "s"), "ratio": format_ratio(r["step"]),
                     "first result s": r["step"]["minigen"].get("since_spawn_s"), "GFLOP/s": r.get("minigen_gflops"),
                     "mem ratio": mem.get("ratio")})
    print(f"\ntraining step, batch {results['batch']} (seconds)")
    print_table(rows, ["model", "params", "minigen s", "torch s", "ratio", "first result s", "GFLOP/s", "mem ratio"])
    print("\nsampling (seconds)")
    print_table([{"model": r["model"], "what": s["what"], "minigen s": format_spread(s["minigen"], "s"),
                  "torch s": format_spread(s.get("torch"), "s"), "ratio": format_ratio(s)}
                 for r in results["models"] for s in r["sampling"]],
                ["model", "what", "minigen s", "torch s", "ratio"])


def report_quality(quality_rows: list[dict]) -> None:
    for q in quality_rows:
        print(f"\nquality after {q['epochs']} epoch(s) on mnist-5k, {q['model']}: "
              + "; ".join(f"{fw}: " + ", ".join(f"{k}={v:.4g}" for k, v in q[fw].items())
                          for fw in ("minigen", "torch") if fw in q))


if __name__ == "__main__":
    sys.exit(main())
