# %% [markdown]
# # Conditional generation, "write me a 7", with every family: the label is the prompt
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""Conditional generation, "write me a 7", with every family: the label is the prompt.

Each family has a class-conditional variant (`--conditional` in `minigen train`) that takes
the digit label y beside its random vector z:

    PixelCNN  p(x | y) = prod_i p(x_i | x_<i, y)   a per-class bias in every masked conv
    NAR       every pixel at once from y alone       independent pixels: a blur sprinkled as noise
    VAE       decoder(z, y)                           y one-hot, beside z
    Flow      f^-1(z; y)                              y one-hot, into every coupling network
    DDPM      eps_theta(x_t, t, y)                    with classifier-free guidance
    FlowMatch v_theta(x_t, t, y)                      the same U-Net and guidance, a velocity
    GAN       G(z, y)                                 y embedded, beside z

This script trains each family with minigen's trainer for at most --max-seconds (default 90)
each, or, with --runs DIR, loads the conditional run directories DIR/pixelcnn, DIR/vae, ...
that `minigen train MODEL --conditional --out DIR/MODEL` wrote. Then it asks every model
for eight 7s and writes write_me_a_7.png: one row per family.
"""
from __future__ import annotations

import os

import numpy as np
from common import parser, train_family

from minigen.plots import save_rows
from minigen.random import Generator
from minigen.train import load_run

# family -> its configuration: the defaults, except a smaller PixelCNN (784 passes per sample)
FAMILIES = {"pixelcnn": {"channels": 32, "num_blocks": 5}, "nar": {}, "vae": {}, "flow": {}, "ddpm": {},
            "flowmatch": {}, "gan": {}}


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--families nar,vae --max-steps 50`).

# %%
def main(argv=None):
    p = parser(__doc__, "conditional", epochs=3)
    p.add_argument("--digit", type=int, default=7, choices=range(10))
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset of " + ",".join(FAMILIES))
    p.add_argument("--runs", default=None, help="a folder of conditional run directories, one per family")
    p.set_defaults(max_seconds=90.0)
    args = p.parse_args(argv)
    families = [f for f in args.families.split(",") if f]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        p.error(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")

    rows = {}
    for family in families:
        if args.runs:
            model = load_run(os.path.join(args.runs, family))[0]
            if not model.conditional:
                p.error(f"{os.path.join(args.runs, family)} is not a conditional run (train it with --conditional)")
        else:
            model = train_family(args, family, conditional=True, **FAMILIES[family])
        labels = np.full(8, args.digit)                          # the prompt: "a 7", eight times
        rows[family] = model.sample(8, labels=labels, generator=Generator(args.seed))
    path = save_rows(rows, os.path.join(args.out, f"write_me_a_{args.digit}.png"),
                     title=f"every family asked for the digit {args.digit}")
    print("figures:", path)


# %%
if __name__ == "__main__":
    main()
