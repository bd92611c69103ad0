"""The one training loop every model family shares (read it top to bottom).

A run directory holds everything about one training run:

    config.json      what was asked for (model, its hyper-parameters, data, seed)
    state.json       how far it got: starting, training, finished or failed (minigen.rundir)
    metrics.jsonl    one JSON line per logged step and per finished epoch
    checkpoint.npz   model, optimisers, EMA, RNG and data-loader state, epoch/step, the epoch's running sums
    train.lock       who trains here now (pid, host); held with flock, so a killed process frees it
    samples.png      the latest samples; loss.png the loss curve; plus each family's figures
    generation.gif   how the family generates, animated (the families that have an animation)
    index.html       the run on one page, with curves.png of every logged number (written by the
                     callers of train(): `minigen train`, the tour; minigen/tools/report.py)

Checkpoints are written atomically (temp file, fsync, rename), at the end of
every epoch, every `checkpoint_minutes` within one, and when the run is
interrupted, so `--resume RUN_DIR` continues exactly where it stopped: the same
next batch, the same noise, bit for bit. A crash (kill -9, a power cut) can leave
metrics.jsonl ahead of the checkpoint; resuming first cuts it back to the
checkpoint's step, so no step is logged twice. A run killed before its first
checkpoint has nothing to continue: the same `minigen train` command starts it again
in place. Every file read back is checked first (minigen.rundir, minigen.serialize).
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

import minigen
from minigen import data as mdata
from minigen.errors import CheckpointError, ConfigError, MinigenError
from minigen.kernels import plan
from minigen.models import FAMILIES, get_family
from minigen.optim import LR_DECAYS, lr_factor
from minigen.random import Generator, default_generator, manual_seed
from minigen.rundir import (METRICS, SUMMARY, check_report_inputs, read_json, read_metrics, read_state, require,
                            write_state)
from minigen.serialize import TEMP_PREFIX, atomic_write, load, save

__all__ = ["TrainOptions", "train", "load_run", "read_config", "options_from_run", "read_metrics", "RunLock",
           "TrainingStopped", "CONFIG", "METRICS", "CHECKPOINT", "LOCK"]

CONFIG, CHECKPOINT, LOCK = "config.json", "checkpoint.npz", "train.lock"


class TrainingStopped(MinigenError):
    """Training stopped on purpose (a signal, a non-finite loss); carries the exit status."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


