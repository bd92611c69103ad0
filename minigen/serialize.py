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
import math
import os
import stat
import tempfile
import zipfile

import numpy as np

from minigen.errors import CheckpointError, RunFileError

__all__ = ["save", "load", "atomic_write", "check_regular_file", "FORMAT_VERSION", "TEMP_PREFIX"]

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


def _join(path, meta, arrays, where=""):
    """Rebuild the nested dict `_split` took apart; every array reference must name an array of the file."""
    out = {}
    for key, value in meta.items():
        if isinstance(value, dict) and "__array__" in value:
            if not isinstance(value["__array__"], str) or value["__array__"] not in arrays:
                raise CheckpointError(f"{path}: __meta__ field {where + key!r} refers to an array "
                                      f"{value['__array__']!r} the file does not hold")
            out[key] = arrays[value["__array__"]]
        elif isinstance(value, dict):
            out[key] = _join(path, value, arrays, where + key + _SEP)
        else:
            out[key] = value
    return out


def check_regular_file(path: str) -> None:
    """Raise RunFileError unless `path` is a regular file (or a link to one): reading a FIFO or a device
    blocks or never ends, and a folder cannot be read at all. A missing file is the caller's to report."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise RunFileError(f"{path}: cannot read it ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise RunFileError(f"{path}: expected a regular file, found {_kind_of(mode)}")


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "something that is not a file"


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
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename in (None, tmp):
            # the user knows `path`, not our temp file's name (and a full disk names no file at all)
            raise OSError(e.errno, e.strerror or str(e), path) from None
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


# dtypes a checkpoint member may have: booleans, integers and real floats. Complex numbers, strings, objects
# and structured records are never written by `save` (only __meta__ is a string) and would be cast silently.
_MEMBER_KINDS = "biuf"


def _member_headers(path: str, archive: zipfile.ZipFile) -> dict:
    """{member name: (shape, dtype)} from each .npy header, read before any array is allocated, so a header
    claiming terabytes or a dtype `save` never writes is refused without reading further. Checks each
    member is stored uncompressed (as np.savez writes) and holds exactly the bytes its header claims."""
    headers = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: member {name!r} is compressed; minigen writes uncompressed members")
        with archive.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise CheckpointError(f"{path}: member {name!r} has .npy format version {version}; expected 1.0 "
                                      f"or 2.0")
            shape, _, dtype = read_header(f)
            header_size = f.tell()
        expected_kinds = "U" if name == "__meta__" else _MEMBER_KINDS
        if dtype.kind not in expected_kinds or dtype.hasobject or dtype.fields is not None:
            raise CheckpointError(f"{path}: member {name!r} has dtype {dtype}; expected "
                                  + ("a string" if name == "__meta__" else "booleans, integers or real floats"))
        size = dtype.itemsize * math.prod(shape)
        if header_size + size != info.file_size:
            raise CheckpointError(f"{path}: member {name!r} claims shape {shape} of {dtype} ({size:,} bytes) but "
                                  f"holds {info.file_size - header_size:,} bytes of data")
        headers[name] = (shape, dtype)
    return headers


def load(path) -> dict:
    """Load what `save` wrote. Raises CheckpointError naming the file (and the member) if it is missing, not a
    regular file, truncated, not a minigen file, from an incompatible format version, or holds a member
    `save` never writes (a dtype other than bool/int/real float, a size its header does not account for)."""
    path = os.fspath(path)
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        check_regular_file(path)
        with zipfile.ZipFile(path) as archive:
            headers = _member_headers(path, archive)
            for name, ok, expected in (("__format__", lambda s, d: s == () and d.kind in "iu", "an integer"),
                                       ("__meta__", lambda s, d: s == (), "a JSON string")):
                if name not in headers:
                    raise CheckpointError(f"{path}: not a minigen checkpoint (no {name} inside)")
                if not ok(*headers[name]):
                    raise CheckpointError(f"{path}: member {name!r}: expected {expected}, found an array of shape "
                                          f"{headers[name][0]} and dtype {headers[name][1]}")
            with np.load(path, allow_pickle=False) as data:
                version = int(data["__format__"])
                if version != FORMAT_VERSION:
                    raise CheckpointError(f"{path}: checkpoint format version {version}, but this minigen reads "
                                          f"version {FORMAT_VERSION}")
                meta = json.loads(str(data["__meta__"]))
                if not isinstance(meta, dict):
                    raise CheckpointError(f"{path}: member '__meta__': expected a JSON object, found "
                                          f"JSON of Python type {type(meta).__name__}")
                arrays = {k: data[k] for k in data.files if not k.startswith("__")}
    except (CheckpointError, RunFileError) as e:
        raise CheckpointError(str(e)) from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, RecursionError) as e:
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return _join(path, meta, arrays)
