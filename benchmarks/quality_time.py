"""Quality at equal time: each family's test metrics after M minutes of training on the tour's recipe,
minigen against its PyTorch twin.

    python benchmarks/quality_time.py [--minutes 1,2,5,10,20] [--families ddpm,flow] [--samples 100]
    (or: minigen bench quality ...)

For every family, every M in --minutes and each framework, a fresh process of its own
trains the family's tour recipe (minigen.tools.tour.FAMILIES: model config, lr warm-up, the cosine
decay that ends with the time budget, EMA warm-up inside the model, guidance and sampling
temperature) for M minutes of wall-clock time, then reports

* the likelihood where the family has one (nats per image, or bits/dim for the flow) on the test set,
* FID-MNIST and label accuracy of --samples samples asked for the digits 0..9 in turn,

both frameworks starting from the same weights (the twin copies the minigen model's initial
weights), seeing the same batches and drawing the same noise; the only difference is how fast
each framework turns the wall-clock time into optimiser steps. Both use the same training loop
(`train_for`, below), with the same thread count; minigen and PyTorch alternate for each M.

Writes quality_time.json (after every run, so an interrupted benchmark keeps what it measured)
and one plot per family, quality_time_<family>.png (metric against minutes, both frameworks),
into --out (default benchmarks/results), and prints a table. Runs split over cores (e.g. some families
`taskset -c 0`, others `taskset -c 1`, each with its own --out) are joined by

    python benchmarks/quality_time.py --merge old/quality_time.json core0/quality_time.json ... --out DIR

where a later file's run of a family, framework and minutes replaces an earlier file's. The full default run takes
38 minutes per family and framework (about 8 hours for all six): choose --minutes and --families
for a shorter one.
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

from benchmarks.common import (machine_info, print_table, set_threads, settle_interpreter, try_torch,  # noqa: E402
                               write_json)

FRAMEWORKS = ("minigen", "torch")
DEFAULT_MINUTES = "1,2,5,10,20"
EVAL_N = 500          # test images for the likelihood
SEED = 0


def recipe_of(family: str, variant: str | None = None):
    """`family`'s tour recipe; with `variant` (a label of Recipe.variants, e.g. "8/16/16"), the recipe with
    that variant's config, to measure by steps what the variant needs: train_for(..., recipe=...)."""
    import dataclasses

    from minigen.tools.tour import FAMILIES
    for recipe in FAMILIES:
        if recipe.family == family:
            if variant is None:
                return recipe
            for v in recipe.variants:
                if v.label == variant:
                    return dataclasses.replace(recipe, config={**recipe.config, **v.config})
            raise SystemExit(f"quality_time: {family} has no variant {variant!r}; expected one of "
                             f"{', '.join(repr(v.label) for v in recipe.variants) or 'none (one size)'}")
    raise SystemExit(f"quality_time: unknown family {family!r}; expected some of "
                     f"{', '.join(r.family for r in FAMILIES)}")


def _set_lr(framework: str, optimizers: dict, base_lrs: dict, factor: float) -> None:
    for name, opt in optimizers.items():
        if framework == "minigen":
            opt.lr = base_lrs[name] * factor
        else:
            for group in opt.param_groups:
                group["lr"] = base_lrs[name] * factor


