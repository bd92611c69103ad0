"""minigen vs PyTorch on the five model families: one command, side by side, same process.

    python benchmarks/run.py [--quick | --full] [--models vae,flow,...] [--out DIR]
    (or: minigen bench models ...)

For each family, the identical architecture in minigen and in PyTorch (the twin in
benchmarks/twins/, weights copied from the minigen model) on the same batch:

* training step at batch 128: median seconds after warm-up, and the ratio minigen / PyTorch;
* sampling time for the sizes the model issues name;
* achieved GFLOP/s (3 x the forward matmul/conv FLOPs counted during one step) against
  NumPy's own float32 matmul GFLOP/s, the machine's practical peak;
* (--full, or --memory) peak memory of a training step, each framework in its own subprocess;
* (--full) how cost grows: step time against batch size and image size for a conv net, and
  PixelCNN sampling time against image size; and quality at the same budget: both frameworks
  trained with the same seed and data order on mnist-5k, test metrics side by side.

Writes models.json and PNG plots into --out (default benchmarks/results) and prints a table.
Without PyTorch it says so and reports minigen alone.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script

from benchmarks.common import (machine_info, median_seconds, print_table, set_threads,  # noqa: E402
                               settle_interpreter, try_torch, write_json)

FAMILIES = ["vae", "flow", "pixelcnn", "nar", "ddpm", "gan"]

# Sampling measured per family: (label, sample() options, n images) for --quick and --full.
SAMPLING = {
    "vae": {"quick": [("1000 images", {}, 1000)], "full": [("1000 images", {}, 1000)]},
    "flow": {"quick": [("100 images", {}, 100)], "full": [("1000 images", {}, 1000)]},
    "nar": {"quick": [("1000 images", {}, 1000)], "full": [("1000 images", {}, 1000)]},
    "pixelcnn": {"quick": [("4 images, 784 steps", {}, 4)], "full": [("16 images, 784 steps", {}, 16)]},
    "ddpm": {"quick": [("16 images, DDIM 50", {"method": "ddim", "steps": 50}, 16)],
             "full": [("16 images, DDIM 50", {"method": "ddim", "steps": 50}, 16),
                      ("16 images, ancestral 1000", {"method": "ancestral"}, 16)]},
    "gan": {"quick": [("1000 images", {}, 1000)], "full": [("1000 images", {}, 1000)]},
}
BATCH = 128


def load_batch(n: int = BATCH, image_size: int = 28):
    """A real batch from mnist-5k: x (n, 1, S, S) float32 in [0, 1], y (n,) int64."""
    from minigen import data
    ds = data.load("mnist-5k", "train", download=False)
    x = data.to_float(ds.images[:n])
    if image_size != 28:
        x = resize(x, image_size)
    return x, ds.labels[:n]


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of (N, 1, 28, 28) images to (N, 1, size, size)."""
    idx = (np.arange(size) * x.shape[-1] / size).astype(int)
    return np.ascontiguousarray(x[:, :, idx][:, :, :, idx])


def build_pair(family: str, config: dict | None = None, seed: int = 0):
    """The minigen model and its PyTorch twin (or None) with identical weights."""
    import minigen
    from minigen.models import get_family
    minigen.manual_seed(seed)
    cls = get_family(family)
    model = cls({**cls.default_config(), "conditional": False, **(config or {})})
    twin, twin_module = None, None
    if try_torch() is not None:
        twin_module = importlib.import_module(f"benchmarks.twins.{family}")
        twin = twin_module.build(model)
    return model, twin, twin_module


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

    wrap("matmul", lambda a, out: 2.0 * out.size * a[0].shape[-1])
    for name in ("conv2d", "masked_conv2d"):   # 2 x outputs x (C_in / groups) x kH x kW
        if hasattr(ops, name):
            wrap(name, lambda a, out: 2.0 * out.size * int(np.prod(a[1].shape[1:])))
    if hasattr(ops, "conv_transpose2d"):       # 2 x inputs x (C_out / groups) x kH x kW
        wrap("conv_transpose2d", lambda a, out: 2.0 * a[0].size * int(np.prod(a[1].shape[1:])))
    try:
        fn()
    finally:
        for name, original in originals.items():
            setattr(ops, name, original)
    return total[0]


