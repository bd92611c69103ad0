"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): a continuous flow trained like a
diffusion model, sampled in a few steps.

The idea in five steps:

1. **The path.** Draw noise x0 ~ N(0, I) and an image x1, and put a point on the straight line
   between them: `interpolate`: x_t = (1 - t) x0 + t x1, t in [0, 1]. t = 0 is pure noise,
   t = 1 the image (the opposite direction from DDPM's t).
2. **The target.** Along that line the point moves at the constant velocity
   `velocity_target`: d x_t / dt = x1 - x0.
3. **Training** is plain regression: a network v(x_t, t, y) learns E[x1 - x0 | x_t], the average
   velocity of all the lines passing through x_t, by minimising ||v(x_t, t) - (x1 - x0)||^2
   (`flow_matching_loss`). No noise schedule, no invertible architecture.
4. **Sampling** integrates the ordinary differential equation dx/dt = v(x, t) from noise (t = 0)
   to an image (t = 1): `euler_step` (one network pass per step, error ~ 1/steps) or `heun_step`
   (two passes, error ~ 1/steps^2). Where the learned paths are nearly straight, a few steps land
   where a thousand would.
5. **Likelihood.** The ODE is a continuous normalizing flow, so the exact change of variables of
   the RealNVP chapter becomes the instantaneous one: d log p(x_t) / dt = -div v(x_t, t).
   `log_likelihood` integrates it backwards from an image to its noise, with the divergence
   estimated by Hutchinson: div v = E_e[e^T (dv/dx) e] for random signs e, one backward pass each.

**Reflow** (rectified flow's second stage, optional): the trained model's own (noise, sample) pairs
replace the random couplings, and training continues on them. Lines between coupled pairs cross
less, so the learned paths get straighter and fewer steps suffice.

**One network, two objectives.** This family reuses DDPM's U-Net, EMA and classifier-free guidance
(minigen/models/ddpm.py); only what the network is asked to output, and so how a sampler uses it,
differ:

    DDPM, v-prediction                               flow matching
    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps        x_t = (1 - t) x0 + t x1        (x0: noise, x1: image)
    target v = sqrt(ab_t) eps - sqrt(1 - ab_t) x_0   target v = x1 - x0
    a point on a quarter circle (sqrt(ab)^2 +        a point on a straight line, moving at a constant
    (1 - ab) = 1), v its velocity in the angle       velocity: the target IS dx/dt
    sampling: convert v to eps, then to a guess      sampling: x += dt * v, nothing to convert; an
    of x_0, and take a DDIM step along the           Euler step of size 1 from pure noise is already
    schedule; 20-50 steps                            the network's guess of the image; 2-10 steps

Class conditioning uses classifier-free guidance as in DDPM: the label is dropped with probability
p_uncond in training, and sampling mixes v_u + guidance * (v_c - v_u). Images are scaled to [-1, 1]
for the model and back to [0, 1] for the caller.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import knob
from minigen.errors import ConfigError, MinigenError, ShapeError
from minigen.kernels import winograd
from minigen.models.base import check_images, check_labels, condition_labels, register_family
from minigen.models.ddpm import UNetConfig, UNetModel
from minigen.models.flow import RealNVP, bits_per_dim
from minigen.random import resolve
from minigen.nn import frozen
from minigen.tensor import Tensor, no_grad

__all__ = ["interpolate", "velocity_target", "flow_matching_loss", "euler_step", "heun_step", "integrate",
           "log_likelihood", "FlowMatching", "FlowMatchConfig", "SAMPLERS"]

SAMPLERS = ("euler", "heun")
# the U-Net's time embedding was made for DDPM's step indices 0..999: t in [0, 1] is shown to it as 1000 t,
# so its sinusoids span the same range of frequencies
TIME_SCALE = 1000.0


# --- the hyper-parameters (`minigen train flowmatch --help` lists them; --set KEY=VALUE changes one) ----------
@dataclass(frozen=True)
class FlowMatchConfig(UNetConfig):
    # sampling defaults (each can be overridden by a keyword of sample())
    sample_method: str = knob("heun", doc="the ODE solver: euler (1 pass a step) or heun (2 passes)",
                              choices=SAMPLERS)
    sample_steps: int = knob(10, 1, 10_000, "ODE steps from noise to image")
    # the likelihood, by the instantaneous change of variables, in evaluate()
    likelihood_examples: int = knob(100, 0, None, "test images whose bits/dim evaluate() computes (0: none)")
    # 20 steps read low on a trained field: a 10-minute tour model's bits/dim on 50 test digits was 1.45
    # at 20 steps, 2.18 at 50 and 2.48 at 200 (92 s on one core), so treat it as a rough, optimistic figure
    likelihood_steps: int = knob(20, 1, 10_000, "Heun steps of the likelihood ODE (few steps read optimistic)")
    # reflow: after reflow_after steps, train on the model's own (noise, sample) pairs
    reflow_pairs: int = knob(0, 0, 1_000_000, "(noise, sample) pairs made for reflow (0: no reflow)")
    reflow_after: int = knob(1000, 1, None, "training steps before the reflow pairs are made")
    reflow_steps: int = knob(20, 1, 10_000, "Heun steps that make each reflow pair")

    def check(self) -> None:
        super().check()
        if self.reflow_pairs and self.reflow_pairs < self.batch_size:
            raise ConfigError(f"reflow_pairs={self.reflow_pairs} is fewer than batch_size={self.batch_size}; "
                              f"need 0 (no reflow) or at least one batch")


# --- 1-3. the path, the target, the loss ----------------------------------------------------------------
def interpolate(x0: np.ndarray, x1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """x_t = (1 - t) x0 + t x1: noise at t = 0, the image at t = 1.

    x0, x1: (N, ...) float32 of one shape; t: (N,) in [0, 1] -> (N, ...) float32."""
    x0, x1, t = np.asarray(x0), np.asarray(x1), np.asarray(t)
    if x0.shape != x1.shape or t.shape != (x0.shape[0],):
        raise ShapeError(f"interpolate: expected x0 and x1 of one shape (N, ...) and t (N,), got "
                         f"{x0.shape}, {x1.shape} and {t.shape}")
    t = t.astype(x0.dtype).reshape((-1,) + (1,) * (x0.ndim - 1))    # broadcast over each example's pixels
    # BEGIN SOLUTION flowmatch: the point at time t on the straight line from x0 to x1
    return (1 - t) * x0 + t * x1
    # END SOLUTION


def velocity_target(x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """d x_t / dt along the straight line: x1 - x0, the same at every t. (N, ...) -> (N, ...)."""
    # BEGIN SOLUTION flowmatch: the velocity of x_t = (1 - t) x0 + t x1
    return x1 - x0
    # END SOLUTION


def flow_matching_loss(predicted: Tensor, x0: np.ndarray, x1: np.ndarray) -> Tensor:
    """The mean squared error between the predicted velocity (N, ...) and x1 - x0: a scalar Tensor."""
    # BEGIN SOLUTION flowmatch: ops.mse_loss between the prediction and the velocity target (as a Tensor)
    return ops.mse_loss(predicted, Tensor(velocity_target(x0, x1)))
    # END SOLUTION


# --- 4. the samplers: ODE steps -----------------------------------------------------------------------
# velocity(x, t) -> dx/dt: x (N, ...) float array, t a float, the same for the whole batch

def euler_step(velocity, x: np.ndarray, t: float, dt: float) -> np.ndarray:
    """One explicit Euler step: follow the velocity at (x, t) for time dt. One velocity evaluation."""
    # BEGIN SOLUTION flowmatch: x after time dt, moving at velocity(x, t)
    return x + np.asarray(dt, x.dtype) * velocity(x, t)
    # END SOLUTION


def heun_step(velocity, x: np.ndarray, t: float, dt: float) -> np.ndarray:
    """One Heun step (the trapezoid rule): an Euler step predicts where x goes, the velocity there
    corrects it; the average of the two slopes is second-order accurate. Two velocity evaluations."""
    k1 = velocity(x, t)
    k2 = velocity(x + np.asarray(dt, x.dtype) * k1, t + dt)
    return x + np.asarray(dt / 2, x.dtype) * (k1 + k2)


def integrate(velocity, x: np.ndarray, steps: int, method: str = "euler", t0: float = 0.0, t1: float = 1.0,
              frames: int = 0) -> tuple[np.ndarray, list]:
    """Solve dx/dt = velocity(x, t) from t0 to t1 in `steps` equal steps of `method` ("euler" or "heun").

    Returns (x at t1, snapshots): `frames` copies of x taken evenly along the way (first: the start,
    last: the end; at most steps + 1), or [] when frames == 0."""
    if method not in SAMPLERS:
        raise MinigenError(f"flowmatch: method must be one of {', '.join(SAMPLERS)}, got {method!r}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise MinigenError(f"flowmatch: steps must be a positive integer, got {steps!r}")
    step = euler_step if method == "euler" else heun_step
    dt = (t1 - t0) / steps
    keep = set(np.linspace(0, steps, frames).round().astype(int)) if frames else set()
    snapshots = [x.copy()] if 0 in keep else []
    for i in range(steps):
        x = step(velocity, x, t0 + i * dt, dt)
        if i + 1 in keep:
            snapshots.append(x.copy())
    return x, snapshots


# --- 5. the likelihood: the instantaneous change of variables ------------------------------------------
def log_likelihood(velocity_and_divergence, x1: np.ndarray, steps: int, method: str = "heun") -> np.ndarray:
    """log p(x1) in nats per example under the flow that carries N(0, I) at t = 0 along dx/dt = v to t = 1.

    velocity_and_divergence(x, t) -> (v (N, ...), div (N,)): the velocity and (an estimate of) its
    divergence, the trace of dv/dx. Along a path, d log p(x_t) / dt = -div v(x_t, t), so
    log p1(x1) = log N(x0; 0, I) - integral_0^1 div v dt, where x0 is x1 carried back to t = 0. The
    integral rides along as one more coordinate of the state, integrated by the same ODE steps.
    x1: (N, ...) -> (N,) float64."""
    n = len(x1)
    shape = x1.shape

    def augmented(state, t):
        v, div = velocity_and_divergence(state[:, :-1].reshape(shape).astype(x1.dtype), t)
        return np.concatenate([v.reshape(n, -1), np.asarray(div, np.float64).reshape(n, 1)], axis=1)

    start = np.concatenate([x1.reshape(n, -1).astype(np.float64), np.zeros((n, 1))], axis=1)
    end, _ = integrate(augmented, start, steps, method, t0=1.0, t1=0.0)
    x0, div_integral = end[:, :-1], -end[:, -1]          # integrated from 1 to 0: the sign flips
    log_noise = -0.5 * (x0 ** 2).sum(axis=1) - 0.5 * x0.shape[1] * math.log(2 * math.pi)
    return log_noise - div_integral


# --- the model: training, sampling, evaluation, pictures ----------------------------------------------
@register_family("flowmatch")
class FlowMatching(UNetModel):
    """Flow matching on 28x28 digits: DDPM's U-Net as the velocity field, EMA weights, Euler or Heun
    sampling, classifier-free guidance, optional reflow, bits/dim by the instantaneous change of variables."""

    likelihood_metric = "bits_per_dim"
    Config = FlowMatchConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config, generator)
        # reflow's couplings once made: (noise (P, 1, 28, 28), sample (P, 1, 28, 28) in [-1, 1], labels (P,)
        # or None); None before
        self.reflow_pairs = None

    def velocity(self, x: np.ndarray, t: float, labels: np.ndarray | None, guidance: float = 1.0) -> np.ndarray:
        """The (guided) velocity v(x, t, y) for a batch x (N, 1, 28, 28) at one time t in [0, 1];
        call under no_grad."""
        return self.guided_output(x, np.full(len(x), TIME_SCALE * t), labels, guidance)

    # --- training ---------------------------------------------------------------------------------
    def train_step(self, x, y, optimizers, generator) -> dict[str, float]:
        """x: (N, 1, 28, 28) float32 in [0, 1]; y: (N,) int64.

        Random draws, in this order (the PyTorch twin repeats them): t (N,), noise (N, 1, 28, 28), then
        for a conditional model the label-drop coin (N,). After reflow starts, the batch and its noise
        are reflow pairs instead: their indices (N,) replace the noise draw.
        """
        x = check_images("flowmatch.train_step", x)
        generator = resolve(generator)
        labels = check_labels("flowmatch.train_step", y, len(x), self.num_classes) if self.conditional else None
        opt = optimizers["model"]
        hp = self.hparams
        if hp.reflow_pairs and self.reflow_pairs is None and opt.step_count >= hp.reflow_after:
            self.reflow_pairs = self.make_reflow_pairs(hp.reflow_pairs, generator)
        t = generator.uniform((len(x),))
        if self.reflow_pairs is None:
            x0, x1 = generator.normal(x.shape), 2 * x - 1
        else:
            pick = generator.integers(0, len(self.reflow_pairs[0]), (len(x),))
            x0, x1 = self.reflow_pairs[0][pick], self.reflow_pairs[1][pick]
            labels = None if labels is None else self.reflow_pairs[2][pick]
        labels = self.drop_labels(labels, generator)
        predicted = self.net(Tensor(interpolate(x0, x1, t)), TIME_SCALE * t, labels)
        loss = flow_matching_loss(predicted, x0, x1)
        grad_norm = self.optimize_and_average(loss, opt)
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def make_reflow_pairs(self, n: int, generator) -> tuple:
        """n couplings (noise, the EMA model's sample from it, its label): the data of reflow.
        Labels are the digits in turn; the samples use the config's guidance and reflow_steps Heun steps."""
        labels = np.arange(n) % self.num_classes if self.conditional else None
        noise = generator.normal((n, 1, 28, 28))
        images = np.empty_like(noise)
        batch = 256
        for start in range(0, n, batch):
            part = slice(start, start + batch)
            images[part] = self._solve(noise[part], None if labels is None else labels[part], "heun",
                                       self.hparams.reflow_steps, self.hparams.guidance)[0]
        return noise, images, labels

    # --- sampling -------------------------------------------------------------------------------
    def _solve(self, noise, labels, method, steps, guidance, frames=0):
        """integrate() the EMA model's guided velocity from noise (t = 0) to images in [-1, 1] (t = 1)."""
        with no_grad(), self.ema_weights(), winograd.fixed_weights():
            return integrate(lambda x, t: self.velocity(x, t, labels, guidance), noise, steps, method,
                             frames=frames)

    def sample_trajectory(self, n: int, labels=None, generator=None, frames: int = 0, method=None, steps=None,
                          guidance=None):
        """Integrate from x0 ~ N(0, I) to images with the EMA weights.

        Returns (final images (n, 1, 28, 28) in [0, 1], snapshots (frames, n, 1, 28, 28) in [0, 1]
        taken evenly along the way, first = pure noise, last = final; empty if frames == 0).
        Options default to the config's sample_method / sample_steps / guidance."""
        hp = self.hparams
        method = hp.sample_method if method is None else method
        steps = hp.sample_steps if steps is None else steps
        guidance = self.check_sampling("flowmatch.sample", n, self.default_guidance() if guidance is None else guidance)
        labels = condition_labels("flowmatch.sample", labels, n, self.conditional, self.num_classes)
        x, snapshots = self._solve(resolve(generator).normal((n, 1, 28, 28)), labels, method, steps, guidance,
                                   frames)
        to_unit = lambda a: np.clip((a + 1) / 2, 0, 1).astype(np.float32)  # noqa: E731
        return to_unit(x), to_unit(np.array(snapshots, np.float32).reshape(-1, n, 1, 28, 28))

    def sample(self, n, labels=None, generator=None, method=None, steps=None, guidance=None):
        """n images (n, 1, 28, 28) in [0, 1].

        method: "euler" or "heun"; steps: ODE steps (Heun costs two network passes each); guidance:
        classifier-free guidance scale (conditional models; 1 = no guidance). Defaults come from the config
        (guidance: `default_guidance`).
        """
        return self.sample_trajectory(n, labels, generator, 0, method, steps, guidance)[0]

    def default_guidance(self) -> float:
        """The config's guidance, or 1 after reflow: the reflow pairs were drawn with that guidance, so the
        reflowed model's plain conditional velocity already carries it (guiding again would apply it twice)."""
        return 1.0 if self.reflow_pairs is not None else self.hparams.guidance

    def network_passes(self, method=None, steps=None, guidance=None) -> int:
        """U-Net passes over the batch that sample() makes (a guided pass runs a doubled batch: two)."""
        hp = self.hparams
        steps = hp.sample_steps if steps is None else steps
        per_step = 2 if (hp.sample_method if method is None else method) == "heun" else 1
        guided = self.conditional and (self.default_guidance() if guidance is None else guidance) != 1
        return steps * per_step * (2 if guided else 1)

    def generation_frames(self, generator=None, frames: int = 11, method=None, steps=None, guidance=None):
        """The ODE from noise to 10 samples side by side (the digits 0-9 when conditional): a
        minigen.animate.Frames of `frames` frames (at most one more than the sampler has steps)."""
        from minigen.animate import Frames
        labels = np.arange(10) if self.conditional else None
        _, snaps = self.sample_trajectory(10, labels, generator, frames, method=method, steps=steps,
                                          guidance=guidance)
        captions = [f"t = {i / max(len(snaps) - 1, 1):.2f} along the flow" for i in range(len(snaps))]
        return Frames(snaps, captions, None if labels is None else list(labels), "Flow matching: noise to digit")

    # --- the likelihood ---------------------------------------------------------------------------
    def velocity_divergence(self, x: np.ndarray, t: float, labels, probes: np.ndarray):
        """The velocity at (x, t) and probes^T (dv/dx) probes per image: one forward and one backward pass
        of (v . probes) with respect to the input. With random signs as probes this is Hutchinson's
        unbiased estimate of div v; with the K basis vectors of the pixels, summed over them, it is exact.
        x, probes: (N, 1, 28, 28) -> (v (N, 1, 28, 28), (N,) float64). Uses the current weights."""
        with frozen(self.net):         # the gradient wanted is the input's
            inputs = Tensor(x, requires_grad=True)
            v = self.net(inputs, np.full(len(x), TIME_SCALE * t), labels)
            (v * Tensor(probes)).sum().backward()
        return v.data, (inputs.grad.astype(np.float64) * probes).reshape(len(x), -1).sum(axis=1)

    def log_prob(self, y: np.ndarray, labels, generator, steps: int, method: str = "heun") -> np.ndarray:
        """log p(y) in nats per image, y: (N, 1, 28, 28) in [-1, 1], by `log_likelihood` with one Rademacher
        probe per image (fixed along the path, as in FFJORD) for the divergence. Uses the current weights."""
        probes = np.where(generator.uniform(y.shape) < 0.5, -1.0, 1.0).astype(np.float32)
        return log_likelihood(lambda x, t: self.velocity_divergence(x, t, labels, probes), y, steps, method)

    # --- evaluation, checkpoints, pictures --------------------------------------------------------
    def evaluate(self, x, y, generator=None) -> dict[str, float]:
        """The EMA network's flow-matching loss on the first config['eval_examples'] test images (one random
        t and noise each) and, on the first config['likelihood_examples'], bits/dim (dequantized pixels, as
        the RealNVP chapter reports it) by the instantaneous change of variables. Sample quality (FID,
        label accuracy) is measured by `minigen eval --fid`."""
        hp = self.hparams
        generator = resolve(generator)

        def velocity_loss(x1, labels):
            t, x0 = generator.uniform((len(x1),)), generator.normal(x1.shape)
            out = self.net(Tensor(interpolate(x0, x1, t)), TIME_SCALE * t, labels)
            return float(((out.data - velocity_target(x0, x1)) ** 2).mean())
        loss, x, labels = self.test_loss("flowmatch.evaluate", x, y, velocity_loss)
        results = {"loss": loss}
        if hp.likelihood_examples:
            k = min(hp.likelihood_examples, len(x))
            dequantized = RealNVP.dequantize(x[:k], generator)      # (pixel + u) / 256 in (0, 1)
            with self.ema_weights():
                log_p = self.log_prob(2 * dequantized - 1, None if labels is None else labels[:k], generator,
                                      hp.likelihood_steps)
            num_dims = dequantized[0].size
            # y = 2 v - 1: the density of v on (0, 1)^D is 2^D times the density of y
            bpd = float(bits_per_dim(log_p + num_dims * math.log(2), num_dims).mean())
            # No density reaches below 0 bits/dim on dequantized pixels (the mass it gives a pixel's bin is at
            # most 1). A sharp field, late in training, makes a few ODE steps overshoot below it: that is an
            # integration error, not a likelihood, and is not reported as one.
            if bpd >= 0:
                results["bits_per_dim"] = bpd
            else:
                warnings.warn(f"flowmatch.evaluate: the {hp.likelihood_steps}-step ODE estimate of bits/dim is "
                              f"{bpd:.2f}, below the 0 that any density is bounded by: the steps are too coarse "
                              f"for this velocity field, so no bits/dim is reported (raise likelihood_steps)")
        return results

    def extra_state(self) -> dict:
        state = super().extra_state()
        if self.reflow_pairs is not None:
            noise, images, labels = self.reflow_pairs
            state["reflow"] = {"noise": noise, "images": images, "labels": labels}
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        reflow = state.get("reflow")
        self.reflow_pairs = None if reflow is None else (reflow["noise"], reflow["images"], reflow["labels"])

    def figures(self, out_dir, x, y, generator=None) -> list[str]:
        """flowmatch_paths.png: 8 samples, each a row from noise (t = 0) to the digit (t = 1), with the
        config's sampler; flowmatch_interpolation.png: 4 test images on the straight line from noise."""
        from minigen.plots import save_rows
        x = check_images("flowmatch.figures", x)
        generator = resolve(generator)
        n, frames = 8, min(10, self.hparams.sample_steps + 1)
        labels = np.arange(n) % self.num_classes if self.conditional else None
        _, snaps = self.sample_trajectory(n, labels, generator, frames)
        rows = {(f"digit {labels[i]}" if labels is not None else f"sample {i}"): snaps[:, i] for i in range(n)}
        paths = save_rows(rows, os.path.join(out_dir, "flowmatch_paths.png"),
                          title=f"the ODE from noise to digit: {self.hparams.sample_steps} "
                                f"{self.hparams.sample_method} steps (EMA weights)",
                          col_labels=["t=0 (noise)"] + [""] * (len(snaps) - 2) + ["t=1 (sample)"])
        ts = np.linspace(0, 1, 10)
        rows = {}
        for i in range(min(4, len(x))):
            noise = np.repeat(generator.normal((1, 1, 28, 28)), len(ts), axis=0)
            xt = interpolate(noise, np.repeat(2 * x[i:i + 1] - 1, len(ts), axis=0), ts)
            rows[f"test image {i}"] = np.clip((xt + 1) / 2, 0, 1)
        line = save_rows(rows, os.path.join(out_dir, "flowmatch_interpolation.png"),
                         title="training points: x_t = (1 - t) noise + t image",
                         col_labels=[f"t={t:.2f}" for t in ts])
        return [paths, line]
