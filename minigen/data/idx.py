"""Read and write IDX files, the format MNIST and Fashion-MNIST ship in.

An IDX file is a tiny header followed by raw big-endian numbers:

    bytes 0-1   always 0x00 0x00
    byte  2     dtype code (0x08 = uint8, see `_DTYPES`)
    byte  3     ndim, the number of dimensions
    then        ndim sizes, each a big-endian uint32
    then        prod(sizes) numbers of that dtype, row-major

e.g. `t10k-images-idx3-ubyte` starts 00 00 08 03 | 10000 | 28 | 28 and then
holds exactly 10000*28*28 = 7,840,000 bytes of pixels. Files ending in `.gz`
are gzip-compressed IDX files.

Every problem with a file (missing, bad gzip, wrong magic, truncated, extra
bytes) raises `DataError` with the file name, what was found and what was
expected, because "reshape failed" from deep inside NumPy tells a user nothing.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from minigen.errors import DataError, DTypeError, ShapeError

__all__ = ["read_idx", "write_idx"]

# IDX dtype code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's IDX bytes, decompressed if its name ends in `.gz`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if path.suffix != ".gz":
        return data
    if not data.startswith(_GZIP_MAGIC):
        raise DataError(f"{path.name}: not a gzip file (first bytes {data[:2].hex()}, expected 1f8b); "
                        f"if it is an uncompressed IDX file, drop the .gz from its name")
    try:
        return gzip.decompress(data)
    except EOFError:
        raise DataError(f"{path.name}: gzip stream ends early (file truncated?)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path.name}: corrupt gzip data ({e})") from None


def read_idx(path) -> np.ndarray:
    """Read a raw or `.gz` IDX file.

    Returns an array with the file's shape and dtype in native byte order,
    e.g. (10000, 28, 28) uint8 for `t10k-images-idx3-ubyte.gz`.
    """
    path = Path(path)
    data = _read_bytes(path)
    name = path.name
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes, too short for the 4-byte IDX magic number")
    zeros, code, ndim = data[:2], data[2], data[3]
    if zeros != b"\x00\x00" or code not in _DTYPES or ndim == 0:
        hint = " (it looks gzip-compressed: name it .gz)" if data.startswith(_GZIP_MAGIC) else ""
        raise DataError(f"{name}: bad IDX magic number 0x{data[:4].hex()}{hint}; expected 0x0000, "
                        f"a dtype code ({', '.join(f'0x{c:02x}' for c in _DTYPES)}) and ndim >= 1, "
                        f"e.g. 0x00000803 for uint8 images")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{name}: header declares {ndim} dimensions ({header_len} header bytes) "
                        f"but the file has only {len(data)} bytes (file truncated?)")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    found = len(data) - header_len
    if found != expected:
        what = f"{'x'.join(map(str, shape))} {dtype.newbyteorder('=').name}"
        problem = "file truncated?" if found < expected else f"{found - expected} extra bytes: corrupt file?"
        raise DataError(f"{name}: expected {expected} bytes of data ({what}) after the header, "
                        f"found {found} ({problem})")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # astype copies, so the result is writable and owns native-order memory.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write `array` as an IDX file (gzip-compressed when `path` ends in `.gz`).

    array: any shape with ndim >= 1, dtype one of uint8, int8, int16, int32,
    float32, float64.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DTypeError(f"write_idx({path.name}): IDX cannot store dtype {array.dtype}; "
                         f"expected one of {', '.join(dt.name for dt in codes)}")
    if array.ndim == 0:
        raise ShapeError(f"write_idx({path.name}): IDX needs at least 1 dimension, got a scalar")
    code = codes[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + np.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
