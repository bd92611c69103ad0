"""Hyper-parameters: each model family declares its knobs once, at the top of its module.

A declaration is a frozen dataclass whose fields are made with `knob(...)`:

    @dataclass(frozen=True)
    class VAEConfig(HyperParameters):
        latent_dim: int = knob(20, 1, 4096, "size of z; 2 gives the latent scatter and manifold pictures")
        variant: str = knob("mlp", doc="encoder/decoder kind", choices=("mlp", "conv"))

The field's annotation is its type (int, float, bool, str, `T | None`, `tuple[int, ...]`),
`knob` gives the default, the allowed range or choices, and a one-line reason. That one
declaration is what `--set`, config.json, checkpoints and `minigen train MODEL --help` read:

    VAEConfig.defaults()                  -> {"latent_dim": 20, ...}   (JSON-able, saved in runs)
    VAEConfig.build("vae", {"lr": 3e-4})  -> a checked VAEConfig, or ConfigError naming key, value, allowed
    VAEConfig.help_lines()                -> one line per knob: name, default, allowed, reason

A family adds `check(self)` for combinations that cannot work (e.g. `groups` not dividing every
entry of `channels`) and `memory_floats(self)` for the memory estimate made before anything is
allocated (see `check_memory`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing

from minigen.errors import ConfigError, MinigenError

__all__ = ["HyperParameters", "knob", "excluded", "check_memory", "available_memory_bytes", "format_bytes",
           "lr_knob", "batch_size_knob", "conditional_knob", "grad_clip_knob", "eval_examples_knob", "seed_knob"]


def knob(default, low=None, high=None, doc: str = "", *, choices=None, length=None):
    """A declared hyper-parameter: default, inclusive range [low, high] (None: unbounded on that side;
    `excluded(v)` for an end that is itself not allowed) or choices, and a one-line reason.
    `length=(min, max)` bounds a tuple's length."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "doc": doc, "choices": choices,
                                                        "length": length})


class excluded(float):
    """A range's end that is itself not allowed: `knob(1e-3, excluded(0), 1, ...)` means 0 < lr <= 1."""


# the knobs every family has (their defaults differ, their meaning does not)
def lr_knob(default: float):
    return knob(default, excluded(0), 10.0, "Adam step size")


def batch_size_knob(default: int):
    return knob(default, 1, 8192, "training examples per optimisation step")


def conditional_knob(default: bool = False, doc: str = "condition on the digit label (set by --conditional)"):
    return knob(default, doc=doc)


def grad_clip_knob(default: float | None):
    return knob(default, excluded(0), None, "max gradient norm; null: no clipping")


def eval_examples_knob(default: int | None):
    return knob(default, 1, None, "test images evaluate() uses; null: every one given")


def seed_knob(doc: str):
    return knob(0, 0, 2**32 - 1, doc)


def _describe_type(kind) -> tuple[type, bool, bool]:
    """annotation -> (element type, None allowed, is a tuple)."""
    optional = False
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        optional, kind = True, args[0]
    if typing.get_origin(kind) is tuple:
        return typing.get_args(kind)[0], optional, True
    return kind, optional, False


def _allowed(field: dataclasses.Field, kind) -> str:
    """What a knob accepts, in words: 'an integer in 1..4096', 'one of mlp, conv', 'a number in (0, 1]'."""
    base, optional, is_tuple = _describe_type(kind)
    m = field.metadata
    if m["choices"] is not None:
        text = "one of " + ", ".join(str(c) for c in m["choices"])
    elif base is bool:
        text = "true or false"
    else:
        noun = {int: "an integer", float: "a number", str: "a string"}[base]
        low, high = m["low"], m["high"]
        if low is None and high is None:
            text = noun
        elif base is int:
            text = f"{noun} >= {low}" if high is None else f"{noun} in {low}..{high}"
        else:
            left, right = "(" if isinstance(low, excluded) else "[", ")" if isinstance(high, excluded) else "]"
            if low is None:
                text = f"{noun} {'<' if right == ')' else '<='} {high:g}"
            elif high is None:
                text = f"{noun} {'>' if left == '(' else '>='} {low:g}"
            else:
                text = f"{noun} in {left}{low:g}, {high:g}{right}"
    if is_tuple:
        lo, hi = m["length"] or (1, None)
        text = f"a list of {lo}{'..' + str(hi) if hi else '+'} entries, each {text}"
    return text + (" or null" if optional else "")


def _coerce(base: type, value):
    """value as `base`, or None when it is not one (JSON gives 1e9 as a float: integral floats are ints)."""
    if base is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if base is int:
        if isinstance(value, int):
            return value
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
        return None
    if base is float:
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    return value if isinstance(value, base) else None


def _in_range(field: dataclasses.Field, value) -> bool:
    m = field.metadata
    if m["choices"] is not None:
        return value in m["choices"]
    low, high = m["low"], m["high"]
    if low is not None and (value < low or (isinstance(low, excluded) and value == low)):
        return False
    return high is None or value < high or (value == high and not isinstance(high, excluded))