def bench_family(family: str, mode: str, repeats: int) -> dict:
    import minigen
    model, twin, twin_module = build_pair(family)
    x, y = load_batch()
    opts_m = model.make_optimizers()
    row = {"model": family, "parameters": model.num_parameters()}

    def step_minigen():
        model.train_step(x, y, opts_m, minigen.Generator(1))
    flops = 3 * count_forward_flops(step_minigen)
    row["minigen_step_s"] = median_seconds(step_minigen, repeats)
    row["gflop_per_step"] = flops / 1e9
    row["minigen_gflops"] = flops / row["minigen_step_s"] / 1e9
    if twin is not None:
        opts_t = twin_module.make_optimizers(twin, model.config)
        row["torch_step_s"] = median_seconds(
            lambda: twin_module.train_step(twin, opts_t, x, y, minigen.Generator(1)), repeats)
        row["step_ratio"] = row["minigen_step_s"] / row["torch_step_s"]
        row["torch_gflops"] = flops / row["torch_step_s"] / 1e9

    row["sampling"] = []
    for label, options, n in SAMPLING[family][mode]:
        entry = {"what": label,
                 "minigen_s": sampling_seconds(lambda: model.sample(n, generator=minigen.Generator(2), **options))}
        if twin is not None:
            entry["torch_s"] = sampling_seconds(
                lambda: twin_module.sample(twin, n, None, minigen.Generator(2), **options))
            entry["ratio"] = entry["minigen_s"] / entry["torch_s"]
        row["sampling"].append(entry)
    return row


def sampling_seconds(fn) -> float:
    """One timed call; when it takes under a second, that call is the warm-up and the median
    of five more is the answer (a lone short timing is mostly noise)."""
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return median_seconds(fn, 5, warmup=0) if seconds < 1.0 else seconds


# --- memory: each framework in its own process, so one does not pollute the other ----------
def training_step(target: str, framework: str, batch=None):
    """A zero-argument function doing one training step at batch 128 of `target` (a family, or
    "convnet": the small conv net of the scaling plots) in `framework` ("minigen" or "torch").
    batch: (x, y) to use instead of the first 128 mnist-5k digits."""
    import minigen
    x, y = batch if batch is not None else load_batch()
    if target == "convnet":
        from minigen import ops
        from minigen.optim import SGD
        from minigen.tensor import Tensor
        net, twin = conv_net_pair()
        if framework == "minigen":
            opt = SGD(net.parameters(), lr=0.01)
            return lambda: (opt.zero_grad(), ops.cross_entropy(net(Tensor(x)), y).backward(), opt.step())
        torch = try_torch()
        topt = torch.optim.SGD(twin.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        return lambda: (topt.zero_grad(), torch.nn.functional.cross_entropy(twin(tx), ty).backward(), topt.step())
    model, twin, twin_module = build_pair(target)
    if framework == "minigen":
        opts = model.make_optimizers()
        return lambda: model.train_step(x, y, opts, minigen.Generator(1))
    opts = twin_module.make_optimizers(twin, model.config)
    return lambda: twin_module.train_step(twin, opts, x, y, minigen.Generator(1))


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS, VmHWM = peak RSS) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_probe(target: str, framework: str) -> dict:
    """Runs in a subprocess: how far training steps raise memory above the resident size after
    set-up (model, optimiser and batch in memory). The kernel's peak-RSS mark is reset after
    set-up (echo 5 > /proc/self/clear_refs), so imports and set-up do not count."""
    set_threads()
    rng = np.random.default_rng(0)       # a synthetic batch: parsing the data file would set the peak
    batch = (rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH))
    step = training_step(target, framework, batch)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mb("VmRSS")
    for _ in range(3):
        step()
    peak = _status_mb("VmHWM")
    return {"before_mb": before, "peak_mb": peak, "step_mb": max(peak - before, 0.0)}


def measure_memory(target: str, frameworks) -> dict:
    """Peak memory of one training step of `target`, each framework in a fresh process."""
    out = {}
    for fw in frameworks:
        proc = subprocess.run([sys.executable, __file__, "--memory-probe", target, fw],
                              capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            out[fw] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        else:
            out[fw] = json.loads(proc.stdout.strip().splitlines()[-1])
    if all("step_mb" in out.get(fw, {}) for fw in ("minigen", "torch")):
        out["ratio"] = out["minigen"]["step_mb"] / max(out["torch"]["step_mb"], 1e-9)
    return out


# --- how cost grows -----------------------------------------------------------------------------
def conv_net_pair(seed: int = 0):
    """A small all-convolutional classifier (works at any image size), in both frameworks."""
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
    torch = try_torch()
    twin = None
    if torch is not None:
        twin = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
            torch.nn.ReLU(), torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, 10))
    return net, twin


def conv_step_times(batch: int, size: int, repeats: int) -> dict:
    from minigen import ops
    from minigen.optim import SGD
    from minigen.tensor import Tensor
    net, twin = conv_net_pair()
    x, y = load_batch(batch, size)
    opt = SGD(net.parameters(), lr=0.01)

    def step_minigen():
        opt.zero_grad()
        ops.cross_entropy(net(Tensor(x)), y).backward()
        opt.step()
    row = {"batch": batch, "image_size": size, "minigen_s": median_seconds(step_minigen, repeats)}
    if twin is not None:
        torch = try_torch()
        topt = torch.optim.SGD(twin.parameters(), lr=0.01)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def step_torch():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(twin(tx), ty).backward()
            topt.step()
        row["torch_s"] = median_seconds(step_torch, repeats)
        row["ratio"] = row["minigen_s"] / row["torch_s"]
    return row


