"""The `minigen` command (also `python -m minigen`).

    minigen train MODEL [options] --out RUN_DIR     train a model family (or --resume RUN_DIR)
    minigen sample RUN_DIR [--label 7] [--n 64]     draw samples from a trained run
    minigen eval RUN_DIR [--fid]                    test-set metrics of a trained run
    minigen data info|fetch NAME                    what a dataset holds / download it
    minigen bench [ops|models|quality|plan] ...     minigen vs PyTorch benchmarks (quality: at equal time;
                                                    plan: this machine's conv plan)
    minigen demo ar-vs-nar                          the lecture's AR vs NAR figure
    minigen tour                                    every family, trained briefly, side by side
    minigen report RUN_DIR [RUN_DIR ...] --out DIR  several runs side by side in one HTML page
    minigen sweep SPEC.toml --out DIR [--workers N]  a grid of training runs (Dask or local processes)
    minigen assign make|check|grade ...             assignments: student copies, checked, a class graded

Every bad input ends with one line `minigen: error: ...` and exit status 2.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import sys

from minigen.errors import MinigenError
from minigen.tools.sweep import BENCH_SCRIPTS

from minigen.data import NAMES as DATASETS
from minigen.models import FAMILIES

FAMILY_NAMES = list(FAMILIES)      # the registry (minigen/models/base.py) is the one list of families


class _UsageError(MinigenError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (not the whole usage text) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _checked_number(parse, expected: str, accept):
    """An argparse type: text -> parse(text), refused with "expected <expected>, got ..." when it does
    not parse or accept(value) is false (NaN fails every comparison, so no number check lets it in)."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value
    return convert


_positive_int = _checked_number(int, "a positive integer", lambda v: v > 0)
_non_negative_int = _checked_number(int, "a non-negative integer", lambda v: v >= 0)
_positive_float = _checked_number(float, "a positive number", lambda v: v > 0)
_non_negative_float = _checked_number(float, "a non-negative number", lambda v: 0 <= v < float("inf"))


MAX_SAMPLES = 1000   # `minigen sample --n`: a grid of more is unreadable, and a DDPM batch of more needs GiBs


def _sample_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES} samples, got {value}")
    return value


def _label(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"expected a digit label 0-9, got {text!r}")
    return value


def _key_value(text: str):
    """--set key=value: the value parsed as JSON when it can be (numbers, true/false), else a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


class _TrainHelp(argparse.Action):
    """`minigen train MODEL --help`: the usual help, then MODEL's hyper-parameters (its declaration's
    names, defaults, allowed values and reasons), which --set changes."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show this help (with MODEL: its hyper-parameters) and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        from minigen.models import get_family
        text = parser.format_help()
        model = getattr(namespace, "model", None)
        if model:
            lines = get_family(model).Config.help_lines()
            text += f"\nhyper-parameters of {model} (--set KEY=VALUE; default, then what is allowed):\n  " + \
                "\n  ".join(lines) + "\n"
        else:
            text += "\n`minigen train MODEL --help` also lists MODEL's hyper-parameters.\n"
        sys.stdout.write(text)
        parser.exit(0)


def _data_args(p):
    p.add_argument("--dataset", default=None, choices=DATASETS,
                   help="training data (default mnist; falls back to the bundled mnist-5k offline)")
    p.add_argument("--data-dir", default=None, help="a folder of MNIST-style IDX files to use instead")


