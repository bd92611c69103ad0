# %% [markdown]
# # The GAN: a generator that never sees a real digit, taught only by a discriminator's opinion
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""The GAN: a generator that never sees a real digit, taught only by a discriminator's opinion.

    G: z ~ N(0, I) (100 numbers) -> image          D: image -> logit "how real?"
    D's step: binary cross-entropy, real -> 1, fake -> 0     (`GAN.discriminator_step`)
    G's step: make D say "real" about G(z): -log D(G(z))       (`GAN.generator_step`)

All in minigen/models/gan.py (the DCGAN recipe). After training (minigen's trainer, into
OUT/gan) this script shows:

* D's verdict, printed: its mean probability "real" on test digits and on fresh fakes.
  At the game's equilibrium both are 1/2;
* walk.png: G along a straight line between two random vectors z: the images change
  smoothly, so G has learnt a continuous map, not a lookup table of training digits.
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen import ops
from minigen.plots import save_rows
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "gan", epochs=10).parse_args(argv)
    model = train_family(args, "gan")
    generator = Generator(args.seed)
    real = 2 * digits("test", args.data_dir)[0][:200] - 1               # the networks work on [-1, 1]
    fake = 2 * model.sample(len(real), generator=generator) - 1

    model.D.eval()
    with no_grad():
        p_real = ops.sigmoid(model.D(Tensor(real))).data.mean()
        p_fake = ops.sigmoid(model.D(Tensor(fake))).data.mean()
    print(f"D(test digits) = {p_real:.2f}, D(G(z)) = {p_fake:.2f} on average (equilibrium: 0.50 and 0.50)")

    ends = generator.normal((2, model.latent_dim))
    t = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
    walk = model.generate((1 - t) * ends[0] + t * ends[1])
    path = save_rows({"G(z)": walk}, os.path.join(args.out, "walk.png"),
                     title="G along the line from z_a to z_b")
    print("figures:", path, f"and the trainer's in {os.path.join(args.out, 'gan')}")


# %%
if __name__ == "__main__":
    main()
