"""Flow matching: sample quality against the number of ODE steps, Euler and Heun, before and after reflow,
with DDPM's tour recipe beside it.

    python benchmarks/flow_matching_steps.py [--train-steps 600] [--reflow-train-steps 300] [--pairs 500]
        [--pair-steps 8] [--steps 1,2,3,4,6,8,10,15,20] [--samples 100] [--ddpm] [--out benchmarks/results]

1. Trains the tour's flow-matching recipe (minigen.tour.FAMILIES: config, warm-up, cosine decay) for
   --train-steps optimiser steps on mnist-5k, class-conditional (by steps, not seconds, so a loaded
   machine measures what a quiet one would), and measures FID-MNIST and label accuracy of --samples
   samples (the digits 0..9 in turn, against the test images, as the tour does) at every step count
   of --steps, with Euler and with Heun, at the recipe's guidance.
2. Reflow: the trained model makes --pairs (noise, sample) couplings (--pair-steps guided Heun steps
   each), trains on them for --reflow-train-steps more (Adam at the recipe's lr / 10, EMA continuing),
   and is measured again the same way, unguided (the pairs carry the guidance: `default_guidance`).
3. --ddpm: DDPM's tour recipe trained for the same --train-steps, measured at its 20 guided DDIM steps.

Writes flow_matching_steps.json and flow_matching_steps.png (FID-MNIST against network passes per
image, one line per sampler and stage, DDPM's point beside them) into --out, and prints a line per
measurement. A guided pass runs a doubled batch: it counts 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script


def measure(model, steps_list, samples, reference, judge, seed) -> list[dict]:
    """FID-MNIST and label accuracy of `samples` guided samples at every step count, Euler and Heun."""
    from minigen.metrics import fid_mnist, label_accuracy
    from minigen.random import Generator
    labels = np.arange(samples) % 10
    rows = []
    for method in ("euler", "heun"):
        for steps in steps_list:
            start = time.perf_counter()
            images = model.sample(samples, labels, generator=Generator(seed + 10), method=method, steps=steps)
            rows.append({"method": method, "steps": steps, "passes": model.network_passes(method, steps),
                         "fid_mnist": round(fid_mnist(images, reference, judge), 2),
                         "label_accuracy": label_accuracy(images, labels, judge),
                         "sample_seconds_per_image": round((time.perf_counter() - start) / samples, 4)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def train(recipe, steps, out, dataset, seed, overrides=None):
    """The recipe trained for `steps` optimiser steps (its warm-up, a cosine decay over those steps)."""
    from minigen.train import TrainOptions
    from minigen.train import train as run_trainer
    opts = TrainOptions(model=recipe.family, out=os.path.join(out, recipe.family), dataset=dataset, epochs=10_000,
                        seed=seed, conditional=True, model_config={**recipe.config, **(overrides or {})},
                        max_steps=steps, warmup_steps=recipe.warmup_steps, lr_decay=recipe.lr_decay, eval_n=0,
                        n_samples=0, progress=False)
    return run_trainer(opts)[0]


def reflow(model, pairs, steps, dataset, seed) -> float:
    """Make `pairs` couplings with the model and train on them for `steps`; returns the seconds it took."""
    from minigen import data as mdata
    from minigen.optim import Adam
    from minigen.random import Generator
    generator = Generator(seed + 20)
    model.reflow_pairs = model.make_reflow_pairs(pairs, generator)
    train = mdata.load(dataset, "train")
    x, y = mdata.to_float(train.images), train.labels
    optimizer = Adam(model.net.parameters(), lr=model.hparams.lr / 10)
    batch, start = model.hparams.batch_size, time.perf_counter()
    for _ in range(steps):
        pick = generator.integers(0, len(x), (batch,))     # only the count matters: the pairs replace x and y
        model.train_step(x[pick], y[pick], {"model": optimizer}, generator)
    return time.perf_counter() - start


def plot(result, path) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for stage, style in (("before_reflow", "-"), ("after_reflow", "--")):
        for method, marker in (("euler", "o"), ("heun", "s")):
            rows = [r for r in result.get(stage, []) if r["method"] == method]
            if rows:
                ax.plot([r["passes"] for r in rows], [r["fid_mnist"] for r in rows], style, marker=marker,
                        label=f"flow matching, {method}, {stage.replace('_', ' ')}")
    if "ddpm" in result:
        d = result["ddpm"]
        ax.plot([d["passes"]], [d["fid_mnist"]], "k*", markersize=12, label="DDPM, 20 guided DDIM steps")
    ax.set_xscale("log")
    ax.set_xlabel("network passes per image (a guided pass counts 2)")
    ax.set_ylabel(f"FID-MNIST ({result['samples']} samples)")
    ax.set_title(f"flow matching: FID against ODE steps ({result['train_steps']} training steps"
                 + (f", then {result['reflow']['train_steps']} of reflow)" if "reflow" in result else ")"), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--reflow-train-steps", type=int, default=300, help="0: no reflow stage")
    p.add_argument("--pairs", type=int, default=500)
    p.add_argument("--pair-steps", type=int, default=8, help="Heun steps that make each reflow pair")
    p.add_argument("--steps", default="1,2,3,4,6,8,10,15,20")
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ddpm", action="store_true", help="also DDPM's tour recipe for the same training steps")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args(argv)

    from minigen import data as mdata
    from minigen.metrics import fid_mnist, label_accuracy, yardstick
    from minigen.random import Generator
    from minigen.tools.tour import FAMILIES

    steps_list = [int(s) for s in args.steps.split(",")]
    judge = yardstick(args.dataset)
    reference = mdata.to_float(mdata.load(args.dataset, "test").images[:1000])
    recipes = {r.family: r for r in FAMILIES}
    result = {"train_steps": args.train_steps, "samples": args.samples, "dataset": args.dataset,
              "recipe": recipes["flowmatch"].config}
    with tempfile.TemporaryDirectory() as tmp:
        model = train(recipes["flowmatch"], args.train_steps, tmp, args.dataset, args.seed,
                      {"reflow_steps": args.pair_steps})
        result["before_reflow"] = measure(model, steps_list, args.samples, reference, judge, args.seed)
        if args.reflow_train_steps > 0:
            seconds = reflow(model, args.pairs, args.reflow_train_steps, args.dataset, args.seed)
            result["reflow"] = {"pairs": args.pairs, "pair_steps": args.pair_steps,
                                "train_steps": args.reflow_train_steps, "seconds": round(seconds, 1)}
            result["after_reflow"] = measure(model, steps_list, args.samples, reference, judge, args.seed)
        if args.ddpm:
            ddpm = train(recipes["ddpm"], args.train_steps, tmp, args.dataset, args.seed)
            labels = np.arange(args.samples) % 10
            images = ddpm.sample(args.samples, labels, generator=Generator(args.seed + 10),
                                 **recipes["ddpm"].sample_options)
            guided = ddpm.hparams.guidance != 1
            result["ddpm"] = {"passes": ddpm.hparams.sample_steps * (1 + guided),
                              "fid_mnist": round(fid_mnist(images, reference, judge), 2),
                              "label_accuracy": label_accuracy(images, labels, judge)}
            print(json.dumps(result["ddpm"]), flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "flow_matching_steps.json"), "w") as f:
        json.dump(result, f, indent=2)
    print("wrote", plot(result, os.path.join(args.out, "flow_matching_steps.png")))
    return result


if __name__ == "__main__":
    main()
