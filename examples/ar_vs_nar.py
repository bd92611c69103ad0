# %% [markdown]
# # Autoregressive vs non-autoregressive on MNIST: the figure and table of `minigen demo ar-vs-nar`
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""Autoregressive vs non-autoregressive on MNIST: the figure and table of `minigen demo ar-vs-nar`.

    python examples/ar_vs_nar.py [--out runs/ar-vs-nar] [--pixelcnn-steps 300] [--data-dir DIR]
"""
from common import ArgumentParser   # examples/common.py: argparse that also works in a notebook

from minigen.tools.demos.ar_vs_nar import run

# %% [markdown]
# ## Run it
# Trains both models briefly and draws the figure; in a notebook, set `sys.argv` in a cell above to pick the
# options (e.g. `--pixelcnn-steps 50`).

# %%
if __name__ == "__main__":
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/ar-vs-nar")
    parser.add_argument("--dataset", default="mnist-5k", choices=["mnist", "mnist-5k"])
    parser.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--pixelcnn-steps", type=int, default=300)
    parser.add_argument("--nar-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(out_dir=args.out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
        pixelcnn_steps=args.pixelcnn_steps, nar_steps=args.nar_steps)
