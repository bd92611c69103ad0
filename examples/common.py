# %% [markdown]
# # What the examples share: their command-line options, the digits, and a family trained by the shared trainer
#
# The helper module every example imports (not run on its own).

# %%
"""What the examples share: their command-line options, the digits, and a family trained by the shared trainer.

Every example takes --out (its figures folder), --data-dir (a folder with the MNIST test set:
`../shared/data/mnist` on the development machines), --epochs / --max-steps, --eval-n and
--max-seconds, --set KEY=VALUE (a model hyper-parameter, as in `minigen train`), so a test
can run it tiny.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from minigen import data


# %% [markdown]
# ## `parser`
# The options every example shares (in a notebook: read from `sys.argv` without the kernel's own).

# %%
class ArgumentParser(argparse.ArgumentParser):
    """argparse's, also in a notebook: there sys.argv ends with the kernel's own `-f connection.json`,
    which is dropped; set `sys.argv = ["x", "--epochs", "1"]` in a cell to choose the options."""

    def parse_args(self, args=None, namespace=None):
        if args is None and "ipykernel" in sys.modules and "-f" in sys.argv[1:]:
            args = sys.argv[1:]
            at = args.index("-f")
            args = args[:at] + args[at + 2:]
        return super().parse_args(args, namespace)


def parser(description: str, name: str, epochs: int | None) -> argparse.ArgumentParser:
    """The shared options; `name` gives the default output folder runs/examples/NAME. With epochs=None
    (an example that trains nothing) only --out, --data-dir and --seed."""
    p = ArgumentParser(description=description.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join("runs", "examples", name), help="folder for the figures and runs")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST test set IDX files (optional)")
    p.add_argument("--seed", type=int, default=0)
    if epochs is None:
        return p
    p.add_argument("--epochs", type=int, default=epochs, help="passes over the 5,000 training digits")
    p.add_argument("--max-steps", type=int, default=None, help="stop training after this many steps")
    p.add_argument("--max-seconds", type=float, default=None, help="or after this much training time")
    p.add_argument("--eval-n", type=int, default=1000, help="test images for the final metrics (0: skip)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a model hyper-parameter, e.g. --set latent_dim=2 (values are JSON, else strings)")
    return p


# %% [markdown]
# ## `overrides`
# ["latent_dim=2", "variant=conv"] -> {"latent_dim": 2, "variant": "conv"}.

# %%
def overrides(pairs: list[str]) -> dict:
    """["latent_dim=2", "variant=conv"] -> {"latent_dim": 2, "variant": "conv"}."""
    config = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {pair!r}")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    return config


# %% [markdown]
# ## `digits`
# The digits of mnist-5k as floats in [0, 1], with their labels.

# %%
def digits(split: str, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """mnist-5k: x (N, 1, 28, 28) float32 in [0, 1], y (N,) int64. The test split is the real MNIST
    test set when data_dir (or the cache) has it, else a held-out tenth of the 5,000 digits."""
    dataset = data.load("mnist-5k", split, data_dir)
    return data.to_float(dataset.images), dataset.labels


# %% [markdown]
# ## `train_family`
# A family trained by minigen's own trainer into a run directory (or loaded from one).

# %%
def train_family(args, family: str, conditional: bool = False, run_name: str | None = None, **config):
    """Train `family` on mnist-5k with minigen's trainer into OUT/RUN_NAME (a run directory), or
    load that run if it is already there. `config` are the example's defaults; --set overrides them.
    Returns the trained model."""
    from minigen.tools.report import write_run_report
    from minigen.train import CHECKPOINT, TrainOptions, load_run, train
    run_dir = os.path.join(args.out, run_name or family)
    if os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        print(f"reusing the trained run in {run_dir} (delete it to train again)")
        return load_run(run_dir)[0]
    opts = TrainOptions(model=family, out=run_dir, dataset="mnist-5k", data_dir=args.data_dir, epochs=args.epochs,
                        seed=args.seed, conditional=conditional, model_config={**config, **overrides(args.set)},
                        max_steps=args.max_steps, max_seconds=args.max_seconds, eval_n=args.eval_n)
    model, summary = train(opts)
    write_run_report(run_dir)
    print(f"trained {family}: {summary['steps']} steps in {summary['train_seconds']:.0f} s; "
          f"test metrics {summary.get('test', {})}; run directory {run_dir}")
    return model
