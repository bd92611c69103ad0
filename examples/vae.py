# %% [markdown]
# # The VAE: digits from a random vector z, trained through an encoder and the ELBO
#
# Runs as a script, or cell by cell as a notebook (docs/notebooks.md).

# %%
"""The VAE: digits from a random vector z, trained through an encoder and the ELBO.

    z ~ N(0, I)  --decoder-->  784 pixel probabilities            (generation: one pass)
    x  --encoder-->  mu(x), sigma(x);  z = mu + sigma * eps        (training: `reparameterize`)
    maximise ELBO = E[log p(x | z)] - KL(q(z | x) || N(0, I))     (`gaussian_kl`)

The model is minigen/models/vae.py; minigen's trainer trains it (into OUT/vae, a run
directory you can pass to `minigen sample` / `minigen eval`). Then this script draws the
two pictures that make the random vector z concrete:

* interpolation.png: encode two test digits, walk the straight line between their codes,
  decode every point. The latent space is smooth: the in-between codes are digits too.
* vae_graph.svg: the autograd graph of one ELBO, one box per layer (`viz.trace_modules`).
* reparameterization.png: one test digit, its code mu(x), and eight draws
  z = mu + sigma * eps decoded: the encoder's uncertainty, seen as images.

The default latent size is 2, so the trainer also writes latent_scatter.png (test codes
coloured by digit) and latent_manifold.png (a grid of z decoded); --set latent_dim=20 for
sharper samples.
"""
from __future__ import annotations

import os

import numpy as np
from common import digits, parser, train_family

from minigen import ops, viz
from minigen.data import binarize_fixed
from minigen.models.vae import reparameterize
from minigen.plots import save_rows
from minigen.random import Generator
from minigen.tensor import Tensor, no_grad


# %% [markdown]
# ## `main`
# Run it: `main()` takes the same options as the command line; in a notebook, set `sys.argv` in a cell above to pick them (e.g. `--max-steps 50`).

# %%
def main(argv=None):
    args = parser(__doc__, "vae", epochs=20).parse_args(argv)
    model = train_family(args, "vae", latent_dim=2)
    x, y = digits("test", args.data_dir)
    x = binarize_fixed(x[:500])
    # the model's graph for one ELBO, one box per layer (vae_graph.svg; vae_graph.dot without Graphviz)
    with viz.trace_modules(model):
        recon, kl, _ = model(Tensor(x[:16]))
    figures = [viz.draw((recon + kl).mean(), os.path.join(args.out, "vae_graph.svg"))]
    decode = lambda z: ops.sigmoid(model.decode(Tensor(z))).data  # noqa: E731  (probabilities, (n, 1, 28, 28))

    with no_grad():
        mu, logvar = model.encode(Tensor(x))
        a, b = 0, int(np.argmax(y[:500] != y[0]))                 # the first digit and one of another class
        t = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
        line = (1 - t) * mu.data[a] + t * mu.data[b]              # 10 codes on the segment from mu_a to mu_b
        draws = reparameterize(Tensor(np.repeat(mu.data[a:a + 1], 8, 0)),
                               Tensor(np.repeat(logvar.data[a:a + 1], 8, 0)), Generator(args.seed))
        figures += [
            save_rows({"interpolation": decode(line)}, os.path.join(args.out, "interpolation.png"),
                      title=f"decoded codes on the line from a {y[a]} to a {y[b]}"),
            save_rows({"input": x[a:a + 1], "decoded mu": decode(mu.data[a:a + 1]),
                       "z = mu + sigma eps": decode(draws.data)}, os.path.join(args.out, "reparameterization.png"),
                      title=f"one digit, its code, and 8 draws from q(z | x) (sigma ~ {np.exp(0.5 * logvar.data[a]).round(2)})"),
        ]
    print("figures:", ", ".join(figures), f"and the trainer's in {os.path.join(args.out, 'vae')}")


# %%
if __name__ == "__main__":
    main()