def _allow_non_finite_arg(p):
    p.add_argument("--allow-non-finite", action="store_true",
                   help="load a checkpoint whose weights hold NaN or infinity (refused otherwise)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="minigen", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a model family", add_help=False)
    p.add_argument("-h", "--help", action=_TrainHelp)
    p.add_argument("model", nargs="?", choices=FAMILY_NAMES, help="model family (omit with --resume)")
    p.add_argument("--out", help="run directory to create (default runs/MODEL)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted or finished run")
    _data_args(p)
    p.add_argument("--epochs", type=_positive_int, default=None, help="total epochs (default 5)")
    p.add_argument("--batch-size", type=_positive_int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--conditional", action="store_true",
                   help="condition on the label, a digit or a Fashion-MNIST class (the 'prompt')")
    p.add_argument("--set", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="a model hyper-parameter, e.g. --set variant=conv --set latent_dim=2")
    p.add_argument("--train-n", type=_positive_int, help="use only the first N training images")
    p.add_argument("--max-steps", type=_positive_int, help="stop after this many steps")
    p.add_argument("--max-seconds", type=_positive_float, help="stop after this much training time (a budget)")
    p.add_argument("--recipe", choices=["tour"],
                   help="the tour's recipe for MODEL (conditional, its config, lr warm-up and cosine decay), sized "
                        "to --max-seconds by timing this machine's steps; --set still overrides (docs/recipes.md)")
    p.add_argument("--eval-n", type=_non_negative_int, default=1000, help="test images to evaluate on (0: skip)")
    p.add_argument("--detect-anomaly", action="store_true", help="name the op that first makes a NaN/Inf gradient")
    p.add_argument("--checkpoint-minutes", type=_non_negative_float, default=None,
                   help="also save a checkpoint within an epoch this often (default 5; 0: after every step)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("sample", help="draw samples from a trained run")
    p.add_argument("run_dir")
    p.add_argument("--label", type=_label,
                   help="label 0-9 to generate: a digit, or a Fashion-MNIST class (conditional models)")
    p.add_argument("--n", type=_sample_count, default=64, help=f"how many (1..{MAX_SAMPLES}, default 64)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--out", default=None, help="PNG to write (default RUN_DIR/sample.png)")
    p.add_argument("--method", choices=["ancestral", "ddim", "euler", "heun"],
                   help="the sampler (default: the run's config); DDPM: ancestral or ddim; flowmatch: euler or heun")
    p.add_argument("--steps", type=_positive_int, help="DDPM: DDIM sampling steps, 1..T (e.g. 50); flowmatch: "
                                                       "ODE steps (e.g. 4)")
    p.add_argument("--guidance", type=float, help="DDPM, flowmatch: classifier-free guidance scale, finite and >= 0")
    p.add_argument("--temperature", type=float, help="flow / VAE / GAN: scales the latent noise, finite, >= 0 "
                                                     "(0: the mode); PixelCNN: divides the logits, finite, > 0")
    p.add_argument("--animate", metavar="GIF", help="instead: write an animation of how this family generates")
    _allow_non_finite_arg(p)

    p = sub.add_parser("eval", help="test-set metrics of a trained run")
    p.add_argument("run_dir")
    _data_args(p)
    p.add_argument("--n", type=_positive_int, default=1000, help="test images to use")
    p.add_argument("--fid", action="store_true", help="also FID-MNIST, label accuracy, precision, recall, density and "
                   "coverage (per digit too) of samples")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    _allow_non_finite_arg(p)

    p = sub.add_parser("data", help="dataset information and download")
    p.add_argument("action", choices=["info", "fetch"])
    p.add_argument("name", choices=DATASETS)
    p.add_argument("--data-dir", default=None)

    p = sub.add_parser("bench", help="minigen vs PyTorch benchmarks, each framework alone in fresh processes, "
                                     "alternating rounds (benchmarks/harness.py; source checkout only)")
    p.add_argument("what", nargs="?", default="models", choices=list(BENCH_SCRIPTS))
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options passed to the benchmark script")

    p = sub.add_parser("demo", help="lecture demos")
    p.add_argument("name", choices=["ar-vs-nar"])
    p.add_argument("--out", default="runs/ar-vs-nar")
    _data_args(p)
    p.add_argument("--seed", type=_non_negative_int, default=0)

    p = sub.add_parser("tour", help="train every family briefly and compare them")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--out", default="runs/tour")
    _data_args(p)
    p.add_argument("--seed", type=_non_negative_int, default=0)
    p.add_argument("--lanes", type=_positive_int, default=None,
                   help="families trained side by side, a one-thread process per core (default: one per core "
                        "this process may use; 1: in turn, in this process)")

    p = sub.add_parser("report", help="several runs side by side in one HTML page")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="folder for the page (index.html)")

    p = sub.add_parser("sweep", help="a grid of training runs from a TOML spec, in parallel "
                                     "(then its benchmark cases, one at a time)")
    p.add_argument("spec", help="the sweep's TOML file (see `python -m pydoc minigen.tools.sweep`)")
    p.add_argument("--out", required=True, help="the sweep's folder: one run directory per run, results, plots")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive_int, default=1, help="runs at the same time on this machine")
    where.add_argument("--scheduler", default=None, help="a Dask scheduler, e.g. tcp://HOST:8786")
    p.add_argument("--timeout", type=_positive_float, default=None,
                   help="seconds before a run (or a bench case) is stopped (default: none)")
    p.add_argument("--max-runs", type=_positive_int, default=None,
                   help="refuse a grid of more runs than this (default 1000)")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("assign", help="teachers: make a student copy with lines to write, or grade one")
    p.add_argument("rest", nargs=argparse.REMAINDER,
                   help="make --topics T1,T2 --out DIR | check DIR [--topic T] | grade DIR --out gradebook.csv")
    return parser


