"""Probe a change to a tour recipe by optimiser steps: what the change buys per step, whatever the load.

    python benchmarks/recipe_probe.py FAMILY STEPS [--set KEY=VALUE ...] [--sample KEY=VALUE ...]
        [--variant LABEL] [--warmup N] [--samples 500] [--grid PNG] [--framework minigen|torch]

Trains FAMILY's tour recipe (minigen.tools.tour.FAMILIES; with --variant, one of its calibrated variants)
with the --set overrides for exactly STEPS optimiser steps through `benchmarks/quality_time.py`'s
`train_for`: the trainer's loop, the recipe's lr warm-up (or --warmup) and its cosine decay by steps,
seed 0, one thread. Then prints one JSON line: steps, seconds per step, the likelihood where the family
has one, and FID-MNIST and label accuracy of --samples samples (the digits in turn, --sample options
such as temperature or guidance) against the first 1,000 test images, the equal-time benchmark's
reference (so FIDs read higher than the tour's). --grid saves ten samples of each digit.

Seconds per step from a loaded machine say little; compare step costs by alternating short probes of
the candidates on the same core, then give each the steps its cost buys in the budget (docs/recipes.md).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))            # `benchmarks.` importable when run as a script


def setting(text: str) -> tuple[str, object]:
    """"KEY=VALUE" -> (key, value): the value read as a Python literal (1e-3, [8, 16, 16]), true/false as
    booleans, anything else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, {"true": True, "false": False}.get(value.lower(), value)


def probe_recipe(family: str, overrides: dict, sample_options: dict, variant: str | None = None,
                 warmup: int | None = None):
    """The recipe to probe: FAMILY's tour recipe (or its variant) with the overrides; the model config is
    checked here, so a bad key fails before any training."""
    from benchmarks.quality_time import recipe_of
    from minigen.models import get_family
    recipe = recipe_of(family, variant)
    recipe = dataclasses.replace(recipe, config={**recipe.config, **overrides},
                                 sample_options={**recipe.sample_options, **sample_options},
                                 **({} if warmup is None else {"warmup_steps": warmup}))
    cls = get_family(family)
    cls({**cls.default_config(), **recipe.config, "conditional": True})       # a bad --set fails here
    return recipe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("family")
    p.add_argument("steps", type=int)
    p.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                   help="a model config key over the recipe's")
    p.add_argument("--sample", type=setting, action="append", default=[], metavar="KEY=VALUE",
                   help="a sampling option over the recipe's (temperature, guidance, ...)")
    p.add_argument("--variant", help="one of the recipe's calibrated variants, by label")
    p.add_argument("--warmup", type=int, help="lr warm-up steps instead of the recipe's")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--grid", help="save ten samples of each digit to this PNG")
    p.add_argument("--framework", choices=("minigen", "torch"), default="minigen")
    args = p.parse_args(argv)
    if args.steps < 1 or args.samples < 10:
        p.error(f"STEPS must be at least 1 and --samples at least 10, got {args.steps} and {args.samples}")
    from benchmarks.common import set_threads
    set_threads(1, args.framework)
    os.environ["QUALITY_TIME_SAMPLES"] = str(args.samples)
    from benchmarks.quality_time import train_for
    recipe = probe_recipe(args.family, dict(args.set), dict(args.sample), args.variant, args.warmup)
    result = train_for(args.framework, args.family, max_steps=args.steps, recipe=recipe)
    samples = result.pop("samples")
    result["seconds_per_step"] = result["train_seconds"] / result["steps"]
    if args.grid:
        from minigen.plots import save_grid
        first_ten = [i for digit in range(10) for i in range(digit, min(len(samples), 100), 10)]
        save_grid(samples[first_ten], args.grid, nrow=10, title=f"{args.family}, {args.steps} steps")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
