"""DDPM: a denoising diffusion model (Ho et al. 2020), with DDIM sampling and classifier-free guidance.

The idea in four steps:

1. **Forward process (fixed, no parameters).** Destroy an image x_0 in T small steps,
   q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I). With alpha_t = 1 - beta_t and
   alpha_bar_t = prod_{s<=t} alpha_s, the t steps collapse into one closed form,
   `q_sample`: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, eps ~ N(0, I).
   For large t, alpha_bar_t ~ 0 and x_T is (almost exactly) standard normal noise.
2. **Reverse process (learned).** Given x_0, the step back is Gaussian in closed form,
   `q_posterior`: q(x_{t-1} | x_t, x_0) = N(c1_t x_0 + c2_t x_t, beta_tilde_t). We don't know
   x_0 when generating, so a U-Net eps_theta(x_t, t) guesses the noise that was added; that
   gives a guess of x_0 (`predict_x0`) to plug into the posterior.
3. **Training** is plain regression: pick t at random, noise an image with `q_sample`, and
   minimise || eps - eps_theta(x_t, t) ||^2 (the simplified variational bound).
4. **Sampling.** Ancestral sampling walks all T posterior steps from pure noise. DDIM
   (Song et al. 2021) walks a subsequence of, e.g., 50 steps; eta=0 makes it deterministic,
   and eta=1 with all T steps is exactly ancestral sampling again. Samples use an
   exponential moving average (EMA) of the weights: a smoother, better model.

Class conditioning uses classifier-free guidance (Ho & Salimans 2021): during training the
label is replaced by a "null" label with probability p_uncond, so one network learns both
eps(x_t, t, y) and eps(x_t, t); sampling mixes them as eps_u + guidance * (eps_c - eps_u)
(guidance 1: plain conditional; above 1: more typical digits, less variety).

Images are scaled to [-1, 1] for the model and back to [0, 1] for the caller.
"""
from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import (HyperParameters, batch_size_knob, conditional_knob, excluded, grad_clip_knob, knob,
                            lr_knob)
from minigen.errors import ConfigError, MinigenError, ShapeError
from minigen.kernels import winograd
from minigen.kernels.conv import map_batch_parts
from minigen.models.base import (GenerativeModel, check_guidance, check_images, check_labels, condition_labels,
                                 register_family)
from minigen.nn import Conv2d, Embedding, GroupNorm, Linear, Module, Upsample
from minigen.optim import EMA, Adam, ema_decay_at
from minigen.random import resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["NoiseSchedule", "timestep_embedding", "ResBlock", "UNet", "UNetModel", "DDPM", "UNetConfig", "DDPMConfig"]


# --- the hyper-parameters (`minigen train ddpm --help` lists them; --set KEY=VALUE changes one) -------------
@dataclass(frozen=True)
class UNetConfig(HyperParameters):
    """The knobs of a U-Net denoiser with EMA weights and classifier-free guidance: what DDPM and flow
    matching (minigen/models/flow_matching.py) share. Each family adds its own training objective's."""
    lr: float = lr_knob(2e-4)
    batch_size: int = batch_size_knob(128)
    conditional: bool = conditional_knob(doc="the U-Net also sees the label (classifier-free guidance)")
    num_classes: int = knob(10, 10, 1000, "label classes of a conditional model (digits: 10)")
    channels: tuple[int, ...] = knob((32, 64, 64), 1, 1024, "U-Net widths at 28, 14, 7 pixels (one per level)",
                                     length=(1, 3))
    time_dim: int = knob(128, 2, 4096, "timestep embedding size (even: sin and cos halves)")
    groups: int = knob(8, 1, 1024, "GroupNorm groups (must divide every entry of channels)")
    p_uncond: float = knob(0.1, 0.0, excluded(1.0), "label dropped this often in training (classifier-free guidance)")
    ema_decay: float = knob(0.999, 0.0, excluded(1.0), "the EMA of the weights used for sampling")
    grad_clip: float | None = grad_clip_knob(1.0)
    guidance: float = knob(1.0, 0.0, 100.0, "classifier-free guidance scale (1: none)")
    eval_examples: int = knob(1000, 1, None, "test images for the loss in evaluate()")

    def check(self) -> None:
        if any(c % self.groups for c in self.channels):
            raise ConfigError(f"groups={self.groups} does not divide channels={list(self.channels)}; "
                              f"every entry of channels must be a multiple of groups")
        if self.time_dim % 2:
            raise ConfigError(f"time_dim={self.time_dim} must be even (sin and cos halves)")

    def memory_floats(self) -> tuple[int, int]:
        emb, ch = 2 * self.time_dim, self.channels
        params = self.time_dim * emb + emb * emb + 9 * ch[0]
        activations, prev = 0, ch[0]
        for i, c in enumerate(ch):                      # the down path, then the up path with its skips
            pixels = (28 >> i) ** 2
            params += 9 * (prev * c + c * c) + 2 * emb * c + 9 * c * c + 9 * ((prev + c) * c + c * c) + 9 * c * c
            activations += pixels * (8 * c + 8 * (prev + c))
            prev = c
        params += 9 * 2 * prev * prev                   # the middle block
        return params, activations + 8 * (28 >> (len(ch) - 1)) ** 2 * prev


