# %% [markdown]
# # DDPM, the diffusion model: learn to undo noise, then make digits out of pure noise
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""DDPM, the diffusion model: learn to undo noise, then make digits out of pure noise.

Forward (fixed): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps      (`NoiseSchedule.q_sample`)
Training:        show the U-Net x_t and t; it predicts eps; minimise ||eps - eps_theta(x_t, t)||^2
Reverse:         from x_T ~ N(0, I), remove the predicted noise step by step (`DDPM.sample_trajectory`)

All in minigen/models/ddpm.py. After training (minigen's trainer, into OUT/ddpm) this script
draws both directions itself:

* noising.png: one test digit pushed through q_sample at ten values of t, with the signal
  fraction sqrt(alpha_bar_t) printed: by t = T only noise is left;
* denoising.png: eight samples, each a row from pure noise to a digit (DDIM, EMA weights).
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen.plots import save_rows
from minigen.random import Generator


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "ddpm", epochs=5).parse_args(argv)
    model = train_family(args, "ddpm")
    schedule = model.schedule
    x0 = 2 * digits("test", args.data_dir)[0][:1] - 1               # the model works on [-1, 1]

    ts = np.linspace(0, schedule.T - 1, 10).round().astype(np.int64)
    noise = Generator(args.seed).normal(x0.shape)
    xt = schedule.q_sample(np.repeat(x0, len(ts), 0), ts, np.repeat(noise, len(ts), 0))   # one jump per t
    for t in ts[::3]:
        print(f"t = {t + 1:4d}: x_t = {np.sqrt(schedule.alpha_bar[t]):.3f} x_0 + "
              f"{np.sqrt(1 - schedule.alpha_bar[t]):.3f} eps")

    final, frames = model.sample_trajectory(8, generator=Generator(args.seed), frames=10)
    figures = [
        save_rows({"x_t": np.clip((xt + 1) / 2, 0, 1)}, os.path.join(args.out, "noising.png"),
                  title="forward process: the same digit and noise at growing t",
                  col_labels=[f"t={t + 1}" for t in ts]),
        save_rows({f"sample {i}": frames[:, i] for i in range(len(final))}, os.path.join(args.out, "denoising.png"),
                  title="reverse process: pure noise -> digit"),
    ]
    print("figures:", ", ".join(figures), f"and the trainer's in {os.path.join(args.out, 'ddpm')}")


# %%
if __name__ == "__main__":
    main()
