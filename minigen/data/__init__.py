"""The data layer: IDX files, datasets (MNIST, Fashion-MNIST, mnist-5k), transforms and batching.

    from minigen.data import load, to_float, DataLoader
    train = load("mnist-5k", "train")          # images (5000, 28, 28) uint8, labels (5000,) int64
    x = to_float(train.images)                 # (5000, 1, 28, 28) float32 in [0, 1]
    for xb, yb in DataLoader(x, train.labels, batch_size=128, generator=Generator(1)):  # minigen.random.Generator
        ...
"""
from minigen.data.datasets import NAMES, Dataset, cache_dir, class_names, describe, fetch, label_noun, load
from minigen.data.idx import read_idx, write_idx
from minigen.data.loader import (DataLoader, binarize_dynamic, binarize_fixed, dequantize_uniform,
                                 to_float, to_symmetric)

__all__ = ["NAMES", "Dataset", "cache_dir", "class_names", "describe", "fetch", "label_noun", "load", "read_idx", "write_idx",
           "DataLoader", "binarize_dynamic", "binarize_fixed", "dequantize_uniform", "to_float",
           "to_symmetric"]
