"""MNIST-style datasets: where they are found, downloaded and how they are split.

`load(name, split)` returns a `Dataset` of (N, 28, 28) uint8 images and (N,)
int64 labels. Known names:

mnist
    60,000 train / 10,000 test handwritten digits. Looked for, in order, in
    `data_dir` (if given, ONLY there), the cache `$MINIGEN_DATA/mnist/` (default
    `~/.cache/minigen/mnist/`), then downloaded from public mirrors into the cache,
    each file checked by md5. When none of that works (offline, no data_dir) it
    falls back to `mnist-5k` with one line on stderr.
fashion-mnist
    60,000 / 10,000 Zalando clothing images, same format. Same search as mnist,
    plus Debian's `dataset-fashion-mnist` package folder before downloading.
    No fallback: it is a different dataset.
mnist-5k
    5,000 real MNIST *training* digits (500 per digit) that ship inside minigen
    (minigen/data/mnist-5k/, two IDX files, 0.8 MB; where they come from is in
    its README.md), so it works with no network at all. Its test split is the
    real MNIST test set (found like mnist's, above). The 5k file holds training
    digits only, so the two never overlap.

    Held-out rule when the MNIST test set cannot be found: the test split is the
    LAST 10% of each digit's rows in the file (50 per digit, 500 in all) and the
    train split is the other 4,500; a notice says so on stderr. Train and test
    make the same decision from the same arguments (train asks the same question:
    "can the MNIST test set be found or downloaded?"), so they never overlap.
    It is per digit, not simply the last 500 rows, because the file is sorted
    by label: its last 500 rows are all nines.

A folder given as `data_dir` holds the standard IDX names (see `FILES`),
gzipped or not; a folder with only the t10k pair is fine for split="test".
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minigen.data.idx import read_idx
from minigen.errors import DataError

__all__ = ["Dataset", "load", "describe", "fetch", "cache_dir", "class_names", "label_noun", "NAMES"]

NAMES = ("mnist", "fashion-mnist", "mnist-5k")
SPLITS = ("train", "test")

# What the labels 0..9 of each dataset stand for: the column labels of a grid with one sample per class
_DIGITS = tuple(str(d) for d in range(10))
CLASS_NAMES = {
    "mnist": _DIGITS,
    "mnist-5k": _DIGITS,
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"),      # Zalando's order (Xiao, Rasul and Vollgraf 2017)
}

# (images, labels) file names of each split, as the official releases name them.
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Tried in order; the first that serves a file with the right md5 wins.
MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}

# md5 of the official .gz files, checked on every download.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

# Folders that OS packages install datasets into (looked at before downloading).
# Debian recompresses the files, so their .gz md5s differ from MD5 above even
# though the decompressed contents are the official ones.
SYSTEM_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

# Seconds a download may wait on the network: offline must fail fast, not hang.
DOWNLOAD_TIMEOUT_S = 5

_HELDOUT_FRACTION = 0.1  # mnist-5k: share of each digit held out as test when offline


@dataclass
class Dataset:
    """One split of a dataset.

    images: (N, 28, 28) uint8, pixel values 0..255
    labels: (N,) int64, values 0..9
    source: what the arrays are and where they came from, in words that mean the same on every machine
        (it goes into reports written for others, e.g. the README's tour results): no local path
    location: the file or folder they were read from on this machine (for local messages only)
    """
    images: np.ndarray
    labels: np.ndarray
    name: str
    split: str
    source: str
    location: str

    def __len__(self) -> int:
        return len(self.labels)


class _Unavailable(DataError):
    """The files are not on this machine and could not be downloaded.

    Unlike a corrupt file (a plain DataError the user must fix), this is what
    lets `mnist` fall back to `mnist-5k`.
    """


def cache_dir(name: str) -> Path:
    """Where downloads of `name` go: `$MINIGEN_DATA/<name>`, else `~/.cache/minigen/<name>`."""
    root = os.environ.get("MINIGEN_DATA") or Path.home() / ".cache" / "minigen"
    return Path(root) / name


def class_names(name: str) -> tuple[str, ...]:
    """The names of `name`'s ten labels, in label order: ("0", ..., "9") for the digits,
    ("T-shirt/top", ..., "Ankle boot") for fashion-mnist."""
    _check(name)
    return CLASS_NAMES[name]


def label_noun(name: str) -> str:
    """One label of `name` in running text: "digit" (mnist, mnist-5k) or "class" (fashion-mnist)."""
    return "digit" if class_names(name) == _DIGITS else "class"


def _check(name: str, split: str | None = None) -> None:
    if name not in NAMES:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(NAMES)}")
    if split is not None and split not in SPLITS:
        raise DataError(f"{name}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")


# --- finding IDX files ------------------------------------------------------

def _find_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """(images, labels) paths of `split` in `folder`, each `.gz` or not; None if either is missing."""
    found = []
    for filename in FILES[split]:
        candidates = [folder / filename, folder / filename.removesuffix(".gz")]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def _expected_names(split: str) -> str:
    return " and ".join(FILES[split]) + " (or without .gz)"


def _locate(name: str, split: str, data_dir, download: bool) -> tuple[Path, Path, str]:
    """Find (or download) the IDX pair of `name`/`split`: (images path, labels path, where, in words
    without the folder's path: "data_dir", "cache", "system folder", "downloaded files")."""
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.is_dir():
            raise DataError(f"data_dir {folder}: no such folder; expected a folder holding "
                            f"{_expected_names(split)}")
        pair = _find_pair(folder, split)
        if pair is None:
            raise DataError(f"data_dir {folder}: {name} {split} files missing; expected "
                            f"{_expected_names(split)}")
        return *pair, "data_dir"

    places = [(cache_dir(name), "cache")]
    if name in SYSTEM_DIRS:
        places.append((SYSTEM_DIRS[name], "system folder"))
    for folder, what in places:
        pair = _find_pair(folder, split)
        if pair is not None:
            return *pair, what

    looked = " nor ".join(str(folder) for folder, _ in places)
    if not download:
        raise _Unavailable(f"{name} {split} not in {looked}, and download=False")
    try:
        _download_split(name, split)
    except _Unavailable as e:
        raise _Unavailable(f"{name} {split} not in {looked}, and {e}") from None
    return *_find_pair(cache_dir(name), split), "downloaded files"


def _read_pair(images_path: Path, labels_path: Path, where: str, name: str, split: str) -> Dataset:
    """Read and check an (images, labels) IDX pair as found by `_locate`."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path}: expected images of shape (N, 28, 28) uint8, "
                        f"found {images.shape} {images.dtype}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{labels_path}: expected ({len(images)},) uint8 labels to match "
                        f"{images_path.name}, found {labels.shape} {labels.dtype}")
    if labels.max(initial=0) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {labels.max()}")
    images_word = "digits" if label_noun(name) == "digit" else "images"
    source = f"{name} {split}: {images_path.name} + {labels_path.name} ({len(labels):,} {images_word}, from the {where})"
    return Dataset(images, labels.astype(np.int64), name, split, source, str(images_path.parent))


# --- downloading ------------------------------------------------------------

def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _download_split(name: str, split: str) -> None:
    """Make sure the cache holds both files of `split`, each with the official md5."""
    folder = cache_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    for filename in FILES[split]:
        dest = folder / filename
        if dest.is_file() and _md5(dest) == MD5[name][filename]:
            continue
        failures = []
        for base in MIRRORS[name]:
            try:
                _download(base + filename, dest, MD5[name][filename])
                break
            except (OSError, http.client.HTTPException, DataError) as e:  # URLError is an OSError
                failures.append(f"{base + filename}: {e}")
        else:
            raise _Unavailable(f"download failed ({'; '.join(failures)})")


def _download(url: str, dest: Path, md5: str) -> None:
    """Download `url` to `dest` via a temporary file, renamed only once its md5 matches.

    So a half-downloaded or corrupt file never sits under the real name.
    """
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      leave=False, disable=None) as bar:  # disable=None: no bar when stderr is not a terminal
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(f"md5 {digest.hexdigest()}, expected {md5} (corrupt or changed download)")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(name: str) -> str:
    """Download all four files of `name` into its cache folder; returns a report of where they are."""
    _check(name)
    if name not in MIRRORS:
        return f"{name} needs no download: it ships with minigen ({MNIST_5K_DIR})"
    for split in SPLITS:
        _download_split(name, split)
    files = ", ".join(f for pair in FILES.values() for f in pair)
    return f"{name}: {files} in {cache_dir(name)} (md5 verified)"


# --- mnist-5k ---------------------------------------------------------------

MNIST_5K_DIR = Path(__file__).resolve().parent / "mnist-5k"     # shipped with minigen (package data)
MNIST_5K_NAME = "the mnist-5k files shipped with minigen"   # the data source, in words


def _read_mnist_5k() -> tuple[np.ndarray, np.ndarray, Path]:
    """images (5000, 28, 28) uint8, labels (5000,) int64 (sorted by digit, as shipped), and their folder."""
    images_file, labels_file = (MNIST_5K_DIR / f for f in FILES["train"])
    images, labels = read_idx(images_file), read_idx(labels_file).astype(np.int64)
    if images.shape[1:] != (28, 28) or len(images) != len(labels) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{MNIST_5K_DIR}: expected (N, 28, 28) images and N labels 0..9, found "
                        f"{images.shape} and {labels.shape}")
    return images, labels, MNIST_5K_DIR


def _heldout_mask(labels: np.ndarray) -> np.ndarray:
    """True for the last `_HELDOUT_FRACTION` of each digit's rows (in file order)."""
    mask = np.zeros(len(labels), dtype=bool)
    for digit in np.unique(labels):
        rows = np.flatnonzero(labels == digit)
        mask[rows[len(rows) - int(len(rows) * _HELDOUT_FRACTION):]] = True
    return mask


def _load_mnist_5k(split: str, data_dir, download: bool) -> tuple[Dataset, bool]:
    """The mnist-5k split, and whether it is the offline held-out split (see module docstring)."""
    try:
        test_found = _locate("mnist", "test", data_dir, download)
    except _Unavailable:
        test_found = None
    if test_found is not None and split == "test":
        test = _read_pair(*test_found, "mnist-5k", "test")
        test.source += " (the real MNIST test set)"
        return test, False

    images, labels, path = _read_mnist_5k()
    if test_found is not None:
        return Dataset(images, labels, "mnist-5k", "train",
                       f"mnist-5k train: all {len(labels):,} digits of {MNIST_5K_NAME}", str(path)), False
    heldout = _heldout_mask(labels)
    keep = heldout if split == "test" else ~heldout
    source = (f"mnist-5k {split}: {keep.sum():,} of the {len(labels):,} digits of {MNIST_5K_NAME} (MNIST test set "
              f"not found, so the last {_HELDOUT_FRACTION:.0%} of each digit is held out as test)")
    return Dataset(images[keep], labels[keep], "mnist-5k", split, source, str(path)), True


# --- public entry points ----------------------------------------------------

_NOTICES_SHOWN: set = set()


def _notice(message: str) -> None:
    """Print a data notice on stderr once per process: a trainer reloading data need not repeat it."""
    if message not in _NOTICES_SHOWN:
        _NOTICES_SHOWN.add(message)
        print(message, file=sys.stderr)


def load(name: str, split: str = "train", data_dir=None, download: bool = True) -> Dataset:
    """Load one split of a dataset (see the module docstring for names and search order).

    data_dir: a folder of IDX files to use instead of the cache (mnist, fashion-mnist,
        and for mnist-5k the MNIST test set); it must exist and hold the files.
    download: whether missing files may be fetched from the internet.
    Returns a Dataset with images (N, 28, 28) uint8 and labels (N,) int64.
    """
    _check(name, split)
    if name == "mnist-5k":
        dataset, heldout = _load_mnist_5k(split, data_dir, download)
        if heldout:
            _notice(f"minigen: using {dataset.source}, read from {dataset.location}")
        return dataset
    if name == "fashion-mnist" or data_dir is not None:
        return _read_pair(*_locate(name, split, data_dir, download), name, split)
    try:
        return _read_pair(*_locate("mnist", split, None, download), "mnist", split)
    except _Unavailable as e:
        # Already tried to download: don't try again for the test set.
        dataset, _ = _load_mnist_5k(split, None, download=False)
        _notice(f"minigen: full MNIST unavailable ({e}); falling back to {dataset.source}, read from "
                f"{dataset.location}. "
              f"Get the full set with `minigen data fetch mnist` (needs internet) or pass --data-dir.")
        return dataset


def describe(name: str, data_dir=None) -> str:
    """Multi-line summary of `name` as available here (no download): per split the source,
    shape, dtype, pixel range and label counts."""
    _check(name)
    lines = [name]
    for split in SPLITS:
        try:
            ds = load(name, split, data_dir=data_dir, download=False)
        except DataError as e:
            lines.append(f"  {split}: not available: {e}")
            continue
        counts = np.bincount(ds.labels, minlength=10)
        lines += [
            f"  {split}: {ds.source}",
            f"    read from {ds.location}",
            f"    images {ds.images.shape} {ds.images.dtype}, pixels {ds.images.min()}..{ds.images.max()}; "
            f"labels {ds.labels.shape} {ds.labels.dtype}",
            "    label counts: " + "  ".join(f"{d}: {c}" for d, c in enumerate(counts)),
        ]
    return "\n".join(lines)