class HyperParameters:
    """Base of every family's declaration (a frozen dataclass of `knob` fields); see the module docstring."""

    @classmethod
    def _fields(cls):
        hints = typing.get_type_hints(cls)
        return [(f, hints[f.name]) for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict:
        """{name: default} as plain JSON values (tuples become lists)."""
        return cls().as_dict()

    def as_dict(self) -> dict:
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in dataclasses.fields(self)}

    @classmethod
    def help_lines(cls) -> list[str]:
        """One line per knob: `name  default  allowed  reason`, for `minigen train MODEL --help`."""
        import json
        rows = [(f.name, json.dumps(cls.defaults()[f.name]), _allowed(f, kind), f.metadata["doc"])
                for f, kind in cls._fields()]
        w0, w1 = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        return [f"{a:<{w0}}  {b:<{w1}}  {c}" + (f"; {d}" if d else "") for a, b, c, d in rows]

    @classmethod
    def build(cls, family: str, config: dict | None = None):
        """The defaults updated by `config`, each value checked; ConfigError (one line naming the key, the
        value and what is allowed) for an unknown key, a wrong type, a value out of range, or an impossible
        combination (the family's `check`)."""
        config = dict(config or {})
        fields = cls._fields()
        unknown = sorted(set(config) - {f.name for f, _ in fields})
        if unknown:
            raise ConfigError(f"{family}: unknown hyper-parameter {', '.join(map(repr, unknown))}; "
                              f"expected some of: {', '.join(f.name for f, _ in fields)}")
        values = {}
        for f, kind in fields:
            if f.name not in config:
                continue
            value = config[f.name]
            base, optional, is_tuple = _describe_type(kind)
            bad = ConfigError(f"{family}: {f.name}={_show(value)} is not allowed; expected {_allowed(f, kind)}")
            if value is None:
                if not optional:
                    raise bad
            elif is_tuple:
                lo, hi = f.metadata["length"] or (1, None)
                if not isinstance(value, (list, tuple)) or not lo <= len(value) <= (hi or len(value)):
                    raise bad
                value = tuple(_coerce(base, v) for v in value)
                if any(v is None or not _in_range(f, v) for v in value):
                    raise bad
            else:
                value = _coerce(base, value)
                if value is None or not _in_range(f, value):
                    raise bad
            values[f.name] = value
        hp = cls(**values)
        try:
            hp.check()
        except ConfigError as e:
            raise ConfigError(f"{family}: {e}") from None
        return hp

    def check(self) -> None:
        """Combinations that cannot work: raise ConfigError("key=value ...; needs ...")."""

    def memory_floats(self) -> tuple[int, int]:
        """(parameters, activation floats per training example): the estimate `check_memory` uses.
        An estimate within a small factor is enough: it catches requests that are off by orders of magnitude."""
        raise NotImplementedError

    def eval_memory_floats(self) -> tuple[int, str]:
        """(floats evaluate() holds at once beyond the parameters, the settings that make them, e.g.
        "eval_batch_size=100, iw_samples=100"): the evaluation's part of `check_memory`. The default, for a
        family whose evaluation needs no more than a training batch: nothing."""
        return 0, ""


def _show(value) -> str:
    import json
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- memory: refuse what cannot fit, before allocating any of it ----------------------------------
def available_memory_bytes() -> int | None:
    """Memory this process may still use: MemAvailable (Linux), capped by an address-space limit and by
    MINIGEN_MEMORY_LIMIT; None if none of them is known."""
    limits = [] if (cap := memory_limit_from_env()) is None else [cap]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limits.append(soft)
    except (ImportError, ValueError, OSError):
        pass
    return min(limits) if limits else None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(family: str, hp: HyperParameters, batch_size: int, available: int | None = None) -> int:
    """Estimated bytes to train and then evaluate `hp` on batches of `batch_size`: float32 parameters, their
    gradients and two Adam moments (4 copies, all still held when a run evaluates at its end), plus the larger
    of a training step's activations kept for the backward pass and their gradients (2 copies) and what
    evaluate() holds at once (HyperParameters.eval_memory_floats).
    Raises MinigenError with the estimate when it exceeds the memory available; returns the estimate."""
    params, per_example = hp.memory_floats()
    eval_floats, eval_settings = hp.eval_memory_floats()
    train_floats = 2 * per_example * batch_size
    need = 4 * (4 * params + max(train_floats, eval_floats))
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        if eval_floats > train_floats:
            raise MinigenError(
                f"{family}: evaluating this model would need about {format_bytes(need)} ({params:,} parameters, "
                f"{eval_floats:,} floats at once for {eval_settings}), but only {format_bytes(available)} is "
                f"available; choose smaller evaluation settings")
        raise MinigenError(
            f"{family}: training this model would need about {format_bytes(need)} ({params:,} parameters, "
            f"{per_example:,} activation floats per example, batch_size={batch_size}), but only "
            f"{format_bytes(available)} is available; choose smaller hyper-parameters or batch_size")
    return need


def memory_limit_from_env() -> int | None:
    """MINIGEN_MEMORY_LIMIT (bytes), a cap below the machine's own, e.g. for tests; None if unset."""
    text = os.environ.get("MINIGEN_MEMORY_LIMIT")
    if not text:
        return None
    try:
        return int(float(text))
    except ValueError:
        raise MinigenError(f"MINIGEN_MEMORY_LIMIT={text!r}: expected a number of bytes") from None