def train_for(framework: str, family: str, seconds: float | None = None, max_steps: int | None = None,
              recipe=None) -> dict:
    """Train `family`'s tour recipe (or `recipe`) in `framework` for `seconds` of wall-clock time, or for
    `max_steps` steps; return its test metrics.

    The loop is the trainer's (minigen.train): the lr of step s is base lr * lr_factor(s, warm-up,
    progress, decay) with progress = elapsed / seconds (or s / max_steps), then one train_step on the
    next batch. Training by steps measures what a recipe reaches after the steps a quiet machine's
    budget buys, whatever the machine's load now."""
    import minigen
    from minigen import data as mdata
    from minigen.metrics import fid_mnist, label_accuracy, yardstick
    from minigen.models import get_family
    from minigen.optim import lr_factor

    if (seconds is None) == (max_steps is None):
        raise ValueError("train_for: give exactly one of seconds and max_steps")
    recipe = recipe_of(family) if recipe is None else recipe
    cls = get_family(family)
    minigen.manual_seed(SEED)                       # the same initial weights for both frameworks
    model = cls({**cls.default_config(), **recipe.config, "conditional": True})
    if framework == "torch":
        twin_module = importlib.import_module(f"benchmarks.twins.{family}")
        net = twin_module.build(model)
        optimizers = twin_module.make_optimizers(net, model.config)
        base_lrs = {name: opt.param_groups[0]["lr"] for name, opt in optimizers.items()}

        def step(xb, yb, gen):
            return twin_module.train_step(net, optimizers, xb, yb, gen)

        def sample(n, labels, gen):
            return twin_module.sample(net, n, labels=labels, generator=gen, **recipe.sample_options)

        def evaluate(x, y, gen):
            return twin_module.evaluate(net, x, y, gen)
    else:
        optimizers = model.make_optimizers()
        base_lrs = {name: opt.lr for name, opt in optimizers.items()}
        model.train()

        def step(xb, yb, gen):
            return model.train_step(xb, yb, optimizers, gen)

        def sample(n, labels, gen):
            model.eval()
            return model.sample(n, labels=labels, generator=gen, **recipe.sample_options)

        def evaluate(x, y, gen):
            model.eval()
            return model.evaluate(x, y, generator=gen)

    train = mdata.load("mnist-5k", "train", download=False)
    test = mdata.load("mnist-5k", "test", download=False)
    loader = mdata.DataLoader(mdata.to_float(train.images), train.labels, int(model.config["batch_size"]),
                              shuffle=True, drop_last=True, generator=minigen.Generator(SEED + 1))
    noise = minigen.Generator(SEED + 2)
    settle_interpreter()
    steps, started = 0, time.perf_counter()

    def progress() -> float:
        return steps / max_steps if seconds is None else (time.perf_counter() - started) / seconds
    while progress() < 1:
        for xb, yb in loader:
            done = progress()
            if done >= 1:
                break
            _set_lr(framework, optimizers, base_lrs, lr_factor(steps, recipe.warmup_steps, done, recipe.lr_decay))
            step(xb, yb, noise)
            steps += 1
    train_seconds = time.perf_counter() - started

    judge = yardstick("mnist-5k")
    x_test, y_test = mdata.to_float(test.images), test.labels
    result = {"framework": framework, "family": family, "minutes": train_seconds / 60 if seconds is None
              else seconds / 60, "steps": steps,
              "train_seconds": train_seconds, "recipe": {"warmup_steps": recipe.warmup_steps,
                                                        "lr_decay": recipe.lr_decay, **recipe.config,
                                                        **recipe.sample_options}}
    metric = model.likelihood_metric
    if metric is not None:
        from minigen.models.base import evaluation_subset
        xe, ye = evaluation_subset(x_test, y_test, EVAL_N)
        value = evaluate(xe, ye, minigen.Generator(3)).get(metric)
        if value is not None:                    # the flow-matching twin computes no likelihood
            result["likelihood"] = {"metric": metric, "value": float(value)}
    n = int(os.environ.get("QUALITY_TIME_SAMPLES", "100"))
    labels = np.arange(n) % 10
    samples = np.asarray(sample(n, labels, minigen.Generator(4)), np.float32)
    result["samples"] = samples              # the caller decides what to keep (the worker prints no arrays)
    reference = x_test[:1000]
    if np.isin(samples, (0.0, 1.0)).all():               # binary draws against binarized digits, like the tour
        reference = mdata.binarize_fixed(reference)
    result["fid_mnist"] = fid_mnist(samples, reference, judge)
    result["label_accuracy"] = label_accuracy(samples, labels, judge)
    return result


def run_worker(framework: str, family: str, seconds: float, samples: int, timeout: float) -> dict:
    """train_for in a fresh process of its own (so neither framework inherits the other's state)."""
    env = {**os.environ, "QUALITY_TIME_SAMPLES": str(samples)}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{framework}:{family}:{seconds}"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"framework": framework, "family": family, "minutes": seconds / 60,
                "error": f"did not finish within {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"framework": framework, "family": family, "minutes": seconds / 60,
                "error": f"exit status {proc.returncode}: {last}"}
    return json.loads(lines[-1])


def merge(results: list[dict], names: list[str]) -> dict:
    """One quality_time result from several (`names`: where each came from, for errors): every family's runs,
    a later result's run of the same (framework, minutes) replacing an earlier one's. The results must come
    from the same CPU, thread count and sample count, or the merged table would compare unlike runs."""
    from minigen.tools.tour import FAMILIES
    if not results:
        raise SystemExit("quality_time: --merge needs at least one quality_time.json")
    first = results[0]
    for result, name in zip(results, names):
        for key, got, want in (("CPU", result["machine"]["cpu"], first["machine"]["cpu"]),
                               ("threads", result["machine"]["threads"], first["machine"]["threads"]),
                               ("samples", result["samples"], first["samples"])):
            if got != want:
                raise SystemExit(f"quality_time: {name} was measured with {key} {got!r}, {names[0]} with "
                                 f"{want!r}: only runs of the same {key} can share a table")
    runs: dict[str, dict] = {}
    for result in results:
        for family, family_runs in result["families"].items():
            for run in family_runs:
                runs.setdefault(family, {})[(run["framework"], run["minutes"])] = run
    order = {recipe.family: i for i, recipe in enumerate(FAMILIES)}
    families = sorted(runs, key=lambda f: order.get(f, len(order)))
    return {"machine": first["machine"], "samples": first["samples"],
            "minutes": sorted({m for r in results for m in r["minutes"]}),
            "families": {f: [runs[f][k] for k in sorted(runs[f], key=lambda k: (k[1], k[0]))] for f in families}}