@dataclass(frozen=True)
class DDPMConfig(UNetConfig):
    schedule: str = knob("linear", doc="how beta_t grows from beta_start to beta_end", choices=("linear", "cosine"))
    T: int = knob(1000, 2, 10_000, "diffusion steps")
    beta_start: float = knob(1e-4, excluded(0.0), excluded(1.0), "noise variance of the first step")
    beta_end: float = knob(0.02, excluded(0.0), excluded(1.0), "noise variance of the last step (>= beta_start)")
    # v (sqrt(ab) eps - sqrt(1 - ab) x_0, Salimans & Ho 2022) keeps a well-scaled target at every noise level,
    # so a short run's x_0 guess at high t is not amplified noise; measured: 98% label accuracy after 600
    # steps of the tour's recipe (docs/recipes.md). Sampling converts either output to eps.
    prediction: str = knob("eps", doc="what the U-Net outputs: the noise eps (DDPM) or v", choices=("eps", "v"))
    clip_denoised: bool = knob(True, doc="clip the predicted x_0 to [-1, 1] at every sampling step")
    # sampling defaults (each can be overridden by a keyword of sample()):
    # DDIM with 50 steps, because 1000 ancestral steps take minutes on a CPU
    sample_method: str = knob("ddim", doc="the sampler", choices=("ancestral", "ddim"))
    sample_steps: int = knob(50, 1, 10_000, "DDIM sampling steps (at most T)")
    eta: float = knob(0.0, 0.0, 1.0, "DDIM noise (0: deterministic given x_T; 1: ancestral-like)")

    def check(self) -> None:
        if self.beta_start > self.beta_end:
            raise ConfigError(f"beta_start={self.beta_start:g} is above beta_end={self.beta_end:g}; "
                              f"need beta_start <= beta_end")
        super().check()
        if self.sample_method == "ddim" and self.sample_steps > self.T:
            raise ConfigError(f"sample_steps={self.sample_steps} is more than T={self.T}; need 1..T")


