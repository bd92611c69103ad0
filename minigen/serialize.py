"""save / load: nested dicts of arrays and plain values to one `.npz` file, written atomically.

Layout of the file: arrays under their '/'-joined key path ("model/enc.weight"),
everything else (numbers, strings, lists, RNG states) as one JSON document
under "__meta__", and the format version under "__format__".

Atomic: we write to a temporary file beside the target, fsync it, then
os.replace() it over the target. A crash or a full disk at any moment leaves
either the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from minigen.errors import CheckpointError

__all__ = ["save", "load", "atomic_write", "FORMAT_VERSION", "TEMP_PREFIX"]

FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"      # atomic_write's temp files: one left behind can only be from a killed process
_SEP = "/"


def _split(obj, prefix, arrays, meta):
    """Walk nested dicts: arrays go to `arrays`, the rest mirrors the tree in `meta`."""
    for key, value in obj.items():
        key = str(key)
        if _SEP in key:
            raise ValueError(f"save: key {key!r} contains {_SEP!r}, which is reserved as the path separator")
        path = prefix + key
        if isinstance(value, np.ndarray):
            arrays[path] = value
            meta[key] = {"__array__": path}
        elif isinstance(value, dict):
            meta[key] = {}
            _split(value, path + _SEP, arrays, meta[key])
        else:
            meta[key] = value.item() if isinstance(value, np.generic) else value


def _join(meta, arrays):
    out = {}
    for key, value in meta.items():
        if isinstance(value, dict) and "__array__" in value:
            out[key] = arrays[value["__array__"]]
        elif isinstance(value, dict):
            out[key] = _join(value, arrays)
        else:
            out[key] = value
    return out


def new_file_mode() -> int:
    """The permissions any newly created file gets: 0666 less the umask. (tempfile.mkstemp makes its
    files private, 0600; a file renamed into place from one gets these instead.)"""
    mask = os.umask(0)      # the only way to read the umask is to set it, so set it straight back
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write_fn) -> None:
    """Call write_fn(file_object) on a temp file next to `path`, fsync, then rename over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CheckpointError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=os.path.basename(path), dir=folder)
    try:
        os.chmod(tmp, new_file_mode())     # readable by others like any new file, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    """Write text (UTF-8) to `path` atomically, making its folder first if needed."""
    os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save(obj: dict, path) -> None:
    """Save a (nested) dict of NumPy arrays and JSON-able values to `path` (.npz), atomically."""
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a dict (e.g. a state_dict), got {type(obj).__name__}")
    arrays, meta = {}, {}
    _split(obj, "", arrays, meta)
    try:
        meta_json = json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"save: {e}; values must be arrays, dicts, numbers, strings, lists or None") from None
    payload = {"__format__": np.array(FORMAT_VERSION), "__meta__": np.array(meta_json)}
    payload.update(arrays)
    try:
        atomic_write(path, lambda f: np.savez(f, **payload))
    except OSError as e:
        raise CheckpointError(f"could not write {os.fspath(path)}: {e.strerror or e}; "
                              f"any previous file at that path is unchanged") from None


def load(path) -> dict:
    """Load what `save` wrote. Raises CheckpointError naming the file if it is missing, truncated,
    not a minigen file, or from an incompatible format version."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__format__" not in data.files or "__meta__" not in data.files:
                raise CheckpointError(f"{path}: not a minigen checkpoint (no format version inside)")
            version = int(data["__format__"])
            if version != FORMAT_VERSION:
                raise CheckpointError(f"{path}: checkpoint format version {version}, but this minigen reads "
                                      f"version {FORMAT_VERSION}")
            meta = json.loads(str(data["__meta__"]))
            arrays = {k: data[k] for k in data.files if not k.startswith("__")}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({type(e).__name__}: {e})") from None
    return _join(meta, arrays)
