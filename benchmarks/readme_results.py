"""Rewrite README.md's Results section from the JSON the benchmarks and the tour wrote.

    python benchmarks/readme_results.py [--ops benchmarks/results/ops.json]
        [--models benchmarks/results/models-full.json] [--tour benchmarks/results/tour.json]

Everything between `<!-- results:begin -->` and `<!-- results:end -->` is replaced, so the
numbers in the README are never typed by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + \
        ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]


def machine_line(m: dict, load=None) -> str:
    line = (f"{m['cpu']}, {m['threads']} threads; Python {m['python']}, NumPy {m['numpy']}, Numba {m['numba']}, "
            f"PyTorch {m['torch'] or 'not installed'}; NumPy float32 1024³ matmul: {m['numpy_matmul_gflops']} GFLOP/s "
            f"(the practical peak)")
    return line + (f"; load average at the end {load[0]:.1f}" if load else "")


def ops_section(ops: dict) -> list[str]:
    out = ["### Single ops, forward + backward (`python benchmarks/ops.py`)", "",
           machine_line(ops["machine"], ops.get("load_average")) + f"; median of {ops['repeats']} after warm-up.", ""]
    out += _table(["op", "minigen ms", "PyTorch ms", "ratio", "minigen GFLOP/s", "% of peak"],
                  [[r["op"], r["minigen_ms"], r["torch_ms"], r["ratio"], r["minigen_gflops"], r["pct_peak"]]
                   for r in ops["ops"]])
    s = ops.get("start")
    if s:
        out += ["", f"A fresh process reaches its first conv forward in {s['cold_s']} s with an empty Numba cache "
                    f"and {s['warm_s']} s with a warm one (`cache=True`)."]
    return out


def models_section(res: dict) -> list[str]:
    out = [f"### The five families (`{res['command']}`)", "", machine_line(res["machine"]) + ".", "",
           "Training step at batch 128 (median seconds), achieved GFLOP/s (3 x forward matmul/conv FLOPs), "
           "and peak memory growth of a training step (each framework in its own process):", ""]
    rows = []
    for r in res["models"]:
        mem = r.get("memory", {})
        rows.append([r["model"], f"{r['parameters']:,}", r["minigen_step_s"], r.get("torch_step_s"),
                     r.get("step_ratio"), r["minigen_gflops"], mem.get("minigen", {}).get("step_mb"),
                     mem.get("torch", {}).get("step_mb"), mem.get("ratio")])
    out += _table(["model", "params", "minigen s", "PyTorch s", "ratio", "minigen GFLOP/s", "minigen MB",
                   "PyTorch MB", "memory ratio"], rows)
    out += ["", "Sampling (seconds):", ""]
    out += _table(["model", "what", "minigen s", "PyTorch s", "ratio"],
                  [[r["model"], s["what"], s["minigen_s"], s.get("torch_s"), s.get("ratio")]
                   for r in res["models"] for s in r["sampling"]])
    if res.get("convnet_memory"):
        m = res["convnet_memory"]
        out += ["", f"Peak memory growth of a conv-net training step: minigen {_fmt(m['minigen'].get('step_mb'))} MB, "
                    f"PyTorch {_fmt(m.get('torch', {}).get('step_mb'))} MB (ratio {_fmt(m.get('ratio'))})."]
    if res.get("quality"):
        out += ["", "Quality at the same budget (same weights, data order and noise; mnist-5k):", ""]
        rows = []
        for q in res["quality"]:
            keys = [k for k in q["minigen"] if k not in ("train_s", "examples", "iw_samples")]
            for k in keys:
                rows.append([q["model"], q["epochs"], k, q["minigen"][k], q.get("torch", {}).get(k)])
        out += _table(["model", "epochs", "metric", "minigen", "PyTorch"], rows)
    if res.get("scaling"):
        out += ["", "How cost grows: ![step vs batch](benchmarks/results/conv_by_batch.png) "
                    "![step vs image size](benchmarks/results/conv_by_image_size.png) "
                    "![PixelCNN sampling vs image size](benchmarks/results/pixelcnn_sampling.png)"]
    return out


def tour_section(tour: dict) -> list[str]:
    from minigen.tour import format_table
    return ["### The tour (`minigen tour`)", "",
            f"{tour['minutes']} minutes budget, {tour['seconds']:.0f} s in all, trained on {tour['dataset']}; "
            f"test set: {tour['test_source']}; FID-MNIST and label accuracy from {tour['metric_samples']} samples "
            f"(yardstick classifier test accuracy {_fmt(tour.get('yardstick_test_accuracy'))}).", "",
            "![one sample per family and digit](benchmarks/results/tour_samples.png)", "",
            "![noise to digit, pixel by pixel](benchmarks/results/tour_strips.png)", "",
            "```", format_table(tour), "```"]


def targets_section(ops: dict | None, res: dict | None) -> list[str]:
    """The issues' targets, each with the measured value and whether it is met."""
    rows = []

    def add(target, value, ok):
        rows.append([target, value, "met" if ok else "**missed**"])
    if ops:
        for r in ops["ops"]:
            if r["ratio"] is not None:
                goal = 1.0 if r["op"].startswith("10,000 tiny") else 1.5
                add(f"ops: {r['op']} time ratio <= {goal}", f"{r['ratio']:.2f}", r["ratio"] <= goal)
        big = next((r for r in ops["ops"] if r["op"].startswith("conv2d 64->64")), None)
        if big and big["pct_peak"] is not None:
            add("ops: 64->64 3x3 conv >= 50% of NumPy matmul GFLOP/s", f"{big['pct_peak']:.0f}%",
                big["pct_peak"] >= 50)
        if ops.get("start"):
            add("second process to first conv < 3 s", f"{ops['start']['warm_s']} s", ops["start"]["warm_s"] < 3)
    if res:
        for r in res["models"]:
            if r.get("step_ratio") is not None:
                add(f"{r['model']}: training-step ratio <= 1.5", f"{r['step_ratio']:.2f}", r["step_ratio"] <= 1.5)
            for smp in r["sampling"]:
                if smp.get("ratio") is not None:
                    add(f"{r['model']}: sampling ({smp['what']}) ratio <= 1.5", f"{smp['ratio']:.2f}",
                        smp["ratio"] <= 1.5)
            ratio = r.get("memory", {}).get("ratio")
            if ratio is not None:
                add(f"{r['model']}: peak memory ratio <= 1.5", f"{ratio:.2f}", ratio <= 1.5)
        ratio = (res.get("convnet_memory") or {}).get("ratio")
        if ratio is not None:
            add("conv-net training step: peak memory ratio <= 1.5", f"{ratio:.2f}", ratio <= 1.5)
    if not rows:
        return []
    return ["### Targets (minigen / PyTorch, from the tables below)", ""] + \
        _table(["target", "measured", ""], rows) + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default=os.path.join(HERE, "results", "ops.json"))
    p.add_argument("--models", default=os.path.join(HERE, "results", "models-full.json"))
    p.add_argument("--tour", default=os.path.join(HERE, "results", "tour.json"))
    p.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = p.parse_args(argv)
    loaded = {}
    for path in (args.tour, args.ops, args.models):
        if os.path.exists(path):
            with open(path) as f:
                loaded[path] = json.load(f)
        else:
            print(f"skipping {path}: not found", file=sys.stderr)
    lines = targets_section(loaded.get(args.ops), loaded.get(args.models))
    for path, section in ((args.tour, tour_section), (args.ops, ops_section), (args.models, models_section)):
        if path in loaded:
            lines += section(loaded[path]) + [""]
    with open(args.readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.readme} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + "\n".join(lines) + END + tail
    from minigen.serialize import atomic_write
    atomic_write(args.readme, lambda f: f.write(new.encode()))
    print(f"updated {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