@dataclass
class TrainOptions:
    """Everything `minigen train` takes. Model hyper-parameters go in `model_config`."""
    model: str
    out: str
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int = 5
    batch_size: int | None = None        # None: the family's default
    lr: float | None = None              # None: the family's default
    seed: int = 0
    conditional: bool = False
    model_config: dict = field(default_factory=dict)
    train_n: int | None = None           # use only the first N training images (quick experiments, tests)
    max_steps: int | None = None         # stop early after this many steps in total (tests, tours)
    max_seconds: float | None = None     # or after this much training time
    # Learning-rate schedule (minigen.optim.lr_factor). The defaults keep the family's constant lr, sound
    # for long runs; short budgeted runs (the tour) converge faster with a warm-up and a cosine decay
    # that reaches 0 exactly when the budget (max_seconds, else max_steps, else the epochs) runs out.
    warmup_steps: int = 0                # lr rises linearly over this many steps (0: none)
    lr_decay: str = "none"               # "none" or "cosine"
    log_every: int = 20
    checkpoint_minutes: float = 5.0      # also checkpoint within an epoch this often (0: after every step)
    eval_n: int = 1000                   # test images used by evaluate() at the end (0: skip)
    n_samples: int = 40
    detect_anomaly: bool = False
    progress: bool = True
    command: str | None = None           # the command line that started the run (for its report)

    def check(self) -> None:
        for name in ("epochs", "log_every"):
            if getattr(self, name) <= 0:
                raise MinigenError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(self, name)}")
        if self.train_n is not None and self.train_n <= 0:
            raise MinigenError(f"--train-n must be a positive integer, got {self.train_n}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise MinigenError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            raise MinigenError(f"--lr must be positive, got {self.lr}")
        if self.seed < 0:
            raise MinigenError(f"--seed must be a non-negative integer, got {self.seed}")
        if not self.checkpoint_minutes >= 0:
            raise MinigenError(f"--checkpoint-minutes must be a non-negative number, got {self.checkpoint_minutes}")
        if self.warmup_steps < 0:
            raise MinigenError(f"--warmup-steps must be a non-negative integer, got {self.warmup_steps}")
        if self.lr_decay not in LR_DECAYS:
            raise MinigenError(f"--lr-decay must be one of {', '.join(LR_DECAYS)}, got {self.lr_decay!r}")
        get_family(self.model)   # unknown model: a clear error now, not after loading data


# --- the run directory ---------------------------------------------------------------
class RunLock:
    """While held, no other process trains in the run directory: `train.lock` there, flock()ed and holding
    {"pid", "host"} of its owner for the message a second process gets. The kernel drops an flock when its
    process dies, however it dies, so a lock left by a crashed run is simply taken over by the next one.
    The file itself stays (deleting it would let two processes lock two different files)."""

    def __init__(self, run_dir: str):
        import fcntl
        self.path = os.path.join(run_dir, LOCK)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise MinigenError(f"run directory {run_dir} is in use: {self._owner()} is training there "
                               f"(lock {self.path}); wait for it to finish or stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
        self.fd = fd

    def _owner(self) -> str:
        try:
            with open(self.path) as f:
                owner = json.load(f)
            return f"process {owner['pid']} on {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)          # closing the last descriptor drops the flock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _prepare_run_dir(out: str, model: str, resuming: bool) -> RunLock:
    """Create `out` (or check the one we resume) without ever overwriting another run, and lock it.

    A directory whose run never reached a checkpoint holds nothing to continue: a fresh start replaces its
    partial files, and --resume on it says what happened and what to run instead.
    Returns the held RunLock. Holding it, we also remove what a process killed in an atomic write leaves:
    its temp file (train() then cuts metrics logged after the last checkpoint: _cut_metrics_to)."""
    config_path = os.path.join(out, CONFIG)
    if resuming and not os.path.lexists(config_path):
        raise MinigenError(f"--resume {out}: no {CONFIG} there, so it is not a minigen run directory")
    try:
        os.makedirs(out, exist_ok=True)
        lock = RunLock(out)
    except OSError as e:
        raise MinigenError(f"cannot write to run directory {out}: {e.strerror}") from None
    try:
        for name in os.listdir(out):
            if name.startswith(TEMP_PREFIX):
                os.unlink(os.path.join(out, name))
        checkpointed = os.path.lexists(os.path.join(out, CHECKPOINT))
        if os.path.lexists(config_path) and (checkpointed or resuming):
            owner = read_config(out)["model"]
            if owner != model:
                raise MinigenError(f"run directory {out} belongs to a '{owner}' run, not '{model}'; "
                                   f"choose another --out")
            if not resuming:
                raise MinigenError(f"run directory {out} already holds a '{model}' run; continue it with "
                                   f"`minigen train --resume {out}` or choose another --out")
        if resuming and not checkpointed:
            raise MinigenError(_never_checkpointed(out))
        if os.path.lexists(config_path) and not checkpointed:
            print(f"minigen: {out} holds a run that never reached a checkpoint; starting it again there",
                  file=sys.stderr)
            for name in (METRICS, SUMMARY):        # config.json and state.json are rewritten at the start
                if os.path.lexists(os.path.join(out, name)):
                    os.unlink(os.path.join(out, name))
    except BaseException:
        lock.release()
        raise
    return lock


def _never_checkpointed(out: str) -> str:
    """What --resume says about a run directory without a checkpoint: what happened, and what to run."""
    try:
        state, reason = read_state(out) or ("starting", "")
        command = read_config(out)["train"].get("command")
    except MinigenError:
        state, reason, command = "starting", "", None
    happened = f"it failed: {reason}" if state == "failed" else "it was stopped (killed?) before its first one"
    again = f": {command}" if isinstance(command, str) else " (`minigen train MODEL --out " + out + " ...`)"
    return (f"--resume {out}: the run never reached a checkpoint ({happened}), so there is nothing to continue; "
            f"start it again with the same command{again}; that replaces its partial files")


def read_config(run_dir: str) -> dict:
    """RUN_DIR/config.json, checked: "model" a known family, "model_config" an object, "train" an object whose
    known options have TrainOptions' types. Raises MinigenError naming the file and the field."""
    path = os.path.join(run_dir, CONFIG)
    if not os.path.lexists(path):
        raise MinigenError(f"{run_dir} is not a minigen run directory (no {CONFIG})")
    config = read_json(path, "a run's configuration: a JSON object with model, model_config and train")
    require(path, config, "model", str, f"a model family ({', '.join(sorted(FAMILIES))})", lambda m: m in FAMILIES)
    require(path, config, "model_config", dict, "an object of hyper-parameters")
    options = require(path, config, "train", dict, "an object of training options")
    for name, option in TrainOptions.__dataclass_fields__.items():
        if name in options and name not in ("model_config", "progress"):
            kinds = tuple(_JSON_TYPES[t][0] for t in option.type.split(" | "))
            require(path, options, name, kinds, " or ".join(_JSON_TYPES[t][1] for t in option.type.split(" | ")),
                    within="train.")
    return config


_JSON_TYPES = {"int": (int, "an integer"), "float": ((int, float), "a number"), "str": (str, "a string"),
               "bool": (bool, "true or false"), "dict": (dict, "an object"), "None": (type(None), "null")}


def options_from_run(run_dir: str) -> TrainOptions:
    """The TrainOptions a run directory was started with (for --resume), from its checked config.json."""
    config = read_config(run_dir)
    known = set(TrainOptions.__dataclass_fields__) - {"model", "out", "model_config", "progress"}
    opts = TrainOptions(model=config["model"], out=run_dir, model_config=config["model_config"],
                        **{k: v for k, v in config["train"].items() if k in known})
    try:
        opts.check()
    except MinigenError as e:
        raise MinigenError(f"{os.path.join(run_dir, CONFIG)}: field 'train': {e}") from None
    return opts


def _cut_metrics_to(run_dir: str, step: int) -> None:
    """Make metrics.jsonl agree with a checkpoint taken at `step`: drop the records of later steps (logged
    before a crash, and about to be logged again), a line torn by the crash, and the test records of a
    finished run (finishing again logs them afresh). Atomic, like every write."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.lexists(path):
        return
    records = read_metrics(run_dir)
    kept = [r for r in records if r.get("step", 0) <= step and r.get("kind") != "test"]
    with open(path, encoding="utf-8") as f:
        unchanged = f.read() == "".join(json.dumps(r) + "\n" for r in kept)
    if not unchanged:
        atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


def _write_json(path: str, obj) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2).encode()))


def _log(run_dir: str, record: dict) -> None:
    path = os.path.join(run_dir, METRICS)
    try:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
    except OSError as e:        # a full disk names no file; the user needs to know which one
        raise OSError(e.errno, e.strerror, path) from None


# --- checkpoints -----------------------------------------------------------------------
def _save_checkpoint(run_dir, model, optimizers, loader, epoch, step, epoch_sums=None, epoch_count=0) -> str:
    """Everything a resume needs, atomically; `epoch_sums`/`epoch_count`: the running sums of the metrics over
    this epoch's steps so far (a checkpoint within an epoch), so the epoch's record comes out the same."""
    path = os.path.join(run_dir, CHECKPOINT)
    save({
        "model_family": model.family,
        "model": model.state_dict(),
        "extra": model.extra_state(),
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "rng": default_generator().get_state(),
        "loader": loader.state_dict(),
        "epoch": epoch,
        "step": step,
        "epoch_sums": dict(epoch_sums or {}),
        "epoch_count": epoch_count,
    }, path)
    return path


def _restore(path: str, member: str, restore, state) -> None:
    """restore(state), where state is the checkpoint's `member`: anything that does not fit (a crafted or
    foreign checkpoint) is a CheckpointError naming the file and the member."""
    try:
        restore(state)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: member {member!r}: {e}") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as e:
        raise CheckpointError(f"{path}: member {member!r} does not fit this run ({type(e).__name__}: "
                              f"{str(e)[:200]})") from None


def _non_finite_arrays(tree, prefix="") -> list[str]:
    """Names of the float arrays in a nested dict that hold NaN or infinity."""
    bad = []
    for key, value in tree.items():
        if isinstance(value, dict):
            bad += _non_finite_arrays(value, f"{prefix}{key}/")
        elif isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            bad.append(prefix + str(key))
    return bad


def load_run(run_dir: str, allow_non_finite: bool = False, resuming: bool = False):
    """(model, config, checkpoint) of a run directory, the model holding the checkpoint's weights.

    Checks config.json (read_config) and the checkpoint's members: what every use needs (model_family, the
    model's arrays, extra state), and with `resuming` also what training needs (optimizers, rng, loader,
    epoch, step). Weights holding NaN or infinity are refused unless `allow_non_finite`."""
    config = read_config(run_dir)
    path = os.path.join(run_dir, CHECKPOINT)
    ckpt = load(path)
    family = require(path, ckpt, "model_family", str, "the model family's name")
    if family != config["model"]:
        raise CheckpointError(f"{path} holds a '{family}' model but {os.path.join(run_dir, CONFIG)} says "
                              f"'{config['model']}'")
    require(path, ckpt, "model", dict, "an object of the model's arrays",
            lambda m: all(isinstance(v, np.ndarray) for v in m.values()))
    require(path, ckpt, "extra", dict, "an object (the model's extra state, e.g. an EMA)")
    if resuming:
        for member, kinds, expected in (("optimizers", dict, "an object of optimiser states"),
                                        ("rng", dict, "the random generator's state"),
                                        ("loader", dict, "the data loader's state"),
                                        ("epoch", int, "a non-negative integer"),
                                        ("step", int, "a non-negative integer")):
            require(path, ckpt, member, kinds, expected, lambda v: not isinstance(v, int) or v >= 0)
        ckpt.setdefault("epoch_sums", {})          # checkpoints written before the checkpoints within an epoch
        ckpt.setdefault("epoch_count", 0)
        require(path, ckpt, "epoch_sums", dict, "an object of numbers",
                lambda sums: all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums.values()))
        require(path, ckpt, "epoch_count", int, "a non-negative integer", lambda n: n >= 0)
    bad = _non_finite_arrays({"model": ckpt["model"], "extra": ckpt["extra"]})
    if bad and not allow_non_finite:
        raise CheckpointError(f"{path}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} hold(s) NaN or "
                              f"infinity; expected finite weights (--allow-non-finite loads them anyway)")
    try:
        model = get_family(config["model"])(config["model_config"])
    except ConfigError as e:      # e.g. a run written by a minigen whose hyper-parameters differ from ours
        raise ConfigError(f"{os.path.join(run_dir, CONFIG)} (written by minigen {config.get('minigen_version', '?')}) "
                          f"does not fit this minigen {minigen.__version__}: {e}") from None
    _restore(path, "model", model.load_state_dict, ckpt["model"])
    _restore(path, "extra", model.load_extra_state, ckpt["extra"])
    return model, config, ckpt


# --- signals: finish the step, save, then stop ------------------------------------------------
class _GracefulStop:
    """First SIGINT/SIGTERM: remember it (the loop saves and stops after the current step).
    Second: raise KeyboardInterrupt at once (the last good checkpoint is safe: writes are atomic)."""

    def __init__(self):
        self.signum = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nminigen: got {signal.Signals(signum).name}: finishing this step and saving a checkpoint "
              f"(press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def __enter__(self):
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:          # not the main thread: signals stay as they were
            self._previous = {}
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _non_finite(model, metrics: dict) -> str | None:
    """Describe what went non-finite in this step (loss terms, then the first bad gradient), or None."""
    bad_terms = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    bad_params = [name for name, p in model.named_parameters()
                  if (p.grad is not None and not np.isfinite(p.grad).all()) or not np.isfinite(p.data).all()]
    if not bad_terms and not bad_params:
        return None
    terms = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
    where = f"first non-finite parameter or gradient: {bad_params[0]}" if bad_params else "all gradients finite"
    return f"loss terms: {terms}; {where}"


# --- the loop --------------------------------------------------------------------------------
def train(opts: TrainOptions, resume: bool = False):
    """Train (or, with resume=True, continue) the run in `opts.out`. Returns (model, summary dict).

    The convs run with the plan measured on this machine (kernels/plan.py; MINIGEN_PLAN, when set,
    still wins): timing each conv part once costs a bounded fraction of a second on the first step and
    pays it back over a run's thousands of steps."""
    opts.check()
    if not resume:
        config = {**opts.model_config, "conditional": opts.conditional}
        for key, value in (("batch_size", opts.batch_size), ("lr", opts.lr)):
            if value is not None:
                config[key] = value
        manual_seed(opts.seed)                       # model initialisation draws from it
        # checks the hyper-parameters and the memory they need before the run directory is made
        model = get_family(opts.model)(config)
        ckpt = None
    with _prepare_run_dir(opts.out, opts.model, resume):
        if resume:
            model, _, ckpt = load_run(opts.out, resuming=True)
            check_report_inputs(opts.out)
        try:
            with plan.default_mode("measure"):
                return _train_locked(opts, model, ckpt)
        except BaseException as e:
            _record_failure(opts.out, e)
            raise


