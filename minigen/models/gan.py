"""DCGAN: a generator and a discriminator trained against each other (Goodfellow et al. 2014;
Radford et al. 2016 for the convolutional recipe).

The idea:

* The **generator** G maps noise z ~ N(0, I) (100 numbers) to an image. It never sees a real
  image; it learns only through the discriminator's opinion of its output.
* The **discriminator** D maps an image to one logit: "how real does this look?".
* They take turns. D's step lowers the binary cross-entropy of telling real (label 1) from
  fake (label 0). G's step uses the **non-saturating** loss -log D(G(z)): G is pushed to make D
  say "real". (The original minimax loss log(1 - D(G(z))) has vanishing gradients early on,
  when D easily rejects every fake.)
* At the game's equilibrium D cannot tell the two apart: D outputs 1/2 everywhere and its loss is
  log 4 = 1.386. In practice we watch both losses and D's accuracy on real and on fake images.
* Failure mode to watch: **mode collapse**, where G produces only a few kinds of digit (or, asked
  for a 3, the same 3 every time). We check for it with the yardstick digit classifier from
  `minigen.metrics` (when it is available): a conditional G's samples of each digit must cover the
  real ones (per-digit coverage against real training digits), an unconditional G's must show enough
  different digits.

The DCGAN recipe: strided (transposed) convolutions instead of pooling, BatchNorm in both
networks (not on D's input nor G's output), ReLU in G with tanh output, LeakyReLU(0.2) in D,
weights initialised N(0, 0.02), Adam with lr 2e-4 and beta1 = 0.5.

Class-conditional variant: a label embedding enters both networks (concatenated to z in G; as an
extra 28x28 input channel in D), so G can be asked for a given digit.

Images are scaled to [-1, 1] (tanh's range) for the networks and back to [0, 1] for the caller.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import numpy as np

from minigen import ops
from minigen.config import HyperParameters, batch_size_knob, conditional_knob, excluded, knob, lr_knob
from minigen.errors import CheckpointError, MinigenError
from minigen.models.base import (GenerativeModel, check_images, check_labels, check_temperature, condition_labels,
                                 register_family)
from minigen.nn import BatchNorm, Conv2d, ConvTranspose2d, Embedding, Linear, Module, frozen, init
from minigen.optim import EMA, Adam, ema_decay_at
from minigen.random import Generator, resolve
from minigen.tensor import Tensor, no_grad

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_init", "GAN", "GANConfig"]


# --- the hyper-parameters (`minigen train gan --help` lists them; --set KEY=VALUE changes one) --------------
@dataclass(frozen=True)
class GANConfig(HyperParameters):
    lr: float = lr_knob(2e-4)
    beta1: float = knob(0.5, 0.0, excluded(1.0), "Adam's first-moment decay (DCGAN: 0.5)")
    beta2: float = knob(0.999, 0.0, excluded(1.0), "Adam's second-moment decay")
    batch_size: int = batch_size_knob(128)
    conditional: bool = conditional_knob(doc="generator and discriminator both see the label")
    num_classes: int = knob(10, 10, 1000, "label classes of a conditional model (digits: 10)")
    latent_dim: int = knob(100, 1, 4096, "size of the noise z the generator starts from")
    label_dim: int = knob(50, 1, 1024, "conditional generator: size of the label embedding")
    width: int = knob(64, 1, 1024, "channels: G's 2*width then width, D's width then 2*width (DCGAN: 64)")
    # the stabilisers of later GANs, each off by default (docs/recipes.md measures them on a short budget)
    loss: str = knob("bce", doc="the game's loss: non-saturating BCE or hinge (SN-GAN)", choices=("bce", "hinge"))
    lr_d: float = knob(0.0, 0.0, 10.0, "D's Adam step size (0: lr; TTUR runs D faster than G)")
    spectral_norm: bool = knob(False, doc="divide D's weights by their largest singular value (SN-GAN)")
    d_batchnorm: bool = knob(True, doc="BatchNorm after D's second convolution (SN-GAN drops it)")
    ema_decay: float = knob(0.0, 0.0, excluded(1.0), "EMA of G's weights for sampling, with warm-up (0: none)")
    # mode-collapse check: every this many steps, draw `collapse_samples` samples of fixed noise; warn if a
    # digit's coverage of as many real training digits is below `collapse_min_coverage` (conditional), or if
    # fewer than `collapse_min_digits` different digits appear (unconditional). 500: 50 per digit, since
    # with 10 a single repeated sample already sits inside half the real digits' 5-NN balls. 0.25: at 50 per
    # digit real digits score 0.87-1.0, one real digit repeated 0.04-0.16
    collapse_check_every: int = knob(500, 0, None, "steps between mode-collapse checks (0: never)")
    collapse_samples: int = knob(500, 1, 10_000, "samples the mode-collapse check classifies")
    collapse_min_digits: int = knob(5, 0, 10, "fewer different digits than this: warn of mode collapse")
    collapse_min_coverage: float = knob(0.25, 0.0, 1.0, "a digit's coverage below this: warn of mode collapse")
    eval_examples: int = knob(1000, 1, None, "real test images (and as many fakes) for evaluate()")
    # the training animation: G's images of 10 fixed noise vectors every `snapshot_every` steps; at most
    # `snapshot_frames` kept (then every other one goes and the interval doubles), so a checkpoint stays small
    snapshot_every: int = knob(50, 0, None, "steps between the training animation's snapshots (0: never)")
    snapshot_frames: int = knob(24, 2, 1000, "snapshots kept for the training animation")

    def memory_floats(self) -> tuple[int, int]:
        label = self.label_dim if self.conditional else 0
        w, wide = self.width, 2 * self.width * 49        # wide: the 7x7 maps of 2*width channels
        generator = (self.latent_dim + label) * wide + 16 * 2 * w * w + 16 * w
        discriminator = 16 * 2 * w + 16 * w * 2 * w + wide + (784 * self.num_classes if self.conditional else 0)
        # the generator's activations, then the discriminator's on real and fake images
        generator_maps = self.latent_dim + label + 3 * wide + 3 * w * 196 + 2 * 784
        discriminator_maps = 784 + 3 * w * 196 + 3 * wide
        activations = 2 * generator_maps + 2 * 2 * discriminator_maps
        return generator + discriminator, activations


# --- the two networks --------------------------------------------------------------------------
class DCGANGenerator(Module):
    """z: (N, latent_dim) [+ labels (N,)] -> images (N, 1, 28, 28) in [-1, 1].

    Linear -> (2*width)x7x7 -> BatchNorm, ReLU -> ConvTranspose 2*width->width (14x14) -> BatchNorm, ReLU
    -> ConvTranspose width->1 (28x28) -> tanh. (DCGAN's width: 64.)
    """

    def __init__(self, latent_dim: int = 100, num_classes: int | None = None, label_dim: int = 50, generator=None,
                 width: int = 64):
        self.label_embed = Embedding(num_classes, label_dim, generator=generator) if num_classes else None
        in_features = latent_dim + (label_dim if num_classes else 0)
        self.width = width
        # no biases before BatchNorm: its shift makes them redundant
        self.fc = Linear(in_features, 2 * width * 7 * 7, bias=False, generator=generator)
        self.bn0 = BatchNorm(2 * width)
        self.deconv1 = ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False, generator=generator)
        self.bn1 = BatchNorm(width)
        self.deconv2 = ConvTranspose2d(width, 1, 4, stride=2, padding=1, generator=generator)

    def forward(self, z: Tensor, labels: np.ndarray | None = None) -> Tensor:
        if self.label_embed is not None:
            z = ops.concat([z, self.label_embed(labels)], axis=1)
        h = self.fc(z).reshape(z.shape[0], 2 * self.width, 7, 7)
        h = ops.relu(self.bn0(h))
        h = ops.relu(self.bn1(self.deconv1(h)))
        return ops.tanh(self.deconv2(h))


class DCGANDiscriminator(Module):
    """images (N, 1, 28, 28) in [-1, 1] [+ labels (N,)] -> logits (N,) ("real" when > 0).

    Conv 1->width (14x14) -> LeakyReLU(0.2) -> Conv width->2*width (7x7) -> BatchNorm, LeakyReLU
    -> Linear 2*width*7*7 -> 1. (DCGAN's width: 64.)
    spectral_norm: every conv and linear weight divided by its largest singular value (D is then
    1-Lipschitz per layer). batchnorm=False: no BatchNorm (conv2 gets a bias instead).
    """

    def __init__(self, num_classes: int | None = None, generator=None, spectral_norm: bool = False,
                 batchnorm: bool = True, width: int = 64):
        # the label as a learned 28x28 picture, stacked on the image as a second channel
        self.label_embed = Embedding(num_classes, 28 * 28, generator=generator) if num_classes else None
        self.conv1 = Conv2d(2 if num_classes else 1, width, 4, stride=2, padding=1, generator=generator,
                            spectral_norm=spectral_norm)
        self.conv2 = Conv2d(width, 2 * width, 4, stride=2, padding=1, bias=not batchnorm, generator=generator,
                            spectral_norm=spectral_norm)
        self.bn2 = BatchNorm(2 * width) if batchnorm else None
        self.fc = Linear(2 * width * 7 * 7, 1, generator=generator, spectral_norm=spectral_norm)

    def forward(self, x: Tensor, labels: np.ndarray | None = None) -> Tensor:
        if self.label_embed is not None:
            x = ops.concat([x, self.label_embed(labels).reshape(x.shape[0], 1, 28, 28)], axis=1)
        h = ops.leaky_relu(self.conv1(x), 0.2)
        h = self.conv2(h)
        h = ops.leaky_relu(h if self.bn2 is None else self.bn2(h), 0.2)
        return self.fc(ops.flatten(h)).reshape(-1)


def dcgan_init(module: Module, generator=None) -> None:
    """DCGAN's initialisation: conv / linear weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0.
    (Label embeddings keep their N(0, 1) start.) Draws in module order from `generator`."""
    generator = resolve(generator)
    for m in module.modules():
        if isinstance(m, (Conv2d, ConvTranspose2d, Linear)):
            m.weight.data = init.normal(m.weight.shape, 0.02, generator)
            if m.bias is not None:
                m.bias.data = np.zeros_like(m.bias.data)
        elif isinstance(m, BatchNorm):
            m.weight.data = generator.normal(m.weight.shape, mean=1.0, std=0.02)
            m.bias.data = np.zeros_like(m.bias.data)


# --- the model: the two-player training step, sampling, evaluation --------------------------------
@contextlib.contextmanager
def _eval_mode(module: Module):
    """BatchNorm on running statistics, and no running-statistic updates, inside the block."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def distinct_digits(images: np.ndarray) -> int | None:
    """How many different digits the yardstick classifier sees in images (N, 1, 28, 28) in [0, 1];
    None when there is no trained yardstick (`minigen.metrics` missing, or its classifier not yet
    trained: we never start a minute-long training from inside a GAN step)."""
    try:
        from minigen.metrics import yardstick
        classifier = yardstick(train_if_missing=False)
    except (ImportError, MinigenError):
        return None
    return len(np.unique(classifier.predict(images)))


def digit_coverage(images, labels, reference, reference_labels) -> dict[int, float] | None:
    """{digit: coverage} of images (N, 1, 28, 28) asked for labels (N,) against real digits reference
    (R, 1, 28, 28) with reference_labels (R,) (`minigen.metrics.fidelity_diversity_by_class` on the
    yardstick's features); None without a trained yardstick or with too few (k + 1) of some digit."""
    try:
        from minigen.metrics import fidelity_diversity_by_class, yardstick
        classifier = yardstick(train_if_missing=False)
        by_digit = fidelity_diversity_by_class(classifier.features(reference), reference_labels,
                                               classifier.features(images), labels)
    except (ImportError, MinigenError):
        return None
    return {digit: metrics["coverage"] for digit, metrics in by_digit.items()}


@register_family("gan")
class GAN(GenerativeModel):
    """DCGAN on 28x28 digits (optionally class-conditional), non-saturating loss; config knobs add the
    hinge loss, spectral normalization of D, D's own lr (TTUR) and an EMA of G for sampling."""

    likelihood_metric = None   # a GAN has no likelihood
    Config = GANConfig

    def __init__(self, config: dict | None = None, generator=None):
        super().__init__(config)
        config = self.hparams
        self.num_classes = config.num_classes
        self.latent_dim = config.latent_dim
        classes = self.num_classes if self.conditional else None
        self.G = DCGANGenerator(self.latent_dim, classes, config.label_dim, generator, config.width)
        self.D = DCGANDiscriminator(classes, generator, config.spectral_norm, config.d_batchnorm, config.width)
        dcgan_init(self.G, generator)
        dcgan_init(self.D, generator)
        # the average of G's weights that samples (None: G's own); BatchNorm's running statistics are
        # averaged too, so the averaged weights never meet statistics of other weights alone
        self.ema = EMA(self.G, config.ema_decay, buffers=True) if config.ema_decay else None
        self.snapshots = np.zeros((0, 10, 1, 28, 28), np.float32)   # (S, 10, 1, 28, 28) fixed-noise images
        self.snapshot_steps = np.zeros(0, np.int64)
        self.snapshot_every = config.snapshot_every
        # real training digits for the collapse check, up to collapse_samples / num_classes of each
        self.reference_images = np.zeros((0, 1, 28, 28), np.float32)
        self.reference_labels = np.zeros(0, np.int64)

    def make_optimizers(self):
        betas = (self.hparams.beta1, self.hparams.beta2)
        return {"generator": Adam(self.G.parameters(), lr=self.hparams.lr, betas=betas),
                "discriminator": Adam(self.D.parameters(), lr=self.hparams.lr_d or self.hparams.lr, betas=betas)}

    def discriminator_step(self, real: Tensor, fake: Tensor, labels, optimizer) -> dict[str, float]:
        """One step of D on a real and a (detached) fake batch, both (N, 1, 28, 28) in [-1, 1].

        loss = BCE(D(real), 1) + BCE(D(fake), 0), or with config loss "hinge" mean(relu(1 - D(real)))
        + mean(relu(1 + D(fake))); the accuracies are D's before the step."""
        logits_real = self.D(real, labels)
        logits_fake = self.D(fake, labels)
        if self.hparams.loss == "hinge":
            # D stops pushing an image once its score is past the margin (+1 real, -1 fake): its effort
            # goes to the images it still gets wrong, not to ever more confident logits
            loss = ops.relu(1 - logits_real).mean() + ops.relu(1 + logits_fake).mean()
        else:
            # BEGIN SOLUTION gan: D's loss: binary cross-entropy of its logits, reals against 1 and fakes against 0
            loss = (ops.binary_cross_entropy_with_logits(logits_real, np.ones(len(real), np.float32))
                    + ops.binary_cross_entropy_with_logits(logits_fake, np.zeros(len(fake), np.float32)))
            # END SOLUTION
        self.optimize(loss, optimizer)
        return {"d_loss": loss.item(), "d_real_acc": float((logits_real.data > 0).mean()),
                "d_fake_acc": float((logits_fake.data < 0).mean())}

    def generator_step(self, fake: Tensor, labels, optimizer) -> float:
        """One step of G through D's opinion of G's output `fake` (still attached to G's graph):
        the non-saturating loss BCE(D(G(z)), 1) = -log D(G(z)), or with config loss "hinge" -mean(D(G(z))).
        Then the EMA of G's weights (if any) takes the new weights in."""
        with frozen(self.D):     # D is only a fixed judge during G's step
            if self.hparams.loss == "hinge":
                loss = -self.D(fake, labels).mean()
            else:
                # BEGIN SOLUTION gan: the non-saturating loss: D's logits on the fakes against the label "real"
                loss = ops.binary_cross_entropy_with_logits(self.D(fake, labels), np.ones(len(fake), np.float32))
                # END SOLUTION
            self.optimize(loss, optimizer)     # the backward pass, too, runs with D frozen
        if self.ema is not None:
            # the warm-up DDPM uses: a short run averages trained weights, not the random initial ones
            self.ema.decay = ema_decay_at(optimizer.step_count, self.hparams.ema_decay)
            self.ema.update(self.G)
        return loss.item()

    def train_step(self, x, y, optimizers, generator) -> dict[str, float]:
        """One D step then one G step on the batch x: (N, 1, 28, 28) float32 in [0, 1], y: (N,) int64.

        Draws z (N, latent_dim) from `generator` (the only random draw; a conditional G is asked
        for the batch's own labels). Returns "loss" (= D's loss, log 4 = 1.386 at equilibrium),
        d_loss, g_loss, d_real_acc, d_fake_acc."""
        x = check_images("gan.train_step", x)
        labels = check_labels("gan.train_step", y, len(x), self.num_classes) if self.conditional else None
        z = resolve(generator).normal((len(x), self.latent_dim))
        fake = self.G(Tensor(z), labels)
        stats = self.discriminator_step(Tensor(2 * x - 1), fake.detach(), labels, optimizers["discriminator"])
        g_loss = self.generator_step(fake, labels, optimizers["generator"])
        every = self.hparams.collapse_check_every
        if every and self.conditional:
            self.keep_reference(x, labels)
        if every and optimizers["generator"].step_count % every == 0:
            self.warn_if_collapsed(optimizers["generator"].step_count)
        if self.snapshot_every and optimizers["generator"].step_count % self.snapshot_every == 0:
            self.take_snapshot(optimizers["generator"].step_count)
        return {"loss": stats["d_loss"], "g_loss": g_loss, **stats}

    def keep_reference(self, x: np.ndarray, labels: np.ndarray) -> None:
        """Keep real digits of the batch x (N, 1, 28, 28) with labels (N,) until the collapse check has
        collapse_samples / num_classes of each (the first batches fill it; not checkpointed: after a
        resume the next batches fill it again). The training digits are the reference because they are
        the distribution G is trained to cover."""
        per_digit = self.hparams.collapse_samples // self.num_classes
        if len(self.reference_labels) == per_digit * self.num_classes:
            return
        counts = np.bincount(self.reference_labels, minlength=self.num_classes)
        keep = []
        for i, label in enumerate(labels):
            if counts[label] < per_digit:
                keep.append(i)
                counts[label] += 1
        self.reference_images = np.concatenate([self.reference_images, x[keep]])
        self.reference_labels = np.concatenate([self.reference_labels, labels[keep]])

    def warn_if_collapsed(self, step: int) -> dict[int, float] | int | None:
        """Draw samples of a fixed noise batch and warn of mode collapse. A conditional G (once
        keep_reference holds enough real digits): when the samples of some digit cover less than
        config.collapse_min_coverage of its real ones; returns {digit: coverage}. Otherwise: when they
        show fewer than config.collapse_min_digits different digits; returns the count (None: no classifier)."""
        n = self.hparams.collapse_samples
        # a fixed probe (its own seed): the check never disturbs the training's random stream
        probe = Generator(0)
        labels = np.arange(n) % self.num_classes if self.conditional else None
        samples = self.sample(n, labels, probe)
        coverage = (digit_coverage(samples, labels, self.reference_images, self.reference_labels)
                    if self.conditional else None)
        if coverage is not None:
            low = {digit: c for digit, c in coverage.items() if c < self.hparams.collapse_min_coverage}
            if low:
                warnings.warn(f"gan: possible mode collapse at step {step}: the samples asked for digit(s) "
                              f"{', '.join(map(str, low))} cover little of the real ones (coverage "
                              f"{', '.join(f'{c:.2f}' for c in low.values())}, expected at least "
                              f"{self.hparams.collapse_min_coverage}): G draws only a few kinds of them. "
                              f"Try a lower lr or restart with another seed.", stacklevel=2)
            return coverage
        count = distinct_digits(samples)
        if count is not None and count < self.hparams.collapse_min_digits:
            warnings.warn(f"gan: possible mode collapse at step {step}: the yardstick classifier sees only "
                          f"{count} different digits in {n} samples (expected at least "
                          f"{self.hparams.collapse_min_digits}). Try a lower lr or restart with another seed.",
                          stacklevel=2)
        return count

    def take_snapshot(self, step: int) -> None:
        """Keep G's images of 10 fixed noise vectors (their own seed: training's random stream is
        untouched; the digits 0-9 when conditional) for the training animation. Cheap: 10 images."""
        z = Generator(1).normal((10, self.latent_dim))
        images = self.generate(z, np.arange(10) if self.conditional else None)
        self.snapshots = np.concatenate([self.snapshots, images[None]])
        self.snapshot_steps = np.append(self.snapshot_steps, step)
        if len(self.snapshots) > self.hparams.snapshot_frames:     # thin out evenly: every other one
            self.snapshots, self.snapshot_steps = self.snapshots[1::2], self.snapshot_steps[1::2]
            self.snapshot_every *= 2

    def generation_frames(self, generator=None):
        """G's images of the same 10 noise vectors across training (kept by take_snapshot): a
        minigen.animate.Frames. `generator` is unused: the frames were drawn during training."""
        from minigen.animate import Frames
        if len(self.snapshots) == 0:
            raise MinigenError("gan: this run kept no fixed-noise snapshots (it trained fewer than "
                               f"snapshot_every={self.hparams.snapshot_every} steps, or snapshot_every is 0)")
        return Frames(self.snapshots, [f"after {s} generator steps" for s in self.snapshot_steps],
                      list(range(10)) if self.conditional else None, "GAN: the same noise across training")

    def extra_state(self) -> dict:
        state = {"snapshots": self.snapshots, "snapshot_steps": self.snapshot_steps,
                 "snapshot_every": self.snapshot_every}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_extra_state(self, state: dict) -> None:
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"gan: the config has ema_decay={self.hparams.ema_decay} but the "
                                      "checkpoint holds no EMA of the generator's weights")
            self.ema.load_state_dict(state["ema"])
        if "snapshots" in state:                  # checkpoints from before the animation have none
            self.snapshots = np.asarray(state["snapshots"], np.float32)
            self.snapshot_steps = np.asarray(state["snapshot_steps"], np.int64)
            self.snapshot_every = int(state["snapshot_every"])

    def sample(self, n, labels=None, generator=None, temperature: float = 1.0, **unknown):
        """n images (n, 1, 28, 28) in [0, 1] from z ~ N(0, temperature^2 I) (temperature < 1 trades
        variety for typicality). labels: (n,) ints for a conditional model. G runs in eval mode
        (BatchNorm on its running statistics)."""
        if unknown:
            raise MinigenError(f"gan.sample: unknown options {sorted(unknown)}; the GAN takes only 'temperature'")
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise MinigenError(f"gan: number of samples must be a positive integer, got {n!r}")
        temperature = check_temperature("gan.sample", temperature, scales_noise=True)
        labels = condition_labels("gan.sample", labels, n, self.conditional, self.num_classes)
        return self.generate(resolve(generator).normal((n, self.latent_dim), std=float(temperature)), labels)

    def generate(self, z: np.ndarray, labels=None) -> np.ndarray:
        """G(z) as images (N, 1, 28, 28) in [0, 1], without a graph and with BatchNorm in eval mode;
        G's EMA weights (and their running statistics) when config ema_decay > 0.
        z: (N, latent_dim) float32."""
        averaged = self.ema.applied_to(self.G) if self.ema is not None else contextlib.nullcontext()
        with no_grad(), _eval_mode(self.G), averaged:
            images = self.G(Tensor(z), labels).data
        return np.clip((images + 1) / 2, 0, 1).astype(np.float32)

    def evaluate(self, x, y, generator=None) -> dict[str, float]:
        """D's view of the first config.eval_examples test images and as many fresh samples (eval
        mode): d_loss, d_real_acc, d_fake_acc; plus distinct_digits among 100 samples when the
        yardstick classifier exists. FID and label accuracy (the literature uses 10k-50k samples)
        come from `minigen eval --fid`."""
        x = check_images("gan.evaluate", x)[: self.hparams.eval_examples]
        labels = (check_labels("gan.evaluate", np.asarray(y)[: len(x)], len(x), self.num_classes)
                  if self.conditional else None)
        fake = 2 * self.sample(len(x), labels, generator) - 1
        with no_grad(), _eval_mode(self.D):
            logits_real = self.D(Tensor(2 * x - 1), labels)
            logits_fake = self.D(Tensor(fake), labels)
            d_loss = (ops.binary_cross_entropy_with_logits(logits_real, np.ones(len(x), np.float32))
                      + ops.binary_cross_entropy_with_logits(logits_fake, np.zeros(len(x), np.float32))).item()
        metrics = {"d_loss": d_loss, "d_real_acc": float((logits_real.data > 0).mean()),
                   "d_fake_acc": float((logits_fake.data < 0).mean())}
        n = self.hparams.collapse_samples
        count = distinct_digits(self.sample(n, np.arange(n) % self.num_classes if self.conditional else None,
                                            generator))
        if count is not None:
            metrics["distinct_digits"] = float(count)
        return metrics

    def figures(self, out_dir, x, y, generator=None) -> list[str]:
        """gan_latent.png. Unconditional: 6 rows, each a straight walk in z between two random
        points (smooth changes = G learned a continuous map, not a lookup of training images).
        Conditional: 6 rows of one z each, columns the digits 0-9 (z carries the style, the label the digit)."""
        from minigen.plots import save_rows
        generator = resolve(generator)
        rows = {}
        for r in range(6):
            if self.conditional:
                z = np.repeat(generator.normal((1, self.latent_dim)), self.num_classes, axis=0)
                labels = np.arange(self.num_classes)
                title, cols = "one z per row, digit per column", list(range(self.num_classes))
            else:
                a, b = generator.normal((2, self.latent_dim))
                w = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
                z, labels = (1 - w) * a + w * b, None
                title, cols = "straight lines in z", None
            rows[f"z #{r}"] = self.generate(z, labels)
        return [save_rows(rows, os.path.join(out_dir, "gan_latent.png"), title=title, col_labels=cols)]
