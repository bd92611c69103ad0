"""The variational autoencoder (Kingma & Welling 2014): a latent-variable model trained by its ELBO.

The model. A digit x (784 binary pixels) is generated from a hidden code z:

    z ~ p(z) = N(0, I)                      (latent_dim numbers)
    x ~ p(x | z) = Bernoulli(sigmoid(decoder(z)))   (one coin per pixel)

Its likelihood p(x) = integral p(x | z) p(z) dz has no closed form, so we
learn an *encoder* q(z | x) = N(mu(x), diag(exp(logvar(x)))) that guesses
which codes explain x, and maximise the evidence lower bound

    log p(x) >= ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || p(z))
                          (reconstruction)   (stay close to the prior)

The KL between two Gaussians is analytic (`gaussian_kl`). The expectation is
estimated with one sample z = mu + sigma * eps, eps ~ N(0, I): the
*reparameterization* (`reparameterize`) moves the randomness into eps, so the
gradient flows through mu and sigma to the encoder.

Evaluation. -ELBO is an upper bound on -log p(x). The importance-weighted
estimate (Burda et al. 2016) with k samples z_i ~ q(z | x),

    log p(x) ~ log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x),

is a tighter bound that approaches log p(x) as k grows (`iw_log_likelihood`).
Both are reported in nats on the binarized MNIST test set, binarized once with
a fixed seed so numbers from different runs and models are comparable.

Variants (config "variant"): "mlp", the classic 784-400-20 network, and
"conv", two stride-2 convolutions down to 7x7 and two transposed ones back.
With "conditional" the label y (one-hot) is a second input of both encoder
and decoder, so `sample(labels=...)` draws the digit you ask for.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.data import binarize_dynamic, binarize_fixed
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, eval_examples_knob, grad_clip_knob,
                            knob, lr_knob, seed_knob)
from minigen.models.base import (GenerativeModel, check_images, check_labels, check_temperature, condition_labels,
                                 one_hot, register_family)
from minigen.nn import Conv2d, ConvTranspose2d, Linear
from minigen.optim import Adam
from minigen.random import resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["VAE", "VAEConfig", "reparameterize", "gaussian_kl"]

IMAGE_SHAPE = (1, 28, 28)
NUM_PIXELS = 784
IW_DECODE_ROWS = 10_000     # latent samples decoded per call in iw_log_likelihood (bounds its memory)


# --- the hyper-parameters (`minigen train vae --help` lists them; --set KEY=VALUE changes one) --------------
@dataclass(frozen=True)
class VAEConfig(HyperParameters):
    variant: str = knob("mlp", doc="mlp: 784-hidden-latent; conv: two stride-2 convolutions down to 7x7",
                        choices=("mlp", "conv"))
    conditional: bool = conditional_knob(doc="encoder and decoder also see the one-hot label")
    latent_dim: int = knob(20, 1, 4096, "size of z; 2 gives the latent scatter and manifold pictures")
    hidden_dim: int = knob(400, 1, 16384, "width of the encoder's and decoder's hidden layer")
    conv_channels: int = knob(32, 1, 512, "conv variant: channels after the first convolution (second: twice)")
    num_classes: int = knob(10, 10, 1000, "label classes of a conditional model (digits: 10)")
    lr: float = lr_knob(1e-3)
    batch_size: int = batch_size_knob(128)
    grad_clip: float | None = grad_clip_knob(None)
    # Evaluation. The literature's setting is the whole test set (10,000) and k = 5000;
    # these defaults take seconds on 2 cores.
    iw_samples: int = knob(100, 1, 100_000, "importance samples k per test image")
    eval_examples: int | None = eval_examples_knob(2000)
    eval_batch_size: int = knob(100, 1, 100_000, "test images per evaluation batch")
    binarize_seed: int = seed_knob("the test set is binarized once with this seed")

    def memory_floats(self) -> tuple[int, int]:
        h, z = self.hidden_dim, self.latent_dim
        label = self.num_classes if self.conditional else 0
        if self.variant == "conv":
            ch = self.conv_channels
            features = 2 * ch * 49
            convs = 2 * (16 * ch + 16 * 2 * ch * ch)               # two convolutions and their transposes
            maps = 2 * (ch * 196 + 2 * ch * 49)
        else:
            features, convs, maps = NUM_PIXELS, 0, 0
        params = convs + (features + label) * h + 2 * h * z + (z + label) * h + h * features
        activations = 2 * (maps + 2 * h + 4 * z + features + 3 * NUM_PIXELS)
        return params, activations

    def eval_memory_floats(self) -> tuple[int, str]:
        # iw_log_likelihood: a batch of n images decodes ~10,000 latent samples per call, and keeps
        # log w and log p(x|z) (float64: 2 floats each) for all n x iw_samples of them
        n = min(self.eval_batch_size, self.eval_examples or self.eval_batch_size)
        rows = n * max(1, IW_DECODE_ROWS // n)
        per_row = self.memory_floats()[1] // 2
        return (rows * per_row + 4 * n * self.iw_samples,
                f"eval_batch_size={self.eval_batch_size}, iw_samples={self.iw_samples}")


# --- the two formulas of the lecture --------------------------------------------------------------
def reparameterize(mu: Tensor, logvar: Tensor, generator=None) -> Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample of N(mu, exp(logvar)).

    mu, logvar: same shape, e.g. (N, latent_dim). The noise eps is a constant, so
    d z / d mu = 1 and d z / d logvar = sigma * eps / 2: the gradient of E[f(z)]
    w.r.t. the distribution's parameters flows through the sample (the "pathwise" estimator).
    """
    # BEGIN SOLUTION vae: draw eps from resolve(generator), then build z from mu, logvar and eps with Tensor ops
    eps = resolve(generator).normal(mu.shape, dtype=mu.dtype)
    return mu + (logvar * 0.5).exp() * eps
    # END SOLUTION


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over the last axis: (N, L) -> (N,).

    Per dimension: (mu^2 + sigma^2 - 1 - log sigma^2) / 2.
    """
    # BEGIN SOLUTION vae: the formula above with Tensor ops (sigma^2 = exp(logvar)), summed over the last axis
    return ((mu * mu + logvar.exp() - 1 - logvar) * 0.5).sum(axis=-1)
    # END SOLUTION


# --- the model ------------------------------------------------------------------------------------
@register_family("vae")
class VAE(GenerativeModel):
    """Encoder to a diagonal Gaussian over z, decoder to Bernoulli logits over the 784 pixels."""

    likelihood_metric = "nll_nats"
    Config = VAEConfig

    def __init__(self, config: dict | None = None):
        super().__init__(config)
        c = self.hparams
        self.variant, self.latent_dim, self.num_classes = c.variant, c.latent_dim, c.num_classes
        hidden, label_dim = c.hidden_dim, self.num_classes if self.conditional else 0
        if self.variant == "conv":
            ch = c.conv_channels
            self.conv_shape = (2 * ch, 7, 7)          # 28 -> 14 -> 7 with two stride-2 convolutions
            features = int(np.prod(self.conv_shape))
            self.enc_conv1 = Conv2d(1, ch, 4, stride=2, padding=1, relu=True)      # conv + ReLU in one op
            self.enc_conv2 = Conv2d(ch, 2 * ch, 4, stride=2, padding=1, relu=True)
        else:
            features = NUM_PIXELS
        self.enc_hidden = Linear(features + label_dim, hidden)
        self.enc_mu = Linear(hidden, self.latent_dim)
        self.enc_logvar = Linear(hidden, self.latent_dim)
        self.dec_hidden = Linear(self.latent_dim + label_dim, hidden)
        if self.variant == "conv":
            self.dec_expand = Linear(hidden, features)
            self.dec_deconv1 = ConvTranspose2d(2 * ch, ch, 4, stride=2, padding=1)
            self.dec_deconv2 = ConvTranspose2d(ch, 1, 4, stride=2, padding=1)
        else:
            self.dec_out = Linear(hidden, NUM_PIXELS)

    # --- the networks ---------------------------------------------------------------------
    def _with_label(self, h: Tensor, y) -> Tensor:
        """Append the one-hot label to the features h: (N, F) -> (N, F + num_classes) when conditional."""
        if not self.conditional:
            return h
        return ops.concat([h, Tensor(one_hot(y, self.num_classes, h.dtype))], axis=1)

    def encode(self, x: Tensor, y=None) -> tuple[Tensor, Tensor]:
        """x: (N, 1, 28, 28) -> mu, logvar: (N, latent_dim) each."""
        if self.variant == "conv":
            h = self.enc_conv2(self.enc_conv1(x)).reshape(len(x), -1)
        else:
            h = x.reshape(len(x), NUM_PIXELS)
        h = ops.relu(self.enc_hidden(self._with_label(h, y)))
        return self.enc_mu(h), self.enc_logvar(h)

    def decode(self, z: Tensor, y=None) -> Tensor:
        """z: (N, latent_dim) -> Bernoulli logits (N, 1, 28, 28)."""
        h = ops.relu(self.dec_hidden(self._with_label(z, y)))
        if self.variant == "conv":
            h = ops.relu(self.dec_expand(h)).reshape(len(z), *self.conv_shape)
            return self.dec_deconv2(ops.relu(self.dec_deconv1(h)))
        return self.dec_out(h).reshape(len(z), *IMAGE_SHAPE)

    def forward(self, x: Tensor, y=None, generator=None) -> tuple[Tensor, Tensor, Tensor]:
        """One pass of the ELBO: x (N, 1, 28, 28) in {0, 1} -> (recon (N,), kl (N,), logits).

        recon = -log p(x | z) with z = reparameterize(encode(x)); -ELBO = recon + kl, in nats.
        """
        mu, logvar = self.encode(x, y)
        logits = self.decode(reparameterize(mu, logvar, generator), y)
        recon = -ops.bernoulli_log_likelihood(x, logits).reshape(len(x), NUM_PIXELS).sum(axis=1)
        return recon, gaussian_kl(mu, logvar), logits

    # --- training -------------------------------------------------------------------------
    def make_optimizers(self) -> dict:
        return {"model": Adam(self.parameters(), lr=self.hparams.lr)}

    def train_step(self, x, y, optimizers, generator=None) -> dict:
        """Maximise the ELBO on a freshly binarized batch (dynamic binarization: a new coin per pixel
        per step, which acts as data augmentation). Logs the loss (-ELBO), its two parts and the gradient norm."""
        x = check_images("VAE.train_step", x)
        y = check_labels("VAE.train_step", y, len(x), self.num_classes)
        generator = resolve(generator)
        self.train()
        recon, kl, _ = self(Tensor(binarize_dynamic(x, generator)), y, generator)
        loss = (recon + kl).mean()
        grad_norm = self.optimize(loss, optimizers["model"], self.hparams.grad_clip)
        return {"loss": loss.item(), "recon": float(recon.data.mean()), "kl": float(kl.data.mean()),
                "grad_norm": grad_norm}

    # --- sampling -------------------------------------------------------------------------
    def sample(self, n: int, labels=None, generator=None, temperature: float = 1.0,
               binary: bool = False) -> np.ndarray:
        """n images (n, 1, 28, 28) in [0, 1]: z ~ N(0, temperature^2 I), decoded.

        binary=False returns the Bernoulli means sigmoid(logits) (the usual picture); binary=True
        draws the 0/1 pixels themselves. labels: (n,) ints, required for a conditional model.
        """
        temperature = check_temperature("VAE.sample", temperature, scales_noise=True)
        labels = condition_labels("VAE.sample", labels, n, self.conditional, self.num_classes)
        generator = resolve(generator)
        self.eval()
        with no_grad():
            z = Tensor(generator.normal((n, self.latent_dim)) * np.float32(temperature))
            probs = ops.sigmoid(self.decode(z, labels)).data
        return generator.bernoulli(probs) if binary else probs

    def generation_frames(self, generator=None, frames: int = 24):
        """The latent walk: 10 straight lines in z between two prior draws each (one column per digit
        0-9 when conditional), decoded at `frames` points: a minigen.animate.Frames."""
        from minigen.animate import Frames
        generator = resolve(generator)
        labels = np.arange(10) if self.conditional else None
        a, b = generator.normal((2, 10, self.latent_dim))
        steps = np.linspace(0, 1, frames, dtype=np.float32)
        self.eval()
        with no_grad():
            images = np.stack([ops.sigmoid(self.decode(Tensor((1 - t) * a + t * b), labels)).data for t in steps])
        return Frames(images, [f"z = (1 - t) z_a + t z_b, t = {t:.2f}" for t in steps],
                      None if labels is None else list(labels), "VAE: a walk in latent space")

    # --- evaluation -----------------------------------------------------------------------
    def iw_log_likelihood(self, x: np.ndarray, y, k: int, generator=None) -> tuple[np.ndarray, np.ndarray]:
        """Importance-weighted log p(x) with k samples, and the ELBO, per example: x (N, 1, 28, 28) in {0, 1}.

        log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x), z_i ~ q(z | x);
        log p(x) ~ logsumexp_i(log w_i) - log k. The ELBO uses the same samples for the
        reconstruction and the analytic KL. Returns (iw_log_px (N,), elbo (N,)) as float64 arrays.
        """
        generator = resolve(generator)
        self.eval()
        n = len(x)
        with no_grad():
            mu, logvar = self.encode(Tensor(x), y)
            log_w, log_px_z = [], []
            chunk = max(1, IW_DECODE_ROWS // n)       # samples per decoder call: keeps the batch ~10k images
            for start in range(0, k, chunk):
                m = min(chunk, k - start)
                z = mu.data[:, None] + np.exp(0.5 * logvar.data)[:, None] * generator.normal((n, m, self.latent_dim))
                logits = self.decode(Tensor(z.reshape(n * m, -1)), None if y is None else np.repeat(y, m))
                targets = np.broadcast_to(x.reshape(n, 1, NUM_PIXELS), (n, m, NUM_PIXELS))
                log_px_z.append(ops.bernoulli_log_likelihood(targets, logits.reshape(n, m, NUM_PIXELS)).data.sum(2))
                log_pz = ops.gaussian_log_likelihood(z, Tensor(np.zeros_like(z)), Tensor(np.zeros_like(z))).data
                log_qz = ops.gaussian_log_likelihood(z, Tensor(mu.data[:, None]), Tensor(logvar.data[:, None])).data
                log_w.append(log_px_z[-1] + (log_pz - log_qz).sum(axis=2))
            log_w = Tensor(np.concatenate(log_w, axis=1), dtype=np.float64)
            iw = ops.logsumexp(log_w, axis=1).data - math.log(k)
            elbo = np.concatenate(log_px_z, axis=1).mean(axis=1) - gaussian_kl(mu, logvar).data
        return iw, elbo

    def evaluate(self, x, y, generator=None) -> dict:
        """Test metrics in nats per image: neg_elbo (-ELBO), nll_nats (importance-weighted -log p(x)).

        The images are binarized with the fixed seed config.binarize_seed; the first
        config.eval_examples examples (None: all) are used, with k = config.iw_samples.
        The literature's setting is all 10,000 test digits and k = 5000 (about 86 nats for
        this MLP VAE after long training).
        """
        x = check_images("VAE.evaluate", x)
        y = check_labels("VAE.evaluate", y, len(x), self.num_classes)
        c = self.hparams
        if c.eval_examples is not None:
            x, y = x[:c.eval_examples], y[:c.eval_examples]
        x = binarize_fixed(x, c.binarize_seed)
        generator = resolve(generator)
        iw, elbo = [], []
        for start in range(0, len(x), c.eval_batch_size):
            sl = slice(start, start + c.eval_batch_size)
            batch_iw, batch_elbo = self.iw_log_likelihood(x[sl], y[sl] if self.conditional else None,
                                                          c.iw_samples, generator)
            iw.append(batch_iw)
            elbo.append(batch_elbo)
        return {"neg_elbo": float(-np.concatenate(elbo).mean()), "nll_nats": float(-np.concatenate(iw).mean()),
                "iw_samples": c.iw_samples, "examples": len(x)}

    # --- pictures -------------------------------------------------------------------------
    def figures(self, out_dir, x, y, generator=None) -> list[str]:
        """Reconstructions beside inputs, a sample grid, a latent interpolation strip and,
        for a 2-d latent space, the latent scatter by label and the decoded latent manifold."""
        from minigen.plots import save_grid, save_rows
        x = check_images("VAE.figures", x)
        y = check_labels("VAE.figures", y, len(x), self.num_classes)
        generator = resolve(generator)
        os.makedirs(out_dir, exist_ok=True)
        labels = y if self.conditional else None
        self.eval()
        paths = []
        with no_grad():
            xb = binarize_fixed(x[:10], self.hparams.binarize_seed)
            mu, _ = self.encode(Tensor(xb), None if labels is None else labels[:10])
            recon = ops.sigmoid(self.decode(mu, None if labels is None else labels[:10])).data
            paths.append(save_rows({"input": xb, "reconstruction": recon}, os.path.join(out_dir, "reconstructions.png"),
                                   title="binarized test digits and their reconstructions (decoded mean code)"))
            sample_labels = np.repeat(np.arange(self.num_classes), 8) if self.conditional else None
            n = 80 if self.conditional else 64
            paths.append(save_grid(self.sample(n, sample_labels, generator), os.path.join(out_dir, "samples.png"),
                                   nrow=8, title="samples" + (" (one row per digit)" if self.conditional else "")))
            # interpolation between the codes of the first test digit and the first one of another class
            j = int(np.argmax(y != y[0]))
            ends, _ = self.encode(Tensor(binarize_fixed(x[[0, j]], self.hparams.binarize_seed)),
                                  None if labels is None else labels[[0, j]])
            t = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
            z = Tensor((1 - t) * ends.data[0] + t * ends.data[1])
            strip_labels = None if labels is None else np.full(10, labels[0])
            strip = ops.sigmoid(self.decode(z, strip_labels)).data
            paths.append(save_rows({"interpolation": strip}, os.path.join(out_dir, "interpolation.png"),
                                   title=f"decoded codes on the line from a {y[0]} to a {y[j]}"
                                   + (f" (decoded with label {y[0]})" if self.conditional else "")))
            if self.latent_dim == 2:
                paths += self._latent_figures(out_dir, x, y)
        return paths

    def _latent_figures(self, out_dir, x, y) -> list[str]:
        """2-d latent space: encoder means of the test digits coloured by label, and the decoded grid."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from minigen.plots import save_grid
        from minigen.serialize import atomic_write
        labels = y[:2000] if self.conditional else None
        mu, _ = self.encode(Tensor(binarize_fixed(x[:2000], self.hparams.binarize_seed)), labels)
        fig = plt.figure(figsize=(5, 4.5))
        points = plt.scatter(mu.data[:, 0], mu.data[:, 1], c=y[:2000], cmap="tab10", s=4)
        plt.colorbar(points, label="digit")
        plt.xlabel("z1"), plt.ylabel("z2"), plt.title("encoder means of test digits")
        scatter_path = os.path.join(out_dir, "latent_scatter.png")
        atomic_write(scatter_path, lambda f: fig.savefig(f, format="png", bbox_inches="tight", dpi=100))
        plt.close(fig)
        # a 15 x 15 grid over [-2.5, 2.5]^2 of the prior's space, rows from top (z2 high) to bottom
        side = np.linspace(-2.5, 2.5, 15, dtype=np.float32)
        z = np.stack(np.meshgrid(side, side[::-1]), axis=-1).reshape(-1, 2)
        grid_labels = np.zeros(len(z), np.int64) if self.conditional else None
        images = ops.sigmoid(self.decode(Tensor(z), grid_labels)).data
        manifold_path = save_grid(images, os.path.join(out_dir, "latent_manifold.png"), nrow=15,
                                  title="decoded latent grid" + (" (label 0)" if self.conditional else ""))
        return [scatter_path, manifold_path]

