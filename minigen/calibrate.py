"""Size a recipe to this machine: time a family's training step, then pick the largest variant whose
steps fit the time budget (issue 27).

A recipe for a time budget (the tour's, `minigen train --recipe tour`) is only as good as the steps the
budget buys: on a machine twice as slow a fixed recipe gets half its steps and draws half-trained digits.
So a recipe offers a few variants, largest first, each with the optimiser steps it was measured to need
(docs/recipes.md, "Calibrated variants"). `choose_variant` times each in turn on real batches and takes
the first whose predicted steps (budget left / seconds per step) reach what it needs; a smaller model
trained to its targets draws cleaner digits than a larger one half-trained.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from minigen.errors import MinigenError

__all__ = ["Variant", "Choice", "seconds_per_step", "choose_variant"]

WARMUP_STEPS = 2          # untimed: Numba's compile and the conv plan's first use land here
TIMED_STEPS = 5           # at most this many timed steps...
TIMED_SECONDS = 2.0       # ...or this long, whichever ends first (at least one): the tour spends ~2 s per variant


@dataclass(frozen=True)
class Variant:
    """One size of a recipe. label: how it is printed (e.g. "16/32/32"); config: overrides of the recipe's
    model config; steps_needed: the optimiser steps it needs for the tour's targets, measured by steps."""
    label: str
    config: dict
    steps_needed: int

    def __post_init__(self):
        if not (isinstance(self.steps_needed, int) and self.steps_needed > 0):
            raise MinigenError(f"variant {self.label!r}: steps_needed must be a positive integer, "
                               f"got {self.steps_needed!r}")


@dataclass(frozen=True)
class Choice:
    """What `choose_variant` chose and why. timings: (label, seconds per step, predicted steps) of every
    variant timed, in order; seconds: the time calibration itself took (out of the budget); reason: the
    printed line."""
    variant: Variant
    timings: tuple
    seconds: float
    reason: str

    def as_dict(self) -> dict:
        """For tour.json and a run's summary."""
        return {"chosen": self.variant.label, "steps_needed": self.variant.steps_needed,
                "timed": [{"variant": label, "seconds_per_step": s, "predicted_steps": steps}
                          for label, s, steps in self.timings],
                "seconds": self.seconds, "reason": self.reason}


def seconds_per_step(family: str, config: dict, x, y, warmup_steps: int = WARMUP_STEPS,
                     timed_steps: int = TIMED_STEPS, timed_seconds: float = TIMED_SECONDS) -> float:
    """Seconds per training step of `family` built from `config` (its defaults overridden), on consecutive
    batches of x: (N, 1, 28, 28) float images and y: (N,) labels, after `warmup_steps` untimed steps.
    The model is thrown away: it is built again (from the run's seed) by the training that follows."""
    from minigen.models import get_family
    from minigen.random import Generator
    model = get_family(family)(config)
    optimizers = model.make_optimizers()
    model.train()
    batch = model.hparams.batch_size
    if len(x) < batch:
        raise MinigenError(f"calibration: {family} needs a batch of {batch} images, the data holds {len(x)}")
    noise = Generator(0)

    def step(i):
        start = (i * batch) % (len(x) - batch + 1)
        model.train_step(x[start:start + batch], y[start:start + batch], optimizers, noise)
    for i in range(warmup_steps):
        step(i)
    started, done = time.perf_counter(), 0
    while done < timed_steps and (done == 0 or time.perf_counter() - started < timed_seconds):
        step(warmup_steps + done)
        done += 1
    return (time.perf_counter() - started) / done


def choose_variant(name: str, variants, budget: float, time_step: Callable[[Variant], float]) -> Choice:
    """The first (largest) of `variants` whose predicted steps in `budget` seconds reach its steps_needed;
    if none does, the one with the best ratio of predicted to needed steps (the smallest of those tied).

    time_step(variant) -> seconds per step (seconds_per_step in real use; tests fake a machine with it).
    Variants are timed in order and only until one fits; the time calibration takes is counted out of the
    budget before each prediction. `name` (the family) starts the printed reason."""
    if not variants:
        raise MinigenError(f"calibration of {name}: no variants to choose from")
    if not budget >= 0:
        raise MinigenError(f"calibration of {name}: the budget must be a non-negative number of seconds, "
                           f"got {budget}")
    started = time.perf_counter()
    timings, parts = [], []
    for variant in variants:
        seconds = time_step(variant)
        if not seconds > 0:
            raise MinigenError(f"calibration of {name}: {variant.label} timed at {seconds} s/step; "
                               f"expected a positive number")
        left = max(budget - (time.perf_counter() - started), 0.0)
        predicted = int(left / seconds)
        timings.append((variant.label, seconds, predicted))
        if predicted >= variant.steps_needed:
            fits = f"{variant.label} ({seconds:.3g} s/step, ~{predicted} steps in {left:.0f} s >= " \
                   f"{variant.steps_needed} needed)"
            reason = f"{name}: " + ("; ".join(parts) + "; chose " if parts else "chose ") + fits
            return Choice(variant, tuple(timings), time.perf_counter() - started, reason)
        parts.append(f"{seconds:.3g} s/step -> ~{predicted} steps in {left:.0f} s < {variant.steps_needed} "
                     f"needed for {variant.label}")
    # reversed: on a tie (a budget too small for a single step of any) the smallest variant, the cheapest to use
    best = max(reversed(range(len(variants))), key=lambda i: timings[i][2] / variants[i].steps_needed)
    variant, (_, seconds, predicted) = variants[best], timings[best]
    reason = f"{name}: " + "; ".join(parts) + f"; none fits: chose {variant.label}, the best ratio " \
                                              f"(~{predicted} of {variant.steps_needed} steps needed)"
    return Choice(variant, tuple(timings), time.perf_counter() - started, reason)
