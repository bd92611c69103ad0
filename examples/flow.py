# %% [markdown]
# # The normalizing flow (RealNVP): an invertible network, so the likelihood is exact
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""The normalizing flow (RealNVP): an invertible network, so the likelihood is exact.

    x (a digit)  <--  f^-1  --  z ~ N(0, I)      generation: invert the flow
    log p(x) = log N(f(x); 0, I) + log |det df/dx|   training: maximise it (change of variables)

f is a stack of affine couplings (minigen/models/flow.py, `AffineCoupling`): each keeps half
the pixels (a checkerboard mask) and scales and shifts the other half by amounts computed
from the kept half, so it is trivially invertible and its Jacobian is triangular: the
log-determinant is just the sum of the log-scales.

After training (minigen's trainer, into OUT/flow), this script shows the two directions:

* there_and_back.png: test digits x, their codes z = f(x) (as images: noise-like, as the
  prior wants), and f^-1(z), which gives x back to float precision (printed).
* temperature.png: samples f^-1(T z) for T = 0.5, 0.7, 1.0: lower temperature, cleaner digits.
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen.plots import save_rows
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "flow", epochs=10).parse_args(argv)
    model = train_family(args, "flow")
    x, _ = digits("test", args.data_dir)
    v = model.dequantize(x[:8], Generator(args.seed))          # (pixel + uniform noise) / 256, in (0, 1)

    model.eval()
    with no_grad():
        z, log_det = model(Tensor(v))                           # x -> z, and log |det dz/dx| per image
        back = model.inverse(z).data                            # z -> x
    print(f"f^-1(f(x)) - x: largest difference {np.abs(back - v).max():.2e}; "
          f"log|det J| of the first digit {log_det.data[0]:.1f} nats")
    show_z = np.clip(z.data.reshape(8, 1, 28, 28) / 6 + 0.5, 0, 1)   # codes of ~N(0, 1) shown around grey
    figures = [
        save_rows({"x": v, "z = f(x)": show_z, "f^-1(z)": back}, os.path.join(args.out, "there_and_back.png"),
                  title="the flow is invertible: digit -> code -> the same digit"),
        save_rows({f"T = {t}": model.sample(10, generator=Generator(args.seed), temperature=t)
                   for t in (0.5, 0.7, 1.0)},
                  os.path.join(args.out, "temperature.png"), title="samples f^-1(T z), z ~ N(0, I): the same z per column"),
    ]
    print("figures:", ", ".join(figures), f"and the trainer's in {os.path.join(args.out, 'flow')}")


# %%
if __name__ == "__main__":
    main()