def scaling(repeats: int) -> dict:
    import minigen
    by_batch = [conv_step_times(b, 28, repeats) for b in (16, 32, 64, 128, 256)]
    by_size = [conv_step_times(64, s, repeats) for s in (14, 28, 56)]
    pixelcnn = []
    for size in (14, 28):
        model, twin, twin_module = build_pair("pixelcnn", {"image_size": size})
        entry = {"image_size": size}
        start = time.perf_counter()
        model.sample(4, generator=minigen.Generator(0))
        entry["minigen_s_per_image"] = (time.perf_counter() - start) / 4
        if twin is not None:
            start = time.perf_counter()
            twin_module.sample(twin, 4, None, minigen.Generator(0))
            entry["torch_s_per_image"] = (time.perf_counter() - start) / 4
        pixelcnn.append(entry)
    return {"conv_by_batch": by_batch, "conv_by_image_size": by_size, "pixelcnn_sampling": pixelcnn}


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
        plt.xlabel(xlabel), plt.ylabel("seconds"), plt.title(title, fontsize=9)
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
        if family in ("ddpm", "gan"):
            from minigen.metrics import fid_mnist, yardstick
            sampler = model.sample if name == "minigen" else (lambda n, **kw: twin_module.sample(twin, n, **kw))
            samples = sampler(200, generator=minigen.Generator(4))
            metrics["fid_mnist"] = fid_mnist(samples, xt, yardstick("mnist-5k"))
        result[name] = {"train_s": seconds, **{k: float(v) for k, v in metrics.items()}}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="few repeats, small sampling sizes (< 3 min)")
    size.add_argument("--full", action="store_true", help="everything incl. memory, scaling and quality (< 30 min)")
    parser.add_argument("--models", default=",".join(FAMILIES))
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--memory", action="store_true", help="measure peak memory also without --full")
    parser.add_argument("--quality-epochs", type=int, default=1, help="epochs of the quality runs (--full)")
    parser.add_argument("--memory-probe", nargs=2, metavar=("MODEL", "FRAMEWORK"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe)))
        return 0
    families = [f.strip() for f in args.models.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; expected some of {', '.join(FAMILIES)}")
    mode = "full" if args.full else "quick"
    repeats = 10 if args.full else 3
    set_threads()
    settle_interpreter()
    torch = try_torch()
    if torch is None:
        print("PyTorch is not installed: reporting minigen alone (pip install torch==2.13.0 for the CPU build)")
    started = time.perf_counter()
    results = {"command": "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "mode": mode, "machine": machine_info(), "models": []}
    for family in families:
        print(f"[{time.perf_counter() - started:6.0f}s] {family}: training step and sampling", flush=True)
        row = bench_family(family, mode, repeats)
        if args.full or args.memory:
            row["memory"] = measure_memory(family, ["minigen"] + (["torch"] if torch is not None else []))
        results["models"].append(row)
    if args.full or args.memory:
        print(f"[{time.perf_counter() - started:6.0f}s] conv net: memory of a training step", flush=True)
        results["convnet_memory"] = measure_memory("convnet", ["minigen"] + (["torch"] if torch is not None else []))
    if args.full:
        print(f"[{time.perf_counter() - started:6.0f}s] scaling", flush=True)
        results["scaling"] = scaling(repeats=5)
        results["quality"] = []
        for family in families:
            print(f"[{time.perf_counter() - started:6.0f}s] {family}: quality at the same budget", flush=True)
            results["quality"].append(quality(family, args.quality_epochs))
    results["seconds"] = time.perf_counter() - started
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, f"models-{mode}.json"), results)
    if "scaling" in results:
        plot_scaling(results["scaling"], args.out)
    report(results)
    print(f"wrote {os.path.join(args.out, f'models-{mode}.json')} ({results['seconds']:.0f} s)")
    return 0


def report(results: dict) -> None:
    m = results["machine"]
    print(f"\n{m['cpu']}, {m['threads']} threads; numpy {m['numpy']}, numba {m['numba']}, torch {m['torch']}; "
          f"NumPy float32 matmul peak {m['numpy_matmul_gflops']} GFLOP/s")
    rows = []
    for r in results["models"]:
        rows.append({**r, "mem_ratio": r.get("memory", {}).get("ratio")})
    print("\ntraining step, batch 128 (median seconds)")
    print_table(rows, ["model", "parameters", "minigen_step_s", "torch_step_s", "step_ratio", "minigen_gflops",
                       "torch_gflops", "mem_ratio"])
    print("\nsampling (seconds)")
    print_table([{"model": r["model"], **s} for r in results["models"] for s in r["sampling"]],
                ["model", "what", "minigen_s", "torch_s", "ratio"])
    for q in results.get("quality", []):
        print(f"\nquality after {q['epochs']} epoch(s) on mnist-5k, {q['model']}: "
              + "; ".join(f"{fw}: " + ", ".join(f"{k}={v:.4g}" for k, v in q[fw].items())
                          for fw in ("minigen", "torch") if fw in q))


if __name__ == "__main__":
    sys.exit(main())
