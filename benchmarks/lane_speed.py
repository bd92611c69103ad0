"""One tour lane's training step on this machine under minigen's machine-dependent settings: the conv plan
(estimate / measure), Numba's vector width (256 / 512 bits) and the allocator (keep / system), one thread
(or --threads), in fresh processes.

    taskset -c 0 python benchmarks/lane_speed.py [--rounds 3] [--families pixelcnn,ddpm,"gan:batch 64"]
        [--threads 1] [--plans estimate,measure] [--widths 256,512] [--malloc keep] [--bench] [--out FILE]

A lane of `minigen tour` trains one family at a time with one thread, pinned to a core, at the recipe's
batch (--threads 2 measures the tour in one process on two cores, `--lanes 1`, instead). For each family
(FAMILY or FAMILY:VARIANT, a label of the recipe's calibrated variants) and each setting (every combination
of the --plans, --widths and --malloc given), a fresh process builds the tour recipe's model and takes 18
training steps on mnist-5k digits; the median of the last 15 is the round's figure. Settings alternate
within a round, and round 0, which fills Numba's on-disk cache and each width's plan wisdom (a folder of
its own per width), is not counted. The report: each setting's median over the rounds, and the median of
the per-round ratios to the first setting with their spread. The first step's time of round 0 shows what
measuring the plan costs (docs/measurements.md#conv-plan). --bench takes benchmarks/run.py's model variants
instead of the tour's recipes (`--families ddpm,gan --bench --threads 2`: the batch-128 step of
`minigen bench models`).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)                             # `benchmarks.` importable when run as a script

CHOICES = {"plans": ("estimate", "measure"), "widths": ("256", "512"), "malloc": ("keep", "system")}
WARMUP, TIMED = 3, 15


def child(spec: str) -> dict:
    """In this process: the recipe's model for spec ("family" or "family:variant"; "bench:variant", a
    benchmark variant at batch 128), its first step's time and the median of TIMED steps after WARMUP
    (with the threads the parent gave the process)."""
    from benchmarks.common import set_threads
    set_threads(int(os.environ["NUMBA_NUM_THREADS"]))
    import time
    if spec.startswith("bench:"):
        from benchmarks.run import train_step_case
        step = train_step_case("minigen", spec.partition(":")[2])
        seconds = []
        for _ in range(WARMUP + TIMED):
            start = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - start)
        return {"first_s": seconds[0], "median_s": statistics.median(seconds[WARMUP:])}
    import minigen
    from benchmarks.quality_time import recipe_of
    from minigen import data as mdata
    from minigen.models import get_family
    family, _, variant = spec.partition(":")
    recipe, cls = recipe_of(family, variant or None), get_family(family)
    minigen.manual_seed(0)
    model = cls({**cls.default_config(), **recipe.config, "conditional": True})
    optimizers = model.make_optimizers()
    model.train()
    train = mdata.load("mnist-5k", "train", download=False)
    x, y, batch = mdata.to_float(train.images), train.labels, int(model.config["batch_size"])
    noise, seconds = minigen.Generator(1), []
    for i in range(WARMUP + TIMED):
        j = (i * batch) % (len(x) - batch)
        start = time.perf_counter()
        model.train_step(x[j:j + batch], y[j:j + batch], optimizers, noise)
        seconds.append(time.perf_counter() - start)
    return {"first_s": seconds[0], "median_s": statistics.median(seconds[WARMUP:])}


def summarize(medians: dict) -> dict:
    """{setting: [per-round medians]} -> {setting: {"median_s", "ratio", "ratio_min", "ratio_max"}}, the
    ratios per round against the first setting."""
    base = next(iter(medians.values()))
    out = {}
    for setting, rounds in medians.items():
        ratios = [a / b for a, b in zip(rounds, base)]
        out[setting] = {"median_s": statistics.median(rounds), "ratio": statistics.median(ratios),
                        "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


def label(setting: tuple) -> str:
    plan, bits, malloc = setting
    return f"{plan} {bits}-bit malloc={malloc}"


def _run(spec: str, setting: tuple, wisdom: str, features: str, threads: int) -> dict:
    from benchmarks.common import spawn_child
    plan, bits, malloc = setting
    return spawn_child(__file__, spec, threads, MINIGEN_PLAN=plan, MINIGEN_DATA=wisdom, MINIGEN_MALLOC=malloc,
                       NUMBA_CPU_FEATURES=features + ",-prefer-256-bit" if bits == "512" else None)


def settings_of(args) -> list[tuple]:
    """Every (plan, width, malloc) the arguments name, in order; a value not in CHOICES is refused."""
    import itertools
    lists = []
    for option in CHOICES:
        values = [v.strip() for v in getattr(args, option).split(",") if v.strip()]
        if not values or not set(values) <= set(CHOICES[option]):
            raise SystemExit(f"--{option}: expected some of {', '.join(CHOICES[option])}, got {getattr(args, option)!r}")
        lists.append(values)
    return list(itertools.product(*lists))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--families", default="pixelcnn,ddpm,gan:batch 64")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plans", default="estimate,measure", help="the conv plans to compare")
    p.add_argument("--widths", default="256,512", help="the vector widths to compare (256, 512 or both)")
    p.add_argument("--malloc", default="keep", help="the allocator settings to compare (keep, system)")
    p.add_argument("--bench", action="store_true", help="benchmark variants at batch 128, not tour recipes")
    p.add_argument("--out", help="write the results here as JSON")
    from benchmarks.common import child_or_args
    args = child_or_args(p, argv, child)
    if args.rounds < 1 or args.threads < 1:
        p.error(f"--rounds and --threads must be at least 1, got {args.rounds} and {args.threads}")
    settings = settings_of(args)
    from llvmlite import binding
    from benchmarks.common import machine_info, variant
    from benchmarks.quality_time import recipe_of
    specs = [s.strip() for s in args.families.split(",") if s.strip()]
    for spec in specs:                                     # a bad name fails before any process starts
        if args.bench:
            try:
                variant(spec)
            except KeyError as e:
                raise SystemExit(e.args[0]) from None
        else:
            family, _, recipe_variant = spec.partition(":")
            recipe_of(family, recipe_variant or None)
    if args.bench:
        specs = [f"bench:{spec}" for spec in specs]
    features = binding.get_host_cpu_features().flatten()
    medians = {spec: {setting: [] for setting in settings} for spec in specs}
    first = {spec: {} for spec in specs}
    with tempfile.TemporaryDirectory() as w256, tempfile.TemporaryDirectory() as w512:
        wisdom = {"256": w256, "512": w512}
        for r in range(args.rounds + 1):
            for spec in specs:
                for setting in settings:
                    result = _run(spec, setting, wisdom[setting[1]], features, args.threads)
                    if r == 0:
                        first[spec][label(setting)] = result["first_s"]
                    else:
                        medians[spec][setting].append(result["median_s"])
                    print(f"round {r} {spec:14s} {label(setting)}: first step {result['first_s']:.2f} s, "
                          f"median {1e3 * result['median_s']:.1f} ms", flush=True)
    machine = machine_info(args.threads)
    print(f"\n{machine['cpu']}, {machine['blas']}, {args.threads} thread(s); ratio: median of per-round ratios "
          f"to {label(settings[0])}")
    report = {"machine": machine, "rounds": args.rounds, "threads": args.threads, "families": {}}
    for spec in specs:
        summary = summarize(medians[spec])
        report["families"][spec] = {"first_step_s_round0": first[spec],
                                    "settings": {label(k): v for k, v in summary.items()}}
        for setting, v in summary.items():
            print(f"{spec:14s} {label(setting)}: {1e3 * v['median_s']:7.1f} ms  {v['ratio']:.3f}x "
                  f"({v['ratio_min']:.2f}-{v['ratio_max']:.2f})")
    if args.out:
        from benchmarks.common import write_json
        write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
