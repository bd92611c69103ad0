"""`minigen tour`: the lecture's whole map of image generation, on your CPU, in one command.

Trains a small class-conditional instance of every family on the offline default data
for a fixed total time budget, then asks each of them for every digit 0-9 (the
"prompt") and compares them:

    family     idea                                   module
    AR         pixel by pixel, each given the ones before   minigen/models/pixelcnn.py
    NAR        every pixel at once from the label alone      minigen/models/nar.py
    VAE        decoder(z, y), z ~ N(0, I); encoder for training   minigen/models/vae.py
    Flow       invertible map, exact likelihood           minigen/models/flow.py
    Diffusion  denoise pure noise step by step            minigen/models/ddpm.py
    Flow matching  follow a learned velocity, noise to image, in a few steps   minigen/models/flow_matching.py
    GAN        generator vs discriminator                 minigen/models/gan.py

Outputs in --out: tour_samples.png (a row per family, a column per digit),
tour_strips.png (DDPM and flow matching from noise to digit; PixelCNN pixel by pixel) and the same as
animations of every digit (tour_ddpm.gif, tour_flowmatch.gif, tour_pixelcnn.gif), index.html (the whole
lecture as one page), tour.json and
the printed table: parameters, training and sampling time, the likelihood where the
family has one, FID-MNIST, label accuracy, precision, recall and coverage of its samples (tour.json
adds density and each digit's coverage), and under it what a perfect model would score: real digits
in place of samples, the floor of FID at that sample count.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from minigen.calibrate import Variant
from minigen.errors import MinigenError
from minigen.models.pixelcnn import pixel_by_pixel_strip
from minigen.random import Generator

__all__ = ["FAMILIES", "Recipe", "run"]

@dataclass(frozen=True)
class Recipe:
    """How the tour trains and samples one family on a small time budget (chosen by measurement: see
    benchmarks/quality_time.py and docs/recipes.md).

    share: of the training budget; config: model config over the family's defaults (sized to the
    steps the share buys); warmup_steps, lr_decay: the TrainOptions lr schedule (a cosine decay
    ends with the family's time budget); sample_options: keywords of model.sample (temperature);
    shown: the config keys the table prints beside lr and batch_size; note: the family's role;
    variants: sizes of the recipe, largest first (the first is `config` itself), each with the steps it
    needs, which `calibrated` chooses from by timing this machine (empty: one size, not timed)."""
    family: str
    title: str
    share: float
    config: dict
    warmup_steps: int = 0
    lr_decay: str = "cosine"
    sample_options: dict = field(default_factory=dict)
    shown: tuple = ()
    note: str = ""
    variants: tuple = ()

    def calibrated(self, seconds: float, dataset: str, data_dir=None, time_step=None):
        """(model config, Choice or None): the recipe's config with the variant that fits a `seconds`
        training budget on this machine (minigen.calibrate.choose_variant; its reason is printed), or
        `config` as it is for a recipe of one size (printed too: a line per family). time_step(variant) ->
        seconds per step replaces the timing of real steps on `dataset` (tests fake a machine with it)."""
        from minigen.calibrate import choose_variant, seconds_per_step
        if not self.variants:
            print(f"calibration: {self.family}: one size, not timed", flush=True)
            return dict(self.config), None

        def config_of(variant):
            return {**self.config, **variant.config}
        if time_step is None:
            from minigen import data as mdata
            train_set = mdata.load(dataset, "train", data_dir)
            x, y = mdata.to_float(train_set.images[:1024]), train_set.labels[:1024]   # a few real batches

            def time_step(variant):
                return seconds_per_step(self.family, {**config_of(variant), "conditional": True}, x, y)
        choice = choose_variant(self.family, self.variants, seconds, time_step)
        print(f"calibration: {choice.reason}", flush=True)
        return config_of(choice.variant), choice

    def apply_to(self, opts, overrides: dict | None = None, time_step=None):
        """Make the TrainOptions `opts` train this recipe within its opts.max_seconds: the variant
        `calibrated` chooses (its timing comes out of the budget), class-conditional, the recipe's lr
        warm-up and decay; `overrides` (e.g. `--set` keys) win over the recipe's config. Returns the
        calibration's Choice (None: a recipe of one size)."""
        config, choice = self.calibrated(opts.max_seconds, opts.dataset, opts.data_dir, time_step)
        opts.model_config = {**config, **(overrides or {})}
        opts.conditional = True
        opts.warmup_steps, opts.lr_decay = self.warmup_steps, self.lr_decay
        opts.max_seconds = max(opts.max_seconds - (choice.seconds if choice else 0.0), 0.0)
        return choice


# The recipes. Shares, sizes and learning rates were chosen by measuring quality against the number of
# optimiser steps each family's share buys on a quiet 2-core machine (docs/recipes.md has the numbers):
# each family gets about the time its recipe needs to meet the tour's targets: PixelCNN (with its per-digit
# map over positions) ~700 steps, DDPM ~430 steps of its narrow U-Net, flow matching ~390 of the same U-Net,
# the GAN ~700, the VAE ~13,000 and the flow (glow, with its class prior) ~400. Flow matching's share was taken
# from the others where they had steps to spare (docs/recipes.md). Every family gets a cosine lr decay that ends
# with its time budget: the last steps, at a small lr, settle the weights (and the DDPM's EMA) instead of
# ending mid-stride. `variants`: on a slower machine, where the share buys fewer steps than the recipe needs,
# the tour trains a smaller variant that gets its steps (minigen/calibrate.py; the probes behind each
# variant's steps are in docs/recipes.md, "Calibrated variants"). Shares moved after the tours in lanes:
# DDPM (FID-MNIST 21 at a 0.18 share, target 40) and flow matching (25 with its 4-step sampler, at 0.16) had
# room; PixelCNN (85% label accuracy on one core, target 90%) and the GAN (83% / 80 on one core, 86% / 40 on
# two) had none: DDPM gave 0.04 and flow matching 0.02, PixelCNN and the GAN got 0.03 each.
FAMILIES = [
    # 24 channels x 7 blocks at batch 32 costs what 32 x 4 does per step but sees further up the image; lr
    # 3e-3 after a 50-step warm-up. With only a per-digit bias per channel the class cannot say WHERE ink
    # goes: 765 / 1500 / 2500 steps drew strokes, 19% / 26% / 31% label accuracy (FID-MNIST 254 / 179 / 140).
    # label_map (a learned per-digit map over positions after the first layer) drew readable digits of the
    # asked-for class: 765 steps 88% / FID-MNIST 32 (minigen: 91% / 35), 1500 steps 92% / 27, and even 300
    # steps 74% / 54 (docs/recipes.md has the probes). A 0.15 share bought ~700 steps (0.108 s each, quiet machine).
    Recipe("pixelcnn", "AR (PixelCNN)", 0.18,
           {"channels": 24, "num_blocks": 7, "batch_size": 32, "lr": 3e-3, "label_map": True},
           warmup_steps=50, shown=("channels", "num_blocks", "label_map"),
           # 16 channels learn as fast per step (300 / 765 steps: 85% / 89%, FID-MNIST 41 / 27) at 0.63x the step
           variants=(Variant("24 ch x 7", {}, 700), Variant("16 ch x 7", {"channels": 16}, 700))),
    # converges in seconds; its blur is the point
    Recipe("nar", "NAR (one pass)", 0.03, {}, shown=("hidden",),
           note="the blurry one-pass baseline: every pixel at once, no pixel sees another"),
    # thousands of cheap steps (~5.5 ms each on a quiet machine): ~13,000 on a fast 2-core machine, ~5,000 on a
    # slower one. lr 1e-3 without warm-up drew 57% label accuracy / FID-MNIST 146 after 5,000 steps (twin); a
    # 200-step warm-up lets Adam go higher: lr 3e-3 82% / 124, 5e-3 92% / 105, 8e-3 93% / 86 (1.2e-2: 94% / 82
    # but a worse likelihood); after 14,000 steps lr 8e-3 93% / 61 (5e-3: 97% / 75). KL warm-up and the conv
    # VAE (a third of the steps) did worse (docs/recipes.md "VAE: more quality per step"). T 0.9 as measured
    # with lr 1e-3 (T 1.0 / 0.9 / 0.8 at 14,000 steps: 85% / 89, 90% / 91, 94% / 94); iw_samples 50 keeps
    # its evaluation short
    Recipe("vae", "VAE", 0.14, {"iw_samples": 50, "lr": 8e-3}, warmup_steps=200, sample_options={"temperature": 0.9},
           shown=("hidden_dim", "latent_dim")),
    # lr 1e-3 (ten times the long-run default) is stable after a 100-step warm-up. With N(0, I) as the prior
    # 900 steps drew speckle (16% label accuracy, FID-MNIST 652): label-dependent couplings are slow to learn.
    # Glow's class-conditional prior N(mu_y, sigma_y^2), mu_y started at each digit's mean code, gave 100% and
    # FID-MNIST 156 after 880 steps of the 5.4M-parameter MLP flow (hidden 256). The glow variant (ActNorm,
    # 1x1 invertible convs, two scales; 30k parameters at hidden 16) does better at equal time (500 samples,
    # the equal-time benchmark's reference): in the time of the MLP's 800 steps (3.64 bits/dim, FID-MNIST 124,
    # 99.6%), 630 steps 2.54 / 74 / 98%; 400 steps 2.90 / 73 / 98%; 300 steps 3.17 / 82 / 98%; and it draws
    # clean backgrounds where the MLP flow draws speckle. T 0.7 costs FID (81), so it samples at 1.0
    Recipe("flow", "Flow (Glow)", 0.08,
           {"variant": "glow", "hidden_channels": 16, "lr": 1e-3, "prior": "class"}, warmup_steps=100,
           # One size: on a slow machine fewer glow steps still beat a cheaper flow's more steps (300 steps: 98% /
           # 82, where the MLP flow at hidden 128, 0.65x the step, drew 99% / 133 after 800, and glow at hidden
           # 8 91% / 143 after 600)
           sample_options={"temperature": 1.0}, shown=("variant", "hidden_channels", "prior")),
    # a quarter-width U-Net (16/32/32) at batch 32 takes ~16x less per step than the 32/64/64 default at
    # 128, so the budget buys hundreds of steps, not tens; lr 2e-3 with a 100-step warm-up, EMA warm-up
    # (in the model), 20 DDIM steps. Measured at 600 steps: v-prediction 98% label accuracy, FID-MNIST 55
    # with guidance 3 (83% / 68 without); eps-prediction 57% / 176 (25% / 253); at 300 steps v: 92% / 80
    Recipe("ddpm", "Diffusion (DDPM)", 0.14,
           # Guidance only changes sampling, so the two-core tours' checkpoints were re-sampled (500 samples):
           # 16/32/32 after 791 steps, guidance 1.5 / 2 / 3: 95% / FID-MNIST 22, 99% / 29, 100% / 60; after
           # 2,468 steps 98% / 14, 100% / 29, 100% / 63 (guidance 3 narrows a well-trained model: recall 0.48).
           # 8/16/16 after 741 steps (one core): 88% / 52, 93% / 36, 97% / 38, so it keeps guidance 3
           {"channels": [16, 32, 32], "batch_size": 32, "lr": 2e-3, "prediction": "v", "guidance": 1.5,
            "sample_steps": 20},
           warmup_steps=100, shown=("channels", "prediction", "guidance", "sample_steps"),
           # half the width, 0.49x the step: 300 steps 90% / FID-MNIST 102, 500 steps 97% / 49
           variants=(Variant("16/32/32", {}, 430),
                     Variant("8/16/16", {"channels": [8, 16, 16], "guidance": 3.0}, 500))),
    # DDPM's U-Net and recipe (16/32/32 at batch 32, lr 2e-3, 100-step warm-up), trained for the velocity
    # instead. Its share was taken from the others where their probes leave room and buys ~390 steps on a
    # fast machine, ~800 in two lanes (docs/recipes.md has the probes). Sampled with 4 Heun steps at guidance 2
    # (16 network passes to DDPM's 40): the two-core tour's checkpoint (814 steps, 500 samples) drew 100% /
    # FID-MNIST 42 with the old 2 steps at guidance 3, 99% / 25 with 4 at 2 and 96% / 19 with 4 at 1.5; after
    # 2,265 steps 100% / 39, 100% / 22, 100% / 15; after 399 steps 95% / 52, 86% / 42, 79% / 43
    Recipe("flowmatch", "Flow matching", 0.14,
           {"channels": [16, 32, 32], "batch_size": 32, "lr": 2e-3, "guidance": 2.0, "sample_method": "heun",
            "sample_steps": 4},
           warmup_steps=100, shown=("channels", "guidance", "sample_method", "sample_steps"),
           # DDPM's half-width U-Net, 2 Heun steps at guidance 3: 500 steps 93% / FID-MNIST 88
           variants=(Variant("16/32/32", {}, 390),
                     Variant("8/16/16", {"channels": [8, 16, 16], "guidance": 3.0, "sample_steps": 2}, 500))),
    # the DCGAN recipe (beta1 0.5, batch 128) at twice its lr, plus the cosine decay, which calms the end of
    # the game (lr 2e-4: 76% / FID-MNIST 189 after 500 steps; lr 4e-4: 90% / 117), with SN-GAN's stabilisers:
    # hinge loss, spectral norm on D without its BatchNorm, D at 4x G's lr (TTUR) and an EMA of G for sampling.
    # By steps (twin, seed 0, 500 samples): plain DCGAN 60% / 186 after 400 steps and 85% / 101 after 700; all
    # four 98% / 104 and 87% / 52, with each digit drawn in varied styles instead of one (docs/recipes.md has
    # each piece alone).
    Recipe("gan", "GAN (DCGAN)", 0.29,
           {"lr": 4e-4, "lr_d": 1.6e-3, "loss": "hinge", "spectral_norm": True, "d_batchnorm": False,
            "ema_decay": 0.999},
           shown=("loss", "lr_d", "spectral_norm", "ema_decay"),
           # half the batch, half the step time: in the time of 350 steps of 128 (70% / FID-MNIST 193), 690 steps
           # of 64 drew 92% / 69, and 1,130 steps (a two-core share) 83% / 36 (twin, 500 samples). Batch 128
           # needs ~1,200 steps for FID-MNIST 40: 700 steps drew 87% / 52 (twin), 762 in a tour 90% / 64, 2,224
           # 92% / 22, where a two-core share of batch 64 (1,155-1,325 steps) drew 83-86% / 35-40. Narrower
           # GANs did worse at the steps their cheaper step buys (width 32, 870 steps: 80% / 171)
           variants=(Variant("batch 128", {}, 1200), Variant("batch 64", {"batch_size": 64}, 690))),
]
# of the budget kept for evaluation and sampling (the yardstick's training, when it is not cached yet, is
# taken off first): a 10-minute tour spent ~80 s on them with the old recipes and less with these (the
# smaller DDPM samples 100 images with 20 guided DDIM steps instead of 50 steps of the wide net)
OVERHEAD_FRACTION = 0.15
BUDGET_TOLERANCE = 0.05    # the whole tour must end within its budget + 5%: reported as "within_budget"


TOUR_MARK = ".made-by-minigen-tour"


def claim_run_dir(path: str) -> None:
    """Make `path` free for a tour run: a run an earlier tour made there is replaced (a rerun starts
    afresh); anything else there is the user's and is never deleted."""
    if os.path.exists(os.path.join(path, TOUR_MARK)):
        import shutil
        shutil.rmtree(path)
    elif os.path.exists(path) and os.listdir(path):
        raise MinigenError(f"tour: {path} already holds files the tour did not make; "
                           f"choose another --out")


def _train_family(recipe: Recipe, seconds, out_dir, dataset, data_dir, seed, eval_n, time_step=None):
    """Calibrate (out of `seconds`), then train the chosen variant for the rest. Returns (model, summary),
    the summary with the calibration's record (Choice.as_dict) where the recipe has variants.

    Both run with the conv plan measured on this machine (MINIGEN_PLAN, when set, still wins): it made
    the tour recipes' steps up to 15-17% faster than the hand thresholds, on one thread (a lane, or a
    one-core machine) and on two, and none measurably slower (docs/measurements.md#conv-plan); its timing falls
    in the calibration's warm-up steps, inside the share."""
    from minigen.kernels import plan
    from minigen.tools.report import write_run_report
    from minigen.train import TrainOptions, train
    opts = TrainOptions(model=recipe.family, out=os.path.join(out_dir, recipe.family), dataset=dataset,
                        data_dir=data_dir, epochs=10_000, seed=seed, max_seconds=seconds, eval_n=eval_n, n_samples=0,
                        progress=False)
    with plan.default_mode("measure"):
        choice = recipe.apply_to(opts, time_step=time_step)
        claim_run_dir(opts.out)
        os.makedirs(opts.out)
        open(os.path.join(opts.out, TOUR_MARK), "w").close()
        model, summary = train(opts)
    write_run_report(opts.out)
    if choice:
        summary["calibration"] = choice.as_dict()
    return model, summary


def split_into_lanes(recipes, lanes: int) -> list[list[Recipe]]:
    """The recipes dealt to `lanes` processes that train side by side, one per core: the largest share
    first, each into the lane whose shares sum least so far, so that the lanes end together. Each lane
    keeps the tour's order. (Batch-32 steps barely gain from a second thread, so on two cores two
    one-thread lanes give the families about twice the steps that one two-thread process would.)"""
    lanes = max(1, min(lanes, len(recipes)))
    dealt: list[list[Recipe]] = [[] for _ in range(lanes)]
    for recipe in sorted(recipes, key=lambda r: -r.share):
        min(dealt, key=lambda lane: sum(r.share for r in lane)).append(recipe)
    order = {r.family: i for i, r in enumerate(recipes)}
    return [sorted(lane, key=lambda r: order[r.family]) for lane in dealt if lane]


def lane_seconds(lanes: list[list[Recipe]], train_seconds: float) -> dict[str, float]:
    """{family: its training seconds}: its share of its own lane's time. With one lane that is
    train_seconds * share, the shares summing to 1."""
    total = sum(r.share for lane in lanes for r in lane)
    return {r.family: train_seconds * total * r.share / sum(q.share for q in lane) for lane in lanes for r in lane}


LANE_SUMMARY = "tour-summary.json"     # a lane's record of one family's training, read by the tour


def _train_lane(spec: dict) -> None:
    """A lane's process (`python -m minigen.tools.tour --lane SPEC`): pinned to the core spec["cpu"], train
    spec["families"] ([[family, seconds], ...]) in turn and leave each run, and its summary (LANE_SUMMARY),
    in spec["out_dir"]/family."""
    from minigen.serialize import atomic_write
    os.sched_setaffinity(0, {spec["cpu"]})      # here, not in a pre-exec hook: the tour has threads running
    print(f"lane: {', '.join(family for family, _ in spec['families'])} on core {spec['cpu']}, one thread",
          flush=True)
    recipes = {r.family: r for r in FAMILIES}
    for family, seconds in spec["families"]:
        _, summary = _train_family(recipes[family], seconds, spec["out_dir"], spec["dataset"], spec["data_dir"],
                                   spec["seed"], spec["eval_n"])
        atomic_write(os.path.join(spec["out_dir"], family, LANE_SUMMARY),
                     lambda f: f.write(json.dumps(summary).encode()))


def _train_in_lanes(lanes: list[list[Recipe]], seconds: dict, out_dir, dataset, data_dir, seed, eval_n) -> dict:
    """Train each lane in a process of its own, pinned to one of this process's cores, with one thread;
    lane i's output goes to out_dir/lane-i.log. A lane that fails stops the others (and so does an
    interrupt: no lane outlives the tour). Returns {family: (model, summary)}, each model loaded from the
    run its lane saved."""
    import subprocess
    import minigen
    from minigen.tools.sweep import THREAD_VARIABLES
    from minigen.train import load_run
    cpus = sorted(os.sched_getaffinity(0))
    env = {**os.environ, **{name: "1" for name in THREAD_VARIABLES},
           # the lane imports the same minigen, installed or not
           "PYTHONPATH": os.pathsep.join(filter(None, [os.path.dirname(os.path.dirname(minigen.__file__)),
                                                      os.environ.get("PYTHONPATH")]))}
    running = []
    try:
        for i, lane in enumerate(lanes):
            spec = {"families": [[r.family, seconds[r.family]] for r in lane], "out_dir": out_dir,
                    "dataset": dataset, "data_dir": data_dir, "seed": seed, "eval_n": eval_n,
                    "cpu": cpus[i % len(cpus)]}
            log_path = os.path.join(out_dir, f"lane-{i}.log")
            with open(log_path, "wb") as log:
                process = subprocess.Popen([sys.executable, "-m", "minigen.tools.tour", "--lane", json.dumps(spec)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((process, log_path, [r.family for r in lane]))
        while True:
            for process, log_path, families in running:
                if process.poll() not in (None, 0):
                    with open(log_path, errors="replace") as f:
                        tail = f.read().strip().splitlines()[-5:]
                    raise MinigenError(f"tour: the lane training {', '.join(families)} failed (exit status "
                                       f"{process.returncode}); the end of {log_path}:\n" + "\n".join(tail))
            if all(process.returncode == 0 for process, _, _ in running):
                break
            time.sleep(0.5)
    finally:
        for process, _, _ in running:
            if process.poll() is None:
                process.kill()
                process.wait()
    trained = {}
    for lane in lanes:
        for recipe in lane:
            run_dir = os.path.join(out_dir, recipe.family)
            with open(os.path.join(run_dir, LANE_SUMMARY)) as f:
                trained[recipe.family] = (load_run(run_dir)[0], json.load(f))
    return trained


def _spread_over_digits(labels: np.ndarray, n: int, what: str) -> np.ndarray:
    """Indices (n,) of images with as many of each digit as the tour's n samples ask for (digit i % 10
    for sample i), evenly spread over each digit's images: a set may be sorted by digit, and MNIST's test
    set has its cleaner writers (NIST SD-3) in the first half."""
    picks = []
    for digit in range(10):
        where, want = np.flatnonzero(labels == digit), len(range(digit, n, 10))
        if len(where) < want:
            raise MinigenError(f"tour: {n} metric samples ask for {want} of digit {digit} but {what} has "
                               f"{len(where)}; ask for fewer metric samples")
        picks.append(where[np.linspace(0, len(where) - 1, want).round().astype(int)])
    return np.sort(np.concatenate(picks))


def _is_binary(images: np.ndarray) -> bool:
    return bool(np.isin(images, (0.0, 1.0)).all())


def run(minutes: float = 10.0, out_dir: str = "runs/tour", dataset: str = "mnist", data_dir=None, seed: int = 0,
        metric_samples: int | None = None, yardstick_epochs: int = 3, eval_n: int = 500,
        progress: bool = True, lanes: int | None = None) -> dict:
    """Train, sample and compare every family within about `minutes`.

    lanes: processes training side by side, one per core with one thread each (split_into_lanes); by
    default as many as this process may use cores (`taskset -c 0` makes it one: the families in turn).

    Returns the table as a dict (what tour.json holds), plus "samples": {family: (n, 1, 28, 28)}."""
    from minigen import data as mdata
    from minigen.kernels.convbase import blas_kernels
    from minigen.kernels.plan import machine
    from minigen.metrics import NEIGHBOURS, fid_floor, fidelity_diversity, score_samples, yardstick
    from minigen.animate import save_gif
    from minigen.plots import save_rows
    from minigen.tools.report import write_tour_report

    if not minutes > 0:
        raise MinigenError(f"tour: --minutes must be positive, got {minutes}")
    cores = len(os.sched_getaffinity(0))
    lanes = cores if lanes is None else lanes
    if not (isinstance(lanes, int) and lanes >= 1):
        raise MinigenError(f"tour: --lanes must be a positive whole number of processes, got {lanes!r}")
    lanes = split_into_lanes(FAMILIES, lanes)
    os.makedirs(out_dir, exist_ok=True)
    budget = minutes * 60
    metric_samples = metric_samples or (500 if minutes >= 5 else 60)
    if metric_samples < 10 * (NEIGHBOURS + 1):
        raise MinigenError(f"tour: metric_samples must be at least {10 * (NEIGHBOURS + 1)} (each digit's coverage "
                           f"needs {NEIGHBOURS + 1} samples of it), got {metric_samples}")
    started = time.perf_counter()
    from tqdm import tqdm
    bar = tqdm(total=len(FAMILIES) + 2, desc="tour", unit="stage", disable=not progress, file=sys.stderr,
               bar_format="{desc}: {n}/{total} stages |{bar}| {elapsed} elapsed")

    bar.set_description("tour: yardstick classifier")
    # offline, "mnist" falls back to mnist-5k: the yardstick is cached under the set really used
    dataset = mdata.load(dataset, "train", data_dir).name
    judge = yardstick(dataset, data_dir=data_dir, epochs=yardstick_epochs)
    test = mdata.load(dataset, "test", data_dir)
    # As many test images as metric samples, of the same digits: coverage compares the two sets' k-NN
    # balls, which only reads the same at equal sizes (500 real test digits in place of samples cover 0.96
    # of 500 other test digits, 0.67 of 2,000, 0.23 of 9,500; docs/tour.md)
    reference_index = _spread_over_digits(test.labels, metric_samples, f"the {dataset} test set")
    reference = mdata.to_float(test.images[reference_index])
    reference_labels = test.labels[reference_index]
    reference_feats = {False: judge.features(reference), True: judge.features(mdata.binarize_fixed(reference))}
    # a perfect model's scores: real training digits (none of them a reference) in place of samples
    train_set = mdata.load(dataset, "train", data_dir)
    real_stand_in = mdata.to_float(train_set.images[_spread_over_digits(train_set.labels, metric_samples,
                                                                        f"the {dataset} training set")])
    perfect = {"fid_mnist": fid_floor(real_stand_in, reference, judge),
               **fidelity_diversity(reference_feats[False], judge.features(real_stand_in))}
    bar.update(1)
    # what is left of the budget after the yardstick, less what evaluation and sampling will need
    train_seconds = max(budget - (time.perf_counter() - started), 0) * (1 - OVERHEAD_FRACTION)

    # the figures name the labels: digits 0-9, or Fashion-MNIST's classes; label 7 ("a 7", "a sneaker") is
    # the strips' example
    names, noun = mdata.class_names(dataset), mdata.label_noun(dataset)
    seven, image = (f"a {names[7]}", "digit") if noun == "digit" else (f"a {names[7].lower()}", "image")
    metric_labels = np.arange(metric_samples) % 10
    family_seconds = lane_seconds(lanes, train_seconds)
    trained = {}
    if len(lanes) > 1:
        bar.set_description(f"tour: training in {len(lanes)} lanes")
        trained = _train_in_lanes(lanes, family_seconds, out_dir, dataset, data_dir, seed, eval_n)
    rows, table, all_samples = {}, [], {}
    strips, animations = {}, {}
    for recipe in FAMILIES:
        family, title = recipe.family, recipe.title
        if family in trained:
            model, summary = trained[family]
        else:
            bar.set_description(f"tour: training {family}")
            model, summary = _train_family(recipe, family_seconds[family], out_dir, dataset, data_dir, seed, eval_n)
        bar.set_description(f"tour: sampling {family}")
        start = time.perf_counter()
        samples = model.sample(metric_samples, labels=metric_labels, generator=Generator(seed + 10),
                               **recipe.sample_options)
        sample_seconds = time.perf_counter() - start
        rows[title] = samples[:10]                         # labels 0..9 in order: one per class
        all_samples[family] = samples
        test_metrics = summary.get("test", {})
        metric = model.likelihood_metric
        # binary samples (PixelCNN, NAR draws) are compared with binarized test images: like with like
        scores = score_samples(samples, reference_feats[_is_binary(samples)], judge, metric_labels, reference_labels)
        table.append({
            "family": title, "module": type(model).__module__.replace(".", "/") + ".py",
            "parameters": model.num_parameters(),
            "train_seconds": round(summary["train_seconds"], 1), "train_steps": summary["steps"],
            "recipe": recipe_settings(recipe, model.config), "note": recipe.note,
            "calibration": summary.get("calibration"),
            "sample_seconds_per_image": sample_seconds / metric_samples, "metric_sample_seconds": sample_seconds,
            "likelihood": None if metric is None else {"metric": metric, "value": test_metrics.get(metric)},
            **scores,
        })
        if family == "pixelcnn":
            strips["PixelCNN, pixel by pixel"] = pixel_by_pixel_strip(samples[7], 10)
            animations["tour_pixelcnn.gif"] = model.generation_frames(samples=samples[:10])
        if family == "ddpm":
            frames = model.generation_frames(generator=Generator(seed + 11), frames=19)
            strips[f"DDPM, noise to {image}"] = frames.images[::2, 7]       # 10 of the 19 frames, label 7's column
            animations["tour_ddpm.gif"] = frames
        if family == "flowmatch":
            frames = model.generation_frames(generator=Generator(seed + 11), frames=model.hparams.sample_steps + 1)
            strips[f"Flow matching, noise to {image}"] = frames.images[:, 7]
            animations["tour_flowmatch.gif"] = frames
        bar.update(1)

    bar.set_description("tour: figures")
    samples_png = save_rows(rows, os.path.join(out_dir, "tour_samples.png"), col_labels=list(names),
                            title=f"one sample per family (rows) for each requested {noun} (columns)")
    strips_png = save_rows(strips, os.path.join(out_dir, "tour_strips.png"),
                           title=f"generating {seven}: diffusion denoises everything at once, PixelCNN goes "
                                 f"pixel by pixel")
    # the models label an animation's columns by number: the dataset knows their names
    gifs = [save_gif(frames if frames.columns is None else frames._replace(columns=list(names)),
                     os.path.join(out_dir, name)) for name, frames in animations.items()]
    seconds = time.perf_counter() - started
    result = {"minutes": minutes, "seconds": seconds,
              "within_budget": seconds <= budget * (1 + BUDGET_TOLERANCE), "dataset": dataset,
              "test_source": test.source, "yardstick_test_accuracy": getattr(judge, "test_accuracy", None),
              "metric_samples": metric_samples, "perfect_model": perfect, "families": table, "blas": blas_kernels(),
              "cpu": machine()["cpu"], "threads": machine()["threads"], "cores": cores,
              "lanes": [[r.family for r in lane] for lane in lanes],
              "figures": {"samples": samples_png, "strips": strips_png, "animations": gifs}}
    from minigen.serialize import atomic_write
    atomic_write(os.path.join(out_dir, "tour.json"), lambda f: f.write(json.dumps(result, indent=2).encode()))
    report = write_tour_report(out_dir, result, [samples_png, strips_png, *gifs],
                               [os.path.join(out_dir, r.family) for r in FAMILIES])
    bar.update(1)
    bar.close()
    print(format_table(result))
    print(f"\nfigures: {samples_png}, {strips_png}, {', '.join(gifs)}; table: {os.path.join(out_dir, 'tour.json')}; "
          f"report: {report}")
    return {**result, "samples": all_samples}


def recipe_settings(recipe: Recipe, config: dict) -> dict:
    """The recipe's key settings as the trained model used them: lr, batch size, warm-up, the `shown`
    config keys and the sample options (e.g. the flow's temperature)."""
    return {"lr": config["lr"], "batch_size": config["batch_size"], "warmup_steps": recipe.warmup_steps,
            "lr_decay": recipe.lr_decay, **{k: config[k] for k in recipe.shown}, **recipe.sample_options}


def _settings_text(settings: dict) -> str:
    """{"lr": 0.002, "channels": [16, 32, 32], ...} -> "lr 0.002, channels 16/32/32, ..." (short names)."""
    names = {"batch_size": "batch", "warmup_steps": "warm-up", "lr_decay": "decay", "num_blocks": "blocks",
             "temperature": "T"}
    if "sample_steps" in settings:      # "Heun steps 2" for flow matching; DDPM's sampler is DDIM
        settings = dict(settings)
        sampler = settings.pop("sample_method", "ddim")
        names["sample_steps"] = {"ddim": "DDIM", "heun": "Heun", "euler": "Euler"}.get(sampler, sampler) + " steps"

    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            return "/".join(map(str, value))
        return f"{value:g}" if isinstance(value, float) else str(value)
    return ", ".join(f"{names.get(k, k)} {text(v)}" for k, v in settings.items())


TABLE_HEADER = ["family", "params", "steps", "train s", "sample s/img", "likelihood", "FID-MNIST", "label acc",
                "precision", "recall", "coverage", "module"]


def table_header(result: dict) -> list[str]:
    """TABLE_HEADER with the FID column named for the data its yardstick saw (FID-MNIST, FID-Fashion);
    tour.json keeps the key "fid_mnist" whatever the data."""
    from minigen.metrics import fid_name
    fid = fid_name(result.get("dataset", "mnist"))        # tour.json files before Fashion-MNIST lack "dataset"
    return [fid if h == "FID-MNIST" else h for h in TABLE_HEADER]


def table_rows(result: dict) -> list[list[str]]:
    """The tour's table as rows of text cells under `table_header` (the printed table and the HTML report)."""
    lines = []
    for r in result["families"]:
        lik = r["likelihood"]
        lik_text = "-" if not lik or lik["value"] is None else \
            f"{lik['value']:.3f} {'bits/dim' if lik['metric'] == 'bits_per_dim' else 'nats'}"
        lines.append([r["family"], f"{r['parameters']:,}", f"{r['train_steps']:,}", f"{r['train_seconds']:.0f}",
                      f"{r['sample_seconds_per_image']:.4f}", lik_text, f"{r['fid_mnist']:.2f}",
                      f"{r['label_accuracy']:.0%}",
                      # tour.json files from before these metrics lack them
                      *(f"{r[k]:.0%}" if k in r else "-" for k in ("precision", "recall", "coverage")), r["module"]])
    return lines


def perfect_model_line(result: dict) -> str | None:
    """What a perfect model scores at the table's sample count (real digits in place of samples), or None
    for tour.json files from before it was recorded."""
    perfect = result.get("perfect_model")
    if perfect is None:
        return None
    from minigen.data import label_noun
    from minigen.metrics import fid_name
    dataset = result.get("dataset", "mnist")
    images = "digits" if label_noun(dataset) == "digit" else "images"
    return (f"a perfect model ({result['metric_samples']} real training {images} in place of samples): "
            f"{fid_name(dataset)} {perfect['fid_mnist']:.2f} (the floor), precision {perfect['precision']:.0%}, recall "
            f"{perfect['recall']:.0%}, coverage {perfect['coverage']:.0%}, density {perfect['density']:.2f}")


def format_table(result: dict) -> str:
    """The tour's table as aligned text (also used for the README), a recipe line per family below it,
    and the budget check."""
    header, lines = table_header(result), table_rows(result)
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    perfect = perfect_model_line(result)
    if perfect:
        out.append(perfect)
    if all("recipe" in r for r in result["families"]):      # tour.json files before recipes lack them
        out.append("\nrecipes (chosen by measurement; see docs/recipes.md):")
        out += [f"  {r['family']}: {_settings_text(r['recipe'])}" + (f"  ({r['note']})" if r.get("note") else "")
                for r in result["families"]]
    if len(result.get("lanes", [])) > 1:        # tour.json files before lanes lack them
        out.append(f"\ntrained side by side in {len(result['lanes'])} lanes (a one-thread process per core): "
                   + " | ".join(", ".join(lane) for lane in result["lanes"]))
    budget = result["minutes"] * 60
    within = result["seconds"] <= budget * (1 + BUDGET_TOLERANCE)
    out.append(f"\nwhole tour: {result['seconds']:.0f} s of a {budget:.0f} s budget "
               f"({'within' if within else 'OVER'} the budget + {BUDGET_TOLERANCE:.0%})")
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:2] != ["--lane"] or len(sys.argv) != 3:
        sys.exit("usage: python -m minigen.tools.tour --lane SPEC (run by `minigen tour`, one process per lane)")
    _train_lane(json.loads(sys.argv[2]))