def _record_failure(run_dir: str, error: BaseException) -> None:
    """state.json: failed, and why (best effort: the error being raised is what the user must see)."""
    reason = "interrupted" if isinstance(error, KeyboardInterrupt) else \
        str(error) if isinstance(error, MinigenError) else f"{type(error).__name__}: {error}"
    try:
        write_state(run_dir, "failed", reason)
    except OSError:
        pass


def _train_locked(opts: TrainOptions, model, ckpt):
    """train(), holding the run directory's lock: the model is built, `ckpt` is None for a fresh run."""
    if ckpt is None:
        _write_json(os.path.join(opts.out, CONFIG),
                    {"model": opts.model, "model_config": model.config, "minigen_version": minigen.__version__,
                     "train": {k: v for k, v in asdict(opts).items() if k not in ("model_config", "progress")}})
        write_state(opts.out, "starting")

    train_set = mdata.load(opts.dataset, "train", opts.data_dir)
    x_train, y_train = mdata.to_float(train_set.images[:opts.train_n]), train_set.labels[:opts.train_n]
    loader = mdata.DataLoader(x_train, y_train, model.hparams.batch_size, shuffle=True, drop_last=True,
                              generator=Generator(opts.seed + 1))   # its own stream: data order
    optimizers = model.make_optimizers()
    base_lrs = {name: opt.lr for name, opt in optimizers.items()}   # before a checkpoint's scheduled lr
    epoch = step = 0
    resumed_sums, resumed_count = {}, 0
    if ckpt is not None:
        path = os.path.join(opts.out, CHECKPOINT)
        for name, opt in optimizers.items():
            _restore(path, f"optimizers/{name}", lambda state, opt=opt: opt.load_state_dict(state),
                     ckpt["optimizers"].get(name))
        _restore(path, "rng", default_generator().set_state, ckpt["rng"])
        _restore(path, "loader", loader.load_state_dict, ckpt["loader"])
        epoch, step = ckpt["epoch"], ckpt["step"]
        resumed_sums, resumed_count = ckpt["epoch_sums"], ckpt["epoch_count"]
        _cut_metrics_to(opts.out, step)        # only now: a resume refused above leaves the log as it was
        print(f"minigen: resuming {opts.out} at epoch {epoch}, step {step}", file=sys.stderr)

    minigen.set_detect_anomaly(opts.detect_anomaly)
    model.train()
    started = time.perf_counter()
    history = [(r["step"], r["loss"]) for r in read_metrics(opts.out) if r.get("kind") == "step"]
    progress = _Progress(opts, len(loader), epoch)
    stop_reason = None
    last_checkpoint = time.monotonic()
    try:
        with _GracefulStop() as stop:
            while loader.epoch < opts.epochs and stop_reason is None:
                epoch = loader.epoch
                sums, count = dict(resumed_sums), resumed_count      # a checkpoint within the epoch carries them
                resumed_sums, resumed_count = {}, 0
                for xb, yb in loader:
                    factor = lr_factor(step, opts.warmup_steps, _progress(opts, step, started, len(loader)),
                                       opts.lr_decay)
                    for name, opt in optimizers.items():
                        opt.lr = base_lrs[name] * factor
                    metrics = model.train_step(xb, yb, optimizers, default_generator())
                    step += 1
                    problem = _non_finite(model, metrics)
                    if problem:
                        raise TrainingStopped(
                            f"non-finite values at step {step} (epoch {epoch + 1}): {problem}. Training stopped; "
                            f"the last good checkpoint in {opts.out} is unchanged. Try a lower --lr, or "
                            f"--detect-anomaly to find the op that produced it.", 1)
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    count += 1
                    if step % opts.log_every == 0:
                        _log(opts.out, {"kind": "step", "step": step, "epoch": epoch, "lr_factor": factor, **metrics})
                        history.append((step, metrics["loss"]))
                    progress.update(metrics)
                    if stop.signum is not None:
                        path = _save_checkpoint(opts.out, model, optimizers, loader, epoch, step, sums, count)
                        raise TrainingStopped(
                            f"interrupted at epoch {epoch + 1}, step {step}; checkpoint saved to {path}. "
                            f"Resume with: minigen train --resume {opts.out}", 128 + stop.signum)
                    if (opts.max_steps is not None and step >= opts.max_steps) or \
                            (opts.max_seconds is not None and time.perf_counter() - started >= opts.max_seconds):
                        stop_reason = "budget"
                        break
                    # within the epoch (after its last batch the epoch's own checkpoint follows at once)
                    if loader.epoch == epoch and time.monotonic() - last_checkpoint >= 60 * opts.checkpoint_minutes:
                        _save_checkpoint(opts.out, model, optimizers, loader, epoch, step, sums, count)
                        last_checkpoint = time.monotonic()
                        write_state(opts.out, "training")
                if count:
                    _log(opts.out, {"kind": "epoch", "step": step, "epoch": epoch,
                                    **{k: v / count for k, v in sums.items()}})
                _save_checkpoint(opts.out, model, optimizers, loader, loader.epoch, step)
                last_checkpoint = time.monotonic()
                write_state(opts.out, "training")
                progress.epoch_done(loader.epoch)
    finally:
        progress.close()
        minigen.set_detect_anomaly(False)

    train_seconds = time.perf_counter() - started
    summary = {"model": opts.model, "epochs": loader.epoch, "steps": step, "train_seconds": train_seconds,
               "parameters": model.num_parameters()}
    summary.update(_finish(opts, model, history))
    _write_json(os.path.join(opts.out, SUMMARY), summary)
    write_state(opts.out, "finished")
    return model, summary