# --- commands ---------------------------------------------------------------------------
def cmd_train(args) -> int:
    from minigen.train import CONFIG, TrainOptions, options_from_run, train
    if args.resume:
        if args.recipe:
            raise _UsageError("--recipe: a resumed run keeps the recipe it started with; leave --recipe out")
        if not os.path.lexists(os.path.join(args.resume, CONFIG)):
            raise _UsageError(f"--resume {args.resume}: not a minigen run directory (no {CONFIG} there)")
        opts = options_from_run(args.resume)
        if args.model and args.model != opts.model:
            raise _UsageError(f"run directory {args.resume} belongs to a '{opts.model}' run, not '{args.model}'")
        if args.checkpoint_minutes is not None:
            opts.checkpoint_minutes = args.checkpoint_minutes
        if args.epochs:
            opts.epochs = args.epochs
        opts.max_steps = args.max_steps
        opts.max_seconds = args.max_seconds
        opts.progress = not args.no_progress
        _, summary = train(opts, resume=True)
    else:
        if not args.model:
            raise _UsageError("train: name a model (" + ", ".join(FAMILY_NAMES) + ") or give --resume RUN_DIR")
        opts = TrainOptions(model=args.model, out=args.out or os.path.join("runs", args.model),
                            dataset=args.dataset or "mnist", data_dir=args.data_dir, epochs=args.epochs or 5,
                            batch_size=args.batch_size, lr=args.lr, seed=args.seed, conditional=args.conditional,
                            model_config=dict(args.set), train_n=args.train_n, max_steps=args.max_steps,
                            max_seconds=args.max_seconds, eval_n=args.eval_n, detect_anomaly=args.detect_anomaly,
                            progress=not args.no_progress, command=shlex.join(["minigen", *args.argv]))
        if args.checkpoint_minutes is not None:
            opts.checkpoint_minutes = args.checkpoint_minutes
        choice = _apply_tour_recipe(opts, dict(args.set)) if args.recipe else None
        _, summary = train(opts)
        if choice:
            summary["calibration"] = choice.as_dict()
    from minigen.tools.report import write_run_report
    write_run_report(opts.out)
    print(json.dumps(summary, indent=2))
    print(f"run directory: {opts.out}")
    return 0


def _apply_tour_recipe(opts, overrides: dict):
    """`--recipe tour`: the tour's recipe for opts.model, its size chosen for opts.max_seconds on this machine
    (Recipe.calibrated, which prints why); the calibration's time comes out of the budget and --set keys
    override the recipe's. Returns the calibration's Choice (None: a recipe of one size)."""
    from minigen.models import get_family
    from minigen.tools.tour import FAMILIES as RECIPES
    recipe = next((r for r in RECIPES if r.family == opts.model), None)
    if recipe is None:
        raise _UsageError(f"--recipe tour: the tour has no recipe for {opts.model}; it has recipes for "
                          f"{', '.join(r.family for r in RECIPES)}")
    if opts.max_seconds is None:
        raise _UsageError("--recipe tour sizes the model to a time budget: give --max-seconds too "
                          "(e.g. --max-seconds 90)")
    opts.check()                       # a bad option is refused before the seconds of calibration
    get_family(opts.model)({**recipe.config, **overrides, "conditional": True})   # and a bad --set
    return recipe.apply_to(opts, overrides)


def cmd_sample(args) -> int:
    import numpy as np

    from minigen.plots import save_grid
    from minigen.random import Generator
    from minigen.train import load_run
    out = args.out or os.path.join(args.run_dir, "sample.png")
    _check_out_file(out, "--out", (".png", ".svg", ".pdf"))
    if args.animate:
        _check_out_file(args.animate, "--animate", (".gif",))
    model, config, _ = load_run(args.run_dir, allow_non_finite=args.allow_non_finite)
    model.eval()
    if args.label is not None and not model.conditional:
        raise _UsageError(f"--label {args.label}: the run in {args.run_dir} is not conditional "
                          f"(train it with --conditional)")
    labels = None
    if model.conditional:
        labels = np.full(args.n, args.label) if args.label is not None else np.arange(args.n) % 10
    options = {k: getattr(args, k) for k in ("method", "steps", "guidance", "temperature")
               if getattr(args, k) is not None}
    if args.animate:
        from minigen.animate import animate
        _check_options(options, model.generation_frames, f"{config['model']} animation")
        if args.label is not None:
            raise _UsageError("--label: an animation shows every digit side by side; leave --label out")
        print(f"wrote {animate(model, args.animate, generator=Generator(args.seed), **options)}")
        return 0
    _check_options(options, model.sample, f"{config['model']} sampling")
    images = model.sample(args.n, labels=labels, generator=Generator(args.seed), **options)
    save_grid(images, out, nrow=min(args.n, 10 if model.conditional else 8))
    print(f"wrote {args.n} samples to {out}")
    return 0