def plot(family: str, runs: list[dict], out_dir: str) -> str:
    """quality_time_<family>.png: label accuracy, FID-MNIST and (where there is one) the likelihood
    against training minutes, one line per framework."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from minigen.serialize import atomic_write
    ok = [r for r in runs if "error" not in r]
    panels = [("label_accuracy", "label accuracy (higher is better)"), ("fid_mnist", "FID-MNIST (lower is better)")]
    if any(r.get("likelihood") for r in ok):
        metric = next(r["likelihood"]["metric"] for r in ok if r.get("likelihood"))
        panels.append(("likelihood", ("bits/dim" if metric == "bits_per_dim" else "NLL, nats") + " (lower is better)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, title) in zip(np.atleast_1d(axes), panels):
        for framework, style in (("minigen", "o-"), ("torch", "s--")):
            points = sorted((r["minutes"], r[key]["value"] if key == "likelihood" else r[key])
                            for r in ok if r["framework"] == framework and r.get(key) is not None)
            if points:
                ax.plot(*zip(*points), style, label="minigen" if framework == "minigen" else "PyTorch")
        ax.set_xlabel("training minutes")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{recipe_of(family).title}: quality at equal training time (tour recipe)")
    fig.tight_layout()
    path = os.path.join(out_dir, f"quality_time_{family}.png")
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)
    return path


def parse_minutes(text: str) -> list[float]:
    try:
        minutes = [float(m) for m in text.split(",") if m.strip()]
    except ValueError:
        minutes = []
    if not minutes or any(not m > 0 for m in minutes):
        raise SystemExit(f"quality_time: --minutes must be a comma-separated list of positive numbers, got {text!r}")
    return minutes


def main(argv=None) -> int:
    from minigen.tools.tour import FAMILIES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", default=DEFAULT_MINUTES, help=f"training minutes (default {DEFAULT_MINUTES})")
    parser.add_argument("--families", default=",".join(r.family for r in FAMILIES))
    parser.add_argument("--samples", type=int, default=100, help="samples for FID-MNIST and label accuracy")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="join these results into --out (no training)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)     # framework:family:seconds, run by the parent
    args = parser.parse_args(argv)
    set_threads()
    if args.worker:
        framework, family, seconds = args.worker.split(":")
        if framework == "torch":
            import torch  # noqa: F401  (imported before the clock starts, like minigen's modules)
        result = train_for(framework, family, float(seconds))
        result.pop("samples")
        print(json.dumps(result), flush=True)
        return 0
    if args.merge:
        results = []
        for name in args.merge:
            try:
                with open(name) as f:
                    results.append(json.load(f))
            except (OSError, ValueError) as e:
                raise SystemExit(f"quality_time: cannot read {name} as a quality_time result: {e}") from None
        result = merge(results, args.merge)
        result["plots"] = {f: plot(f, runs, args.out) for f, runs in result["families"].items()}
        path = os.path.join(args.out, "quality_time.json")
        write_json(path, result)
        print(f"merged {len(results)} results: {path}")
        return 0
    minutes = parse_minutes(args.minutes)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in families:
        recipe_of(family)
    frameworks = FRAMEWORKS if try_torch() is not None else ("minigen",)
    if len(frameworks) == 1:
        print("PyTorch is not installed: reporting minigen alone")
    from minigen.metrics import yardstick
    yardstick("mnist-5k")                     # trained once here, not inside a timed worker
    result = {"machine": machine_info(), "minutes": minutes, "samples": args.samples,
              "families": {f: [] for f in families}}
    path = os.path.join(args.out, "quality_time.json")
    rows = []
    for family in families:
        for m in minutes:
            for framework in frameworks:
                run = run_worker(framework, family, m * 60, args.samples, timeout=m * 60 * 3 + 600)
                result["families"][family].append(run)
                write_json(path, result)
                rows.append({"family": family, "framework": framework, "minutes": m, "steps": run.get("steps"),
                             "label_acc": run.get("label_accuracy"), "fid_mnist": run.get("fid_mnist"),
                             "likelihood": (run.get("likelihood") or {}).get("value"), "error": run.get("error")})
                print_table(rows[-1:], list(rows[-1]))
        result.setdefault("plots", {})[family] = plot(family, result["families"][family], args.out)
        write_json(path, result)
    print()
    print_table(rows, ["family", "framework", "minutes", "steps", "label_acc", "fid_mnist", "likelihood", "error"])
    print(f"\nresults: {path}; plots: {', '.join(result['plots'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