# --- 1. the forward process -------------------------------------------------------------------
class NoiseSchedule:
    """The fixed noise schedule beta_1..beta_T and every quantity derived from it.

    Timesteps are 0-based: index t in [0, T) is the lecture's step t+1, so `alpha_bar[0]` is
    after one noising step and `alpha_bar[T-1]` after all T. Arrays are float64 (T,);
    they are cast to float32 only where they meet images.

    kind: "linear" (betas evenly spaced from beta_start to beta_end, as in DDPM) or
    "cosine" (alpha_bar follows a squared cosine, Nichol & Dhariwal 2021: less wasted noise
    at the end of the chain, better for small images).
    """

    def __init__(self, kind: str = "linear", T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not isinstance(T, (int, np.integer)) or T < 2:
            raise MinigenError(f"NoiseSchedule: T must be an integer >= 2, got {T!r}")
        if kind == "linear":
            if not 0 < beta_start <= beta_end < 1:
                raise MinigenError(f"NoiseSchedule: need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
            betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
        elif kind == "cosine":
            s = 0.008   # small offset so beta_1 is not vanishingly small
            f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * math.pi / 2) ** 2
            # clipped like the paper: beta near 1 at the very end would make sampling unstable
            betas = np.clip(1 - f[1:] / f[:-1], 0, 0.999)
        else:
            raise MinigenError(f"NoiseSchedule: kind must be 'linear' or 'cosine', got {kind!r}")
        self.kind, self.T = kind, int(T)
        self.betas = betas
        self.alphas = 1 - betas
        self.alpha_bar = np.cumprod(self.alphas)
        # alpha_bar before step t: 1 before the first step (x_0 is clean)
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(c1 x_0 + c2 x_t, beta_tilde): the product of the two Gaussians
        # q(x_{t-1} | x_0) and q(x_t | x_{t-1}), worked out once here
        # BEGIN SOLUTION ddpm: posterior_variance (beta tilde), posterior_c1, posterior_c2: (T,) arrays
        self.posterior_variance = betas * (1 - self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_c1 = betas * np.sqrt(self.alpha_bar_prev) / (1 - self.alpha_bar)
        self.posterior_c2 = (1 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1 - self.alpha_bar)
        # END SOLUTION

    def check_timesteps(self, t) -> np.ndarray:
        t = np.asarray(t)
        if t.dtype.kind not in "iu" or (t.size and (t.min() < 0 or t.max() >= self.T)):
            raise ShapeError(f"timesteps must be integers in [0, {self.T}), got dtype {t.dtype}"
                             + (f" with range [{t.min()}, {t.max()}]" if t.size else ""))
        return t

    def _per_image(self, values: np.ndarray, t: np.ndarray) -> np.ndarray:
        """values[t] as float32 of shape (N, 1, 1, 1), to broadcast over (N, C, H, W) images."""
        return values[t].astype(np.float32).reshape(-1, 1, 1, 1)

    def q_sample(self, x0: np.ndarray, t, noise: np.ndarray) -> np.ndarray:
        """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, in one step.

        x0, noise: (N, C, H, W) float32; t: (N,) ints in [0, T) -> (N, C, H, W) float32.
        """
        t = self.check_timesteps(t)
        if x0.shape != noise.shape or t.shape != (x0.shape[0],):
            raise ShapeError(f"q_sample: expected x0 and noise of one shape (N, C, H, W) and t (N,), got "
                             f"{x0.shape}, {noise.shape} and {t.shape}")
        # BEGIN SOLUTION ddpm: x_t in one step from x0 and noise (use self._per_image to broadcast alpha_bar[t])
        return (self._per_image(np.sqrt(self.alpha_bar), t) * x0
                + self._per_image(np.sqrt(1 - self.alpha_bar), t) * noise)
        # END SOLUTION

    def q_posterior(self, x0: np.ndarray, xt: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
        """Mean (N, C, H, W) and variance (N, 1, 1, 1) of q(x_{t-1} | x_t, x_0); float32."""
        t = self.check_timesteps(t)
        mean = self._per_image(self.posterior_c1, t) * x0 + self._per_image(self.posterior_c2, t) * xt
        return mean, self._per_image(self.posterior_variance, t)

    def velocity(self, x0: np.ndarray, noise: np.ndarray, t) -> np.ndarray:
        """v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022), the target of a
        v-predicting network. x0, noise: (N, C, H, W) float32; t: (N,) ints -> (N, C, H, W) float32."""
        t = self.check_timesteps(t)
        return (self._per_image(np.sqrt(self.alpha_bar), t) * noise
                - self._per_image(np.sqrt(1 - self.alpha_bar), t) * x0)

    def eps_from_velocity(self, xt: np.ndarray, v: np.ndarray, t) -> np.ndarray:
        """The noise a predicted v implies: eps = sqrt(1 - alpha_bar_t) x_t + sqrt(alpha_bar_t) v.
        xt, v: (N, C, H, W) float32; t: one int for the batch, or (N,) ints."""
        t = np.atleast_1d(self.check_timesteps(t))
        return self._per_image(np.sqrt(1 - self.alpha_bar), t) * xt + self._per_image(np.sqrt(self.alpha_bar), t) * v

    def predict_x0(self, xt: np.ndarray, eps: np.ndarray, t: int) -> np.ndarray:
        """Invert q_sample for a guessed noise: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        return (xt - math.sqrt(1 - self.alpha_bar[t]) * eps) * np.float32(1 / math.sqrt(self.alpha_bar[t]))

    def sampling_plan(self, method: str, steps: int | None) -> list[tuple[int, int]]:
        """The (t, t_prev) pairs a sampler walks from noise to image (t_prev = -1: the clean image).

        "ancestral": every step T-1, ..., 0 (steps must be None or T); "ddim": `steps` timesteps
        evenly spaced over [0, T-1] (all of them when steps == T)."""
        T = self.T
        if method == "ancestral":
            if steps not in (None, T):
                raise MinigenError(f"ddpm: ancestral sampling walks all T={T} steps; got steps={steps} "
                                   f"(use method='ddim' for fewer)")
            times = np.arange(T)
        elif method == "ddim":
            steps = int(steps)
            if not 1 <= steps <= T:
                raise MinigenError(f"ddpm: DDIM steps must be in [1, {T}], got {steps}")
            times = np.unique(np.linspace(0, T - 1, steps).round().astype(np.int64))
        else:
            raise MinigenError(f"ddpm: method must be 'ancestral' or 'ddim', got {method!r}")
        times = times[::-1]
        return [(int(t), int(times[i + 1]) if i + 1 < len(times) else -1) for i, t in enumerate(times)]


# --- 2. the noise-predicting network ------------------------------------------------------------
def timestep_embedding(t: np.ndarray, dim: int) -> np.ndarray:
    """Sinusoidal features of the timestep (as in the Transformer's positions): a smooth code the
    network can read at every scale. t: (N,) numbers -> (N, dim) float32, [sin | cos] halves."""
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    angles = np.asarray(t, dtype=np.float64)[:, None] * freqs[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


class ResBlock(Module):
    """GroupNorm -> SiLU -> 3x3 conv, plus the time(+label) embedding, then GroupNorm -> SiLU -> 3x3 conv,
    around a residual connection (a 1x1 conv when the channel count changes).

    x: (N, in_ch, H, W), emb: (N, emb_dim) -> (N, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, generator=None):
        self.norm1 = GroupNorm(groups, in_ch, silu=True)       # GroupNorm -> SiLU as one fused op
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1, generator=generator)
        self.emb_proj = Linear(emb_dim, out_ch, generator=generator)
        self.norm2 = GroupNorm(groups, out_ch, silu=True)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1, generator=generator)
        self.skip = Conv2d(in_ch, out_ch, 1, generator=generator) if in_ch != out_ch else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(self.norm1(x))
        # the embedding shifts every channel: this is how each block knows the noise level
        h = h + self.emb_proj(emb).reshape(h.shape[0], -1, 1, 1)
        h = self.conv2(self.norm2(h))
        return h + (x if self.skip is None else self.skip(x))


class UpBlock(Module):
    """Nearest-neighbour 2x upsampling followed by a 3x3 conv (avoids transposed-conv checkerboards)."""

    def __init__(self, channels: int, generator=None):
        self.up = Upsample(2)
        self.conv = Conv2d(channels, channels, 3, padding=1, generator=generator)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(x))


class UNet(Module):
    """eps_theta(x_t, t, y): a U-Net with one residual block per resolution.

    channels[i] is the width at resolution 28 / 2^i (default 32/64/64 at 28/14/7). The down path
    keeps each level's output; the up path concatenates it back (skip connections), so fine
    detail does not have to squeeze through the 7x7 bottleneck.

    x: (N, 1, 28, 28) float32 in about [-1, 1]; t: (N,) times (DDPM: step indices 0..T-1; flow matching:
    1000 t for t in [0, 1]); labels: (N,) ints in [0, num_classes],
    where num_classes is the "null" label (used for classifier-free guidance), or None for an
    unconditional network -> the prediction (noise, v or velocity) (N, 1, 28, 28).
    """

    def __init__(self, channels=(32, 64, 64), time_dim: int = 128, groups: int = 8, num_classes: int | None = None,
                 generator=None):
        channels = [int(c) for c in channels]
        emb_dim = 2 * time_dim
        self.time_dim = time_dim
        self.time_fc1 = Linear(time_dim, emb_dim, generator=generator)
        self.time_fc2 = Linear(emb_dim, emb_dim, generator=generator)
        # one extra row: the null label of classifier-free guidance
        self.label_embed = Embedding(num_classes + 1, emb_dim, generator=generator) if num_classes else None
        self.conv_in = Conv2d(1, channels[0], 3, padding=1, generator=generator)
        self.down = []
        self.downsample = []
        prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(ResBlock(prev, c, emb_dim, groups, generator))
            if i < len(channels) - 1:
                self.downsample.append(Conv2d(c, c, 3, stride=2, padding=1, generator=generator))
            prev = c
        self.mid = ResBlock(prev, prev, emb_dim, groups, generator)
        self.up = []
        self.upsample = []
        for i in reversed(range(len(channels))):
            self.up.append(ResBlock(prev + channels[i], channels[i], emb_dim, groups, generator))
            prev = channels[i]
            if i > 0:
                self.upsample.append(UpBlock(prev, generator))
        self.norm_out = GroupNorm(groups, prev, silu=True)
        self.conv_out = Conv2d(prev, 1, 3, padding=1, generator=generator)

    def forward(self, x: Tensor, t: np.ndarray, labels: np.ndarray | None = None) -> Tensor:
        emb = self.time_fc2(ops.silu(self.time_fc1(Tensor(timestep_embedding(t, self.time_dim)))))
        if self.label_embed is not None:
            emb = emb + self.label_embed(labels)
        emb = ops.silu(emb)   # every block's projection reads it through the same nonlinearity
        h = self.conv_in(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, emb)
        for i, block in enumerate(self.up):
            h = block(ops.concat([h, skips.pop()], axis=1), emb)
            if i < len(self.upsample):
                h = self.upsample[i](h)
        return self.conv_out(self.norm_out(h))


# --- the U-Net model: what DDPM and flow matching share -----------------------------------------
class UNetModel(GenerativeModel):
    """A family whose network is the U-Net above, trained with Adam, sampled with an EMA of its weights
    and classifier-free guidance. DDPM and flow matching differ only in what the U-Net is trained to
    output (noise or v here; a velocity there) and how a sampler uses it. Config: a UNetConfig."""

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config)
        hp = self.hparams
        self.num_classes = hp.num_classes
        self.net = UNet(hp.channels, hp.time_dim, hp.groups, self.num_classes if self.conditional else None,
                        generator)
        self.ema = EMA(self.net, hp.ema_decay)

    def make_optimizers(self):
        return {"model": Adam(self.net.parameters(), lr=self.hparams.lr)}

    def drop_labels(self, labels: np.ndarray | None, generator) -> np.ndarray | None:
        """Classifier-free guidance's training half: each label becomes the null label (num_classes) with
        probability p_uncond, so one network learns the conditional and the unconditional output.
        Draws one uniform per label (none for an unconditional model)."""
        if labels is None:
            return None
        drop = generator.uniform((len(labels),)) < self.hparams.p_uncond
        return np.where(drop, self.num_classes, labels)

    def optimize_and_average(self, loss, optimizer) -> float:
        """One optimiser step on `loss`, then the EMA update; returns the gradient norm."""
        grad_norm = self.optimize(loss, optimizer, self.hparams.grad_clip)
        # EMA warm-up: average over ~all steps so far while there are few, so short runs are not
        # dominated by the random initial weights
        self.ema.decay = ema_decay_at(optimizer.step_count, self.hparams.ema_decay)
        self.ema.update(self.net)
        return grad_norm

    def ema_weights(self):
        """Temporarily put the EMA weights into the network (the training weights come back after)."""
        return self.ema.applied_to(self.net)

    def test_loss(self, where: str, x, y, batch_loss) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The EMA network's loss on the first config.eval_examples test images x (N, 1, 28, 28) in [0, 1]
        with labels y (N,): batch_loss(x0 (B, 1, 28, 28) in [-1, 1], labels (B,) or None) -> the batch's
        mean squared error, averaged over the images (under no_grad, in batches of batch_size). What
        each family's loss is (noise or velocity, its random draws) is batch_loss's.
        Returns (loss, the checked images, their labels) for the family's other metrics."""
        x = check_images(where, x)[: self.hparams.eval_examples]
        labels = (check_labels(where, np.asarray(y)[: len(x)], len(x), self.num_classes)
                  if self.conditional else None)
        total, batch = 0.0, self.hparams.batch_size
        with no_grad(), self.ema_weights():
            for start in range(0, len(x), batch):
                x0 = 2 * x[start:start + batch] - 1
                total += batch_loss(x0, None if labels is None else labels[start:start + batch]) * len(x0)
        return total / len(x), x, labels

    def guided_output(self, x: np.ndarray, t: np.ndarray, labels: np.ndarray | None, guidance: float) -> np.ndarray:
        """The network's output for x (N, 1, 28, 28) at times t (N,) (call under no_grad); guided when
        guidance != 1: out_u + guidance * (out_c - out_u).

        With guidance, conditional and unconditional outputs come from ONE network pass over
        a doubled batch (cheaper than two passes)."""
        n = len(x)
        if labels is None or guidance == 1:
            return self._net_output(x, t, labels)
        both = self._net_output(np.concatenate([x, x]), np.concatenate([t, t]),
                                np.concatenate([labels, np.full(n, self.num_classes)]))
        cond, uncond = both[:n], both[n:]
        return uncond + np.float32(guidance) * (cond - uncond)

    def _net_output(self, x: np.ndarray, t: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        """The network's output array for x (N, 1, 28, 28), under no_grad. A sampling batch
        (e.g. 16 images) is too small for any one kernel to be worth sharing between threads,
        so the batch is split instead: each thread runs the whole network on its part."""
        def part(n0, n1):
            return self.net(Tensor(x[n0:n1]), t[n0:n1], None if labels is None else labels[n0:n1]).data
        parts = map_batch_parts(part, len(x))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def check_sampling(self, where: str, n, guidance) -> float:
        """Check sample()'s n and guidance (None: the config's); returns the guidance."""
        guidance = self.hparams.guidance if guidance is None else check_guidance(where, guidance)
        if guidance != 1 and not self.conditional:
            raise MinigenError(f"{self.family}: guidance={guidance} needs a conditional model "
                               f"(config 'conditional': true)")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise MinigenError(f"{self.family}: number of samples must be a positive integer, got {n!r}")
        return guidance

    def extra_state(self) -> dict:
        return {"ema": self.ema.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.ema.load_state_dict(state["ema"])


# --- 3 and 4. the model: training, sampling, evaluation, pictures -------------------------------
@register_family("ddpm")
class DDPM(UNetModel):
    """Denoising diffusion on 28x28 digits: U-Net noise predictor, EMA weights, ancestral or DDIM sampling."""

    likelihood_metric = None   # the bound needs T network passes per image; we report the denoising loss
    Config = DDPMConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config, generator)
        hp = self.hparams
        self.schedule = NoiseSchedule(hp.schedule, hp.T, hp.beta_start, hp.beta_end)

    # --- training ---------------------------------------------------------------------------------
    def train_step(self, x, y, optimizers, generator) -> dict[str, float]:
        """x: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64.

        Random draws, in this order (the PyTorch twin repeats them): t (N,), noise (N, 1, 28, 28),
        then for a conditional model the label-drop coin (N,).
        """
        x = check_images("ddpm.train_step", x)
        generator = resolve(generator)
        labels = check_labels("ddpm.train_step", y, len(x), self.num_classes) if self.conditional else None
        x0 = 2 * x - 1
        t = generator.integers(0, self.schedule.T, (len(x),))
        noise = generator.normal(x.shape)
        xt = self.schedule.q_sample(x0, t, noise)
        labels = self.drop_labels(labels, generator)
        opt = optimizers["model"]
        target = noise if self.hparams.prediction == "eps" else self.schedule.velocity(x0, noise, t)
        loss = ops.mse_loss(self.net(Tensor(xt), t, labels), Tensor(target))
        grad_norm = self.optimize_and_average(loss, opt)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    # --- sampling -------------------------------------------------------------------------------
    def predict_noise(self, xt: np.ndarray, t: int, labels: np.ndarray | None, guidance: float) -> np.ndarray:
        """eps_theta at one timestep for a batch (call under no_grad); guided when guidance != 1
        (eps is linear in the network output at a fixed x_t, so mixing outputs = mixing noises)."""
        out = self.guided_output(xt, np.full(len(xt), t), labels, guidance)
        return out if self.hparams.prediction == "eps" else self.schedule.eps_from_velocity(xt, out, t)

    def _x0_estimate(self, xt, eps, t):
        x0 = self.schedule.predict_x0(xt, eps, t)
        if self.hparams.clip_denoised:
            np.clip(x0, -1, 1, out=x0)
        return x0

    def ancestral_step(self, xt, eps, t: int, generator) -> np.ndarray:
        """x_{t-1} ~ N(posterior mean at the guessed x_0, beta_tilde_t): the DDPM reverse step."""
        mean, var = self.schedule.q_posterior(self._x0_estimate(xt, eps, t), xt, np.array([t]))
        if t == 0:
            return mean            # beta_tilde_0 = 0: the last step adds no noise
        return mean + np.sqrt(var) * generator.normal(xt.shape)

    def ddim_step(self, xt, eps, t: int, t_prev: int, eta: float, generator) -> np.ndarray:
        """Jump from step t to t_prev (-1: the clean image) along DDIM's update:
        x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev - sigma^2) eps + sigma z,
        sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev)."""
        ab = self.schedule.alpha_bar[t]
        ab_prev = self.schedule.alpha_bar[t_prev] if t_prev >= 0 else 1.0
        x0 = self._x0_estimate(xt, eps, t)
        if self.hparams.clip_denoised:
            # the noise consistent with the clipped x_0 (unchanged where nothing was clipped)
            eps = (xt - math.sqrt(ab) * x0) * np.float32(1 / math.sqrt(1 - ab))
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        out = np.float32(math.sqrt(ab_prev)) * x0 + np.float32(math.sqrt(max(1 - ab_prev - sigma ** 2, 0))) * eps
        if sigma > 0:
            out += np.float32(sigma) * generator.normal(xt.shape)
        return out

    def sample_trajectory(self, n: int, labels=None, generator=None, frames: int = 0, method=None, steps=None,
                          eta=None, guidance=None):
        """Run the reverse process from x_T ~ N(0, I) with the EMA weights.

        Returns (final images (n, 1, 28, 28) in [0, 1], snapshots (frames, n, 1, 28, 28) in [0, 1]
        taken evenly along the way, first = pure noise, last = final; empty if frames == 0).
        Options default to the config's sample_method / sample_steps / eta / guidance.
        """
        cfg = self.hparams
        method = cfg.sample_method if method is None else method
        steps = (cfg.sample_steps if method == "ddim" else None) if steps is None else steps
        eta = cfg.eta if eta is None else float(eta)
        guidance = self.check_sampling("ddpm.sample", n, guidance)
        labels = condition_labels("ddpm.sample", labels, n, self.conditional, self.num_classes)
        plan = self.schedule.sampling_plan(method, steps)
        generator = resolve(generator)
        keep = set(np.linspace(0, len(plan), frames).round().astype(int)) if frames else set()
        x = generator.normal((n, 1, 28, 28))
        snapshots = [x.copy()] if 0 in keep else []
        with no_grad(), self.ema_weights(), winograd.fixed_weights():
            for i, (t, t_prev) in enumerate(plan, start=1):
                eps = self.predict_noise(x, t, labels, guidance)
                if method == "ancestral":
                    x = self.ancestral_step(x, eps, t, generator)
                else:
                    x = self.ddim_step(x, eps, t, t_prev, eta, generator)
                if i in keep:
                    snapshots.append(x.copy())
        to_unit = lambda a: np.clip((a + 1) / 2, 0, 1).astype(np.float32)  # noqa: E731
        return to_unit(x), to_unit(np.array(snapshots, np.float32).reshape(-1, n, 1, 28, 28))

    def sample(self, n, labels=None, generator=None, method=None, steps=None, eta=None, guidance=None):
        """n images (n, 1, 28, 28) in [0, 1].

        method: "ancestral" (all T posterior steps) or "ddim"; steps: DDIM steps (e.g. 50);
        eta: DDIM noise (0 deterministic given x_T, 1 = ancestral-like); guidance: classifier-free
        guidance scale (conditional models; 1 = no guidance). Defaults come from the config.
        """
        return self.sample_trajectory(n, labels, generator, 0, method, steps, eta, guidance)[0]

    def generation_frames(self, generator=None, frames: int = 20, method=None, steps=None, guidance=None):
        """The reverse process of 10 samples side by side (the digits 0-9 when conditional), from
        pure noise to the samples: a minigen.animate.Frames of `frames` frames (at most one more than
        the sampler has steps)."""
        from minigen.animate import Frames
        labels = np.arange(10) if self.conditional else None
        _, snaps = self.sample_trajectory(10, labels, generator, frames, method=method, steps=steps,
                                          guidance=guidance)
        captions = [f"denoising: {round(100 * i / max(len(snaps) - 1, 1))}% of the steps" for i in range(len(snaps))]
        return Frames(snaps, captions, None if labels is None else list(labels), "DDPM: noise to digit")

    # --- evaluation, checkpoints, pictures --------------------------------------------------------
    def evaluate(self, x, y, generator=None) -> dict[str, float]:
        """The EMA network's denoising loss E_{t, eps} ||eps - eps_theta(x_t, t)||^2 on the first
        config.eval_examples test images (one random t and eps per image). Sample quality (FID,
        label accuracy; the literature uses 10k-50k samples) is measured by `minigen eval --fid`."""
        generator = resolve(generator)

        def noise_loss(x0, labels):
            t = generator.integers(0, self.schedule.T, (len(x0),))
            noise = generator.normal(x0.shape)
            xt = self.schedule.q_sample(x0, t, noise)
            out = self.net(Tensor(xt), t, labels).data
            if self.hparams.prediction == "v":    # the loss is reported on the noise either way
                out = self.schedule.eps_from_velocity(xt, out, t)
            return float(((out - noise) ** 2).mean())
        return {"loss": self.test_loss("ddpm.evaluate", x, y, noise_loss)[0]}

    def figures(self, out_dir, x, y, generator=None) -> list[str]:
        """ddpm_reverse.png: 8 samples, each a row from pure noise to the digit (10 frames);
        ddpm_forward.png: 4 real test images noised by q_sample at 10 evenly spaced t."""
        from minigen.plots import save_rows
        x = check_images("ddpm.figures", x)
        generator = resolve(generator)
        n, frames = 8, 10
        labels = np.arange(n) % self.num_classes if self.conditional else None
        _, snaps = self.sample_trajectory(n, labels, generator, frames)
        rows = {(f"digit {labels[i]}" if labels is not None else f"sample {i}"): snaps[:, i] for i in range(n)}
        reverse = save_rows(rows, os.path.join(out_dir, "ddpm_reverse.png"),
                            title="reverse process: noise -> digit (EMA weights)",
                            col_labels=["x_T (noise)"] + [""] * (len(snaps) - 2) + ["x_0 (sample)"])
        T = self.schedule.T
        ts = np.linspace(0, T - 1, frames).round().astype(np.int64)
        rows = {}
        for i in range(min(4, len(x))):
            noise = generator.normal((1, 1, 28, 28))
            xt = self.schedule.q_sample(np.repeat(2 * x[i:i + 1] - 1, frames, axis=0), ts,
                                        np.repeat(noise, frames, axis=0))
            rows[f"test image {i}"] = np.clip((xt + 1) / 2, 0, 1)
        forward = save_rows(rows, os.path.join(out_dir, "ddpm_forward.png"),
                            title=f"forward process q(x_t | x_0), {self.schedule.kind} schedule",
                            col_labels=[f"t={t + 1}" for t in ts])
        return [reverse, forward]