def _progress(opts: TrainOptions, step: int, started: float, steps_per_epoch: int) -> float:
    """How much of the run is done, in [0, 1], for the lr schedule: the larger of elapsed / max_seconds
    (when a time budget is set, so a time-budgeted schedule ends with the budget) and
    step / (max_steps, else the steps of all the epochs) - whichever stop comes first."""
    total_steps = opts.max_steps if opts.max_steps is not None else opts.epochs * max(steps_per_epoch, 1)
    done = step / total_steps
    if opts.max_seconds is not None:   # a budget of 0 s (a tour whose budget is spent) is all done at once
        done = max(done, (time.perf_counter() - started) / opts.max_seconds if opts.max_seconds > 0 else 1.0)
    return min(done, 1.0)


def _finish(opts: TrainOptions, model, history) -> dict:
    """After training: test metrics, samples and pictures into the run directory."""
    from minigen.plots import save_grid, save_loss_curve
    model.eval()
    results = {}
    if history:
        save_loss_curve({"loss": history}, os.path.join(opts.out, "loss.png"))
    gen = Generator(opts.seed + 2)
    if opts.eval_n > 0:
        test = mdata.load(opts.dataset, "test", opts.data_dir)
        x_test, y_test = mdata.to_float(test.images[:opts.eval_n]), test.labels[:opts.eval_n]
        results["test"] = model.evaluate(x_test, y_test, generator=gen)
        _log(opts.out, {"kind": "test", **results["test"]})
        model.figures(opts.out, x_test, y_test, generator=gen)
    if opts.n_samples > 0 and model.generates:
        labels = np.arange(opts.n_samples) % 10 if model.conditional else None
        t0 = time.perf_counter()
        samples = model.sample(opts.n_samples, labels=labels, generator=gen)
        results["sample_seconds_per_image"] = (time.perf_counter() - t0) / opts.n_samples
        save_grid(samples, os.path.join(opts.out, "samples.png"), nrow=10,
                  title=f"{opts.model} samples" + (f" (columns: {_columns(opts.dataset)} 0-9)" if model.conditional
                                                   else ""))
        _animation(model, os.path.join(opts.out, "generation.gif"), gen)
    return results


