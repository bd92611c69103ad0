"""Reading back what minigen wrote into a run directory (or a sweep folder), each value checked before use.

Files in a run directory can be torn by a kill, edited by hand, or replaced by anything at all. Every
reader here checks that the file is a regular file (a FIFO would block the read forever), that it parses,
and that each field it hands on has the type the caller needs; anything else is one RunFileError naming
the file, the field and what was expected. The one tolerated fault is a torn last line of metrics.jsonl,
the line a kill in the middle of a write leaves: it is dropped with a warning.

The run's state, in state.json, says how far the run got, for the messages of a later command:

    starting        config.json written, no checkpoint yet
    training        at least one checkpoint written
    finished        summary.json written
    failed          stopped by an error or a signal; "reason" says which

A kill -9 leaves "starting" or "training": the state of the last thing the run wrote.
"""
from __future__ import annotations

import json
import os
import sys

from minigen.errors import RunFileError
from minigen.serialize import atomic_write_text, check_regular_file

__all__ = ["read_json", "require", "read_metrics", "read_summary", "read_eval",
           "check_report_inputs", "write_state", "read_state", "METRICS", "SUMMARY", "EVAL", "STATE", "STATES"]

METRICS, SUMMARY, EVAL, STATE = "metrics.jsonl", "summary.json", "eval.json", "state.json"
STATES = ("starting", "training", "finished", "failed")
_NUMBER = (int, float)


def _type_name(value) -> str:
    return "null" if value is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                         int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


def read_json(path: str, expected: str = "a JSON object", kind: type = dict):
    """The JSON document in `path`, which must be of Python type `kind` (`expected` says so in words).
    Raises RunFileError if the file is missing, not a regular file, not UTF-8 JSON, or of another type."""
    check_regular_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such file; expected {expected}") from None
    except OSError as e:
        raise RunFileError(f"{path}: cannot read it ({e.strerror})") from None
    except (ValueError, RecursionError) as e:       # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RunFileError(f"{path}: not valid JSON ({_first_line(e)}); expected {expected}; "
                           f"was it cut short by a crash or edited by hand?") from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RunFileError(f"{path}: expected {expected}, found {_type_name(value)}")
    return value


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0][:120] if str(error) else type(error).__name__


def require(path: str, document: dict, key: str, kinds, expected: str, check=None, within: str = ""):
    """document[key] (a field of the JSON in `path`; `within` names the object holding it, e.g. "train."),
    which must be present, an instance of `kinds` (a bool is no number) and pass `check` if given; else
    RunFileError naming file, field and `expected`."""
    if key not in document:
        raise RunFileError(f"{path}: no field {within + key!r}; expected {expected} there")
    value = document[key]
    wrong_type = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds))
    if wrong_type or (check is not None and not check(value)):
        shown = json.dumps(value)[:60] if not wrong_type else _type_name(value)
        raise RunFileError(f"{path}: field {within + key!r}: expected {expected}, found {shown}")
    return value


def _as_tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def read_metrics(run_dir: str) -> list[dict]:
    """The records of RUN_DIR/metrics.jsonl ([] if there is none yet), one JSON object per line; a record's
    "step" must be an integer and its "loss" a number (both present in a "kind": "step" record). A torn last
    line (a kill during the write) is dropped with a warning on stderr; a bad line anywhere else is a
    RunFileError naming its number."""
    path = os.path.join(run_dir, METRICS)
    check_regular_file(path)
    if not os.path.exists(path):
        return []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, ValueError) as e:
        raise RunFileError(f"{path}: cannot read it ({_first_line(e)}); expected UTF-8 JSON lines") from None
    records = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        problem = _record_problem(record)
        if problem and number - 1 == last:
            print(f"minigen: warning: {path} line {number} is torn (a crash during a write?); ignoring it",
                  file=sys.stderr)
            continue
        if problem:
            raise RunFileError(f"{path} line {number}: {problem}")
        records.append(record)
    return records


def _record_problem(record) -> str | None:
    """What is wrong with one parsed line of metrics.jsonl, or None: a "step" record needs both fields."""
    if not isinstance(record, dict):
        return "expected a JSON object such as {\"kind\": \"step\", \"step\": 20, \"loss\": 0.5}"
    if record.get("kind") == "step" and not {"step", "loss"} <= set(record):
        return "a \"step\" record needs fields 'step' and 'loss'"
    step, loss = record.get("step", 0), record.get("loss", 0.0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"field 'step': expected a non-negative integer, found {json.dumps(step)[:40]}"
    if not isinstance(loss, _NUMBER) or isinstance(loss, bool):
        return f"field 'loss': expected a number, found {json.dumps(loss)[:40]}"
    return None


def read_summary(run_dir: str) -> dict | None:
    """RUN_DIR/summary.json (what a finished run reports), None if the run has not finished; its "test"
    field, if there, must be an object of numbers."""
    path = os.path.join(run_dir, SUMMARY)
    if not os.path.lexists(path):
        return None
    summary = read_json(path, "the summary a finished run writes (a JSON object)")
    if "test" in summary:
        require(path, summary, "test", dict, "an object of test metrics",
                lambda test: all(isinstance(v, _NUMBER) and not isinstance(v, bool) for v in test.values()))
    return summary


def read_eval(run_dir: str) -> dict | None:
    """RUN_DIR/eval.json (the test metrics `minigen eval` writes), None if there is none."""
    path = os.path.join(run_dir, EVAL)
    return read_json(path, "the test metrics `minigen eval` writes (a JSON object)") if os.path.lexists(path) else None


def check_report_inputs(run_dir: str) -> None:
    """Read what the run's report (minigen.tools.report) reads, so a command that ends with the report refuses a
    damaged file before its work (an evaluation, more training), not after it."""
    read_metrics(run_dir)
    read_summary(run_dir)
    read_eval(run_dir)


def write_state(run_dir: str, state: str, reason: str = "") -> None:
    """Record how far the run got (one of STATES; `reason` says why it failed), atomically."""
    atomic_write_text(os.path.join(run_dir, STATE), json.dumps({"state": state, "reason": reason}) + "\n")


def read_state(run_dir: str) -> tuple[str, str] | None:
    """(state, reason) of the run, or None for a run made before minigen recorded states."""
    path = os.path.join(run_dir, STATE)
    if not os.path.lexists(path):
        return None
    document = read_json(path, "a JSON object {\"state\": ..., \"reason\": ...}")
    state = require(path, document, "state", str, f"one of {', '.join(STATES)}", lambda s: s in STATES)
    return state, require(path, document, "reason", str, "a string")
