# %% [markdown]
# # Flow matching: straight lines from noise to digits, followed in a few steps
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""Flow matching: straight lines from noise to digits, followed in a few steps.

Path (fixed):  x_t = (1 - t) x0 + t x1, x0 ~ N(0, I) noise, x1 an image          (`interpolate`)
Training:      show the U-Net x_t and t; it predicts the velocity x1 - x0; minimise the squared error
Sampling:      from x0 ~ N(0, I), follow dx/dt = v(x, t) from t = 0 to 1 in a few Euler or Heun steps

All in minigen/models/flow_matching.py. After training (minigen's trainer, into OUT/flowmatch) this
script draws both directions itself:

* straight_line.png: one test digit on the straight line from noise, at ten values of t (a training
  point at each);
* few_steps.png: the same noise carried to a digit with 1, 2, 4 and 8 Euler steps and 4 Heun steps:
  where the learned paths are straight, a few steps land where many would.
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen.models.flow_matching import interpolate
from minigen.plots import save_rows
from minigen.random import Generator


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "flowmatch", epochs=5).parse_args(argv)
    model = train_family(args, "flowmatch")
    x1 = 2 * digits("test", args.data_dir)[0][:1] - 1               # the model works on [-1, 1]
    ts = np.linspace(0, 1, 10)
    noise = Generator(args.seed).normal(x1.shape)
    line = interpolate(np.repeat(noise, len(ts), 0), np.repeat(x1, len(ts), 0), ts)

    solvers = [("euler", 1), ("euler", 2), ("euler", 4), ("euler", 8), ("heun", 4)]
    rows = {f"{method}, {steps} step{'s' if steps > 1 else ''}":
            model.sample(8, generator=Generator(args.seed), method=method, steps=steps)
            for method, steps in solvers}
    for name, images in rows.items():
        print(f"{name}: mean pixel {images.mean():.3f}")
    figures = [
        save_rows({"x_t": np.clip((line + 1) / 2, 0, 1)}, os.path.join(args.out, "straight_line.png"),
                  title="the path: the same digit and noise at growing t", col_labels=[f"t={t:.2f}" for t in ts]),
        save_rows(rows, os.path.join(args.out, "few_steps.png"),
                  title="the same noise, carried to digits by different numbers of ODE steps"),
    ]
    print("figures:", ", ".join(figures), f"and the trainer's in {os.path.join(args.out, 'flowmatch')}")


# %%
if __name__ == "__main__":
    main()