def _columns(dataset: str) -> str:
    """What a sample grid's ten columns are, in words: "digits" or "classes"."""
    return "digits" if mdata.label_noun(dataset) == "digit" else "classes"


def _animation(model, path: str, generator) -> None:
    """generation.gif for the families that have an animation; a notice where this run has none to show."""
    from minigen.animate import animate
    from minigen.models.base import animated_families
    if model.family in animated_families():
        try:
            animate(model, path, generator=generator)
        except MinigenError as e:
            print(f"minigen: no generation.gif: {e}", file=sys.stderr)


class _Progress:
    """A tqdm bar over the steps of each epoch showing the running loss (silent when disabled)."""

    def __init__(self, opts: TrainOptions, steps_per_epoch: int, epoch: int):
        self.bar = None
        if opts.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=steps_per_epoch * opts.epochs, initial=steps_per_epoch * epoch,
                            desc=f"{opts.model}", unit="step", dynamic_ncols=True, file=sys.stderr)
        self.loss = None

    def update(self, metrics: dict) -> None:
        # an exponential moving average reads better than the noisy per-batch loss
        loss = metrics["loss"]
        self.loss = loss if self.loss is None else 0.95 * self.loss + 0.05 * loss
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{self.loss:.4g}", refresh=False)

    def epoch_done(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.set_description(f"{self.bar.desc.split(' ')[0]} epoch {epoch}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