def _check_out_file(path: str, option: str, extensions: tuple[str, ...]) -> None:
    """An output file name must end in one of `extensions` and must not name an existing folder."""
    if os.path.isdir(path):
        raise _UsageError(f"{option} {path} is a folder; expected a file name such as "
                          f"{os.path.join(path, 'samples' + extensions[0])}")
    if not path.lower().endswith(extensions):
        raise _UsageError(f"{option} {path}: expected a file name ending in {' or '.join(extensions)}")


def _check_options(options: dict, method, what: str) -> None:
    accepted = inspect.signature(method).parameters
    for name in options:
        if name not in accepted:
            takes = [p for p in accepted if p not in ("n", "labels", "generator", "frames", "samples", "options")]
            raise _UsageError(f"--{name} is not an option of {what} (it takes: {', '.join(takes) or 'none'})")


def cmd_eval(args) -> int:
    from minigen import data as mdata
    from minigen.random import Generator
    from minigen.rundir import check_report_inputs
    from minigen.train import load_run
    model, config, _ = load_run(args.run_dir, allow_non_finite=args.allow_non_finite)
    check_report_inputs(args.run_dir)
    model.eval()
    train_cfg = config["train"]
    dataset = args.dataset or train_cfg.get("dataset", "mnist")
    test = mdata.load(dataset, "test", args.data_dir or train_cfg.get("data_dir"))
    x, y = mdata.to_float(test.images[:args.n]), test.labels[:args.n]
    results = model.evaluate(x, y, generator=Generator(args.seed))
    if args.fid:
        from minigen.metrics import sample_quality
        results.update(sample_quality(model, x, generator=Generator(args.seed + 1), dataset=dataset,
                                      data_dir=args.data_dir or train_cfg.get("data_dir"), reference_labels=y))
    from minigen.rundir import EVAL
    from minigen.tools.report import write_run_report
    from minigen.serialize import atomic_write
    atomic_write(os.path.join(args.run_dir, EVAL), lambda f: f.write(json.dumps(results, indent=2).encode()))
    print(json.dumps(results, indent=2))
    print(f"report: {write_run_report(args.run_dir)}")
    return 0


def cmd_data(args) -> int:
    from minigen import data as mdata
    if args.action == "info":
        print(mdata.describe(args.name, args.data_dir))
    else:
        print(mdata.fetch(args.name))
    return 0


def cmd_bench(args) -> int:
    import runpy

    from minigen.tools.sweep import benchmark_script
    script = benchmark_script(args.what)        # the benchmarks live in the source checkout
    sys.argv = [script] + args.rest
    runpy.run_path(script, run_name="__main__")
    return 0


def cmd_demo(args) -> int:
    from minigen.tools.demos import ar_vs_nar
    ar_vs_nar.run(out_dir=args.out, dataset=args.dataset or "mnist", data_dir=args.data_dir, seed=args.seed)
    return 0


def cmd_tour(args) -> int:
    from minigen.tools import tour
    tour.run(minutes=args.minutes, out_dir=args.out, dataset=args.dataset or "mnist", data_dir=args.data_dir,
             seed=args.seed, lanes=args.lanes)
    return 0


def cmd_report(args) -> int:
    from minigen.tools.report import write_comparison
    print(f"wrote {write_comparison(args.run_dirs, args.out)}")
    return 0


def cmd_sweep(args) -> int:
    from minigen.tools.sweep import MAX_RUNS, run_sweep
    rows = run_sweep(args.spec, args.out, workers=args.workers, scheduler=args.scheduler, timeout=args.timeout,
                     progress=not args.no_progress, max_runs=args.max_runs or MAX_RUNS)
    failed = [r for r in rows if r["status"] != "done"]
    for row in failed:
        print(f"minigen sweep: {row['name']}: {row['status']}: {row['error']}", file=sys.stderr)
    print(f"results: {os.path.join(args.out, 'results.csv')} (and .json), plots in {os.path.join(args.out, 'plots')}")
    return 1 if failed else 0


def cmd_assign(args) -> int:
    from minigen.tools import assign
    return assign.main(args.rest)


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "data": cmd_data, "bench": cmd_bench,
            "demo": cmd_demo, "tour": cmd_tour, "assign": cmd_assign,
            "report": cmd_report, "sweep": cmd_sweep}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)          # argparse itself exits 2 with a one-line message
    args.argv = list(sys.argv[1:] if argv is None else argv)     # recorded in a run's report
    if args.command is None:
        parser.print_help()
        return 2
    from minigen.train import TrainingStopped
    try:
        return COMMANDS[args.command](args)
    except TrainingStopped as e:
        print(f"minigen: {e}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("\nminigen: stopped at once; the last checkpoint written is intact", file=sys.stderr)
        return 130
    except MinigenError as e:
        print(f"minigen: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"minigen: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
