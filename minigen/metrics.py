"""Sample-quality yardsticks: the Frechet distance between feature statistics, and label accuracy.

FID-MNIST. Push real and generated digits through a fixed network (our small
MNIST classifier, `minigen.models.classifier`), fit a Gaussian to each set's
128-d penultimate features, and measure the Frechet (2-Wasserstein) distance
between the two Gaussians:

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

Lower is better; 0 means identical statistics. This is the recipe of the usual
FID, but with a different feature network, so the numbers are NOT comparable
with Inception-FID values from papers; compare minigen models with each other.

Label accuracy. For a conditional model: ask for digit k, classify what came
back, count how often the classifier says k.

FID folds fidelity (are the samples like real digits?) and diversity (do they
spread over all the real digits?) into one number. Four k-nearest-neighbour
measures on the same 128-d features keep them apart (`fidelity_diversity`).
Each real feature gets a ball reaching its k-th nearest real neighbour, each
sample one reaching its k-th nearest sample (k = 5):

    precision  (Kynkaanniemi et al. 2019) fraction of samples inside some real ball:
               are the samples realistic?
    recall     (same paper) fraction of reals inside some sample ball: can the
               model draw every kind of real digit?
    density    (Naeem et al. 2020) real balls around a sample, averaged, / k: like
               precision but counts how deep in the real data each sample sits, so
               one odd real outlier cannot vouch for a bad sample; ~1 for a
               perfect model, can exceed 1
    coverage   (same paper) fraction of reals with a sample inside their own ball:
               like recall, but judged on the real balls, so a few outlying
               samples with huge balls cannot fake it

A model that draws one good 7 every time it is asked for a 7 scores 100% label
accuracy and high precision, but low recall and coverage; per-digit coverage
(`fidelity_diversity_by_class`) says which digit collapsed. `fid_floor` is the
FID of held-out real images: the best score a model can get at that sample
count (FID is biased upwards for small N).

`yardstick()` returns the classifier, trained once and cached.

`yardstick()` returns the classifier, trained once and cached. On Fashion-MNIST the same recipe
runs with a classifier trained on Fashion-MNIST: the numbers are named for the data the
yardstick saw (`fid_name`: FID-MNIST, FID-Fashion), though results keep the key "fid_mnist".
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from minigen.errors import CheckpointError, MinigenError, ShapeError
from minigen.random import Generator

__all__ = ["frechet_distance", "feature_statistics", "fid_mnist", "fid_floor", "fid_name", "fidelity_diversity",
           "fidelity_diversity_by_class", "label_accuracy", "sample_quality", "score_samples", "yardstick",
           "yardstick_path", "train_classifier"]

SAMPLE_CHUNK = 250   # images per model.sample call in sample_quality: bounds memory for any family
NEIGHBOURS = 5       # k of the k-NN balls: the papers' choice (Naeem et al. show k = 5 near its best)
DISTANCE_CHUNK = 1024   # rows per block of pairwise distances: a 1024 x 10,000 float64 block is 80 MB


def _psd_eigenvalues_floor(values: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with rounding noise set to zero: those below d * eps * largest.

    Why not just clip at zero: a zero eigenvalue comes out as +-1e-16 * largest, and its square root
    (1e-8) is far bigger than the noise itself; summed over many null directions that would bias the
    distance by ~1e-6 relative."""
    tol = len(values) * np.finfo(values.dtype).eps * max(np.abs(values).max(initial=0.0), 1e-300)
    return np.where(values > tol, values, 0.0)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(_psd_eigenvalues_floor(values))) @ vectors.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2). mu: (D,), cov: (D, D).

    tr (S1 S2)^(1/2) is computed as the sum of the singular values of A1 A2, with Ai = Si^(1/2) (the
    symmetric PSD square roots, from `eigh`): (A1 A2)(A1 A2)^T = A1 S2 A1 is similar to S1 S2, so its
    eigenvalues' square roots are those singular values. Every step works on symmetric matrices or
    singular values, so the result stays real and finite when the covariances are singular (fewer samples
    than dimensions, dead ReLU features), where the general sqrtm of the non-symmetric S1 S2 breaks down;
    and taking singular values of A1 A2 rather than eigenvalues of A1 S2 A1 avoids squaring the
    condition number, which would bury the small eigenvalues in rounding noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    for name, arr, shape in (("mu1", mu1, (d,)), ("mu2", mu2, (d,)), ("cov1", cov1, (d, d)), ("cov2", cov2, (d, d))):
        if arr.shape != shape:
            raise ShapeError(f"frechet_distance: expected mu1, mu2 of shape (D,) and cov1, cov2 of shape (D, D); "
                             f"{name} has shape {arr.shape} (D = {mu1.shape})")
    for name, arr in (("mu1", mu1), ("mu2", mu2), ("cov1", cov1), ("cov2", cov2)):
        if not np.all(np.isfinite(arr)):
            raise MinigenError(f"frechet_distance: {name} contains NaN or infinite values")
    trace_sqrt = np.linalg.svd(_sqrt_psd(cov1) @ _sqrt_psd(cov2), compute_uv=False).sum()
    diff = mu1 - mu2
    # rounding can make a distance of exactly zero come out as -1e-13
    return max(float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * trace_sqrt), 0.0)


def feature_statistics(images, classifier) -> tuple[np.ndarray, np.ndarray]:
    """(mean (128,), covariance (128, 128)) of the classifier's features of images (N, 1, 28, 28), N >= 2."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) < 2:
        raise ShapeError(f"feature_statistics: need at least 2 images of shape (N, 1, 28, 28) to estimate a "
                         f"covariance, got shape {images.shape}")
    return _moments(classifier.features(images))


def _moments(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), covariance (D, D)) of features (N, D), in float64."""
    feats = np.asarray(feats, np.float64)
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def fid_mnist(samples, reference_images, classifier) -> float:
    """FID-MNIST between generated samples and real reference images, both (N, 1, 28, 28) in [0, 1].

    Like Inception-FID it is biased upwards for small N; use the same N when comparing models
    (the usual setting is 10,000 samples against the 10,000 test images).
    """
    return frechet_distance(*feature_statistics(samples, classifier),
                            *feature_statistics(reference_images, classifier))


def fid_floor(held_out_images, reference_images, classifier) -> float:
    """FID-MNIST of real held-out images (N, 1, 28, 28) against reference_images: what a perfect model
    scores with N samples, the floor to read a table's FIDs against (FID is biased upwards for small N).
    A held-out image that is also a reference would pull it towards 0: that is refused."""
    held_out, reference = np.asarray(held_out_images), np.asarray(reference_images)
    shared = {image.tobytes() for image in reference} & {image.tobytes() for image in held_out}
    if shared:
        raise MinigenError(f"fid_floor: {len(shared)} of the {len(held_out)} held-out images are also reference "
                           f"images; the floor needs real images the references do not hold")
    return fid_mnist(held_out, reference, classifier)


# --- precision, recall, density, coverage --------------------------------------------------------
def _check_features(where: str, name: str, feats, k: int, dim: int | None = None) -> np.ndarray:
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
        raise ShapeError(f"{where}: {name} must be features of shape (N, {dim or 'D'}), got {feats.shape}")
    if len(feats) < k + 1:
        raise ShapeError(f"{where}: {name} needs at least k + 1 = {k + 1} points (each point's ball reaches its "
                         f"k-th nearest other point), got {len(feats)}")
    if not np.all(np.isfinite(feats)):
        raise MinigenError(f"{where}: {name} contains NaN or infinite values")
    return feats


def _squared_distances(a: np.ndarray, b: np.ndarray, b_norms: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 for a (n, D), b (m, D) -> (n, m); b_norms: |b_j|^2 (m,). One matrix product: the
    difference array (n, m, D) would not fit for 10k x 10k; clipped at 0 against rounding."""
    return np.maximum((a * a).sum(1)[:, None] + b_norms[None, :] - 2 * a @ b.T, 0.0)


def _kth_neighbour_radii2(feats: np.ndarray, k: int) -> np.ndarray:
    """(N,) squared distance of each point of feats (N, D) to its k-th nearest other point (itself, at
    distance 0, is index 0 of the sorted row; a duplicate point counts as a neighbour)."""
    norms = (feats * feats).sum(1)
    return np.concatenate([np.partition(_squared_distances(feats[s:s + DISTANCE_CHUNK], feats, norms), k, axis=1)[:, k]
                           for s in range(0, len(feats), DISTANCE_CHUNK)])


def _neighbourhood_counts(real_feats, fake_feats, k):
    """The per-point facts the four metrics average, one pass over the real-fake distances in blocks.

    Returns (fake_in_real_balls (M,) int: how many real balls hold each fake, real_in_fake_ball (N,) bool,
    real_covered (N,) bool: a fake lies inside the real's own ball). Balls are open (distance < radius), as
    in Naeem et al.'s code: identical sets give density exactly 1."""
    real_r2, fake_r2 = _kth_neighbour_radii2(real_feats, k), _kth_neighbour_radii2(fake_feats, k)
    real_norms = (real_feats * real_feats).sum(1)
    counts = np.zeros(len(fake_feats), np.int64)
    real_in_fake_ball = np.zeros(len(real_feats), bool)
    nearest_fake2 = np.full(len(real_feats), np.inf)
    for s in range(0, len(fake_feats), DISTANCE_CHUNK):
        d2 = _squared_distances(fake_feats[s:s + DISTANCE_CHUNK], real_feats, real_norms)   # (chunk, N)
        counts[s:s + DISTANCE_CHUNK] = (d2 < real_r2[None, :]).sum(1)
        real_in_fake_ball |= (d2 < fake_r2[s:s + DISTANCE_CHUNK, None]).any(0)
        nearest_fake2 = np.minimum(nearest_fake2, d2.min(0))
    return counts, real_in_fake_ball, nearest_fake2 < real_r2


def fidelity_diversity(real_feats, fake_feats, k: int = NEIGHBOURS) -> dict:
    """Precision, recall, density and coverage of fakes against reals (see the module docstring).

    real_feats: (N, D), fake_feats: (M, D) features (the yardstick's: `classifier.features(images)`), both
    with at least k + 1 points. Returns {"precision", "recall", "density", "coverage"}: floats in [0, 1],
    density in [0, N / k]. Memory stays at DISTANCE_CHUNK rows of distances, so 10k x 10k is fine."""
    real_feats = _check_features("fidelity_diversity", "real_feats", real_feats, k)
    fake_feats = _check_features("fidelity_diversity", "fake_feats", fake_feats, k, real_feats.shape[1])
    counts, real_in_fake_ball, real_covered = _neighbourhood_counts(real_feats, fake_feats, k)
    return {"precision": float((counts > 0).mean()), "recall": float(real_in_fake_ball.mean()),
            "density": float(counts.sum() / (k * len(fake_feats))), "coverage": float(real_covered.mean())}


def fidelity_diversity_by_class(real_feats, real_labels, fake_feats, fake_labels, k: int = NEIGHBOURS) -> dict:
    """`fidelity_diversity` of each class's fakes against the same class's reals: {label: metrics} for every
    label among real_labels (N,); fake_labels (M,) are the classes the fakes were asked for. So
    result[3]["coverage"] is the coverage of the real 3s by the samples asked to be 3s. Each class needs at
    least k + 1 reals and k + 1 fakes (ShapeError naming the class otherwise)."""
    real_labels, fake_labels = np.asarray(real_labels), np.asarray(fake_labels)
    for name, labels, feats in (("real", real_labels, real_feats), ("fake", fake_labels, fake_feats)):
        if labels.shape != (len(feats),):
            raise ShapeError(f"fidelity_diversity_by_class: {name}_labels must have shape ({len(feats)},) like "
                             f"{name}_feats, got {labels.shape}")
    result = {}
    for label in np.unique(real_labels):
        try:
            result[int(label)] = fidelity_diversity(np.asarray(real_feats)[real_labels == label],
                                                    np.asarray(fake_feats)[fake_labels == label], k)
        except ShapeError as error:
            raise ShapeError(f"fidelity_diversity_by_class: class {label}: {error}") from None
    return result


def fid_name(dataset: str) -> str:
    """What a Frechet distance on `dataset`'s yardstick is called in tables: "FID-MNIST" (mnist,
    mnist-5k), "FID-Fashion" (fashion-mnist). Its features are that classifier's, so the two never compare."""
    from minigen.data import class_names
    class_names(dataset)                     # an unknown name is a DataError naming the known ones
    return "FID-Fashion" if dataset == "fashion-mnist" else "FID-MNIST"


def label_accuracy(samples, labels, classifier) -> float:
    """Fraction of samples (N, 1, 28, 28) that the classifier reads as the label (N,) they were asked for."""
    labels = np.asarray(labels)
    if labels.shape != (len(samples),):
        raise ShapeError(f"label_accuracy: got {len(samples)} samples but labels of shape {labels.shape}")
    return float((classifier.predict(samples) == labels).mean())


def sample_quality(model, reference_images, generator=None, dataset: str = "mnist-5k", data_dir=None,
                   n: int | None = None, classifier=None, reference_labels=None) -> dict:
    """What `minigen eval --fid` reports for a generative model.

    Draws n samples (default: as many as the reference images) and returns {"fid_mnist", "fid_samples",
    "yardstick_test_accuracy", "precision", "recall", "density", "coverage"}, plus for a conditional model,
    whose samples are asked for the digits 0..9 in turn, "label_accuracy" and, when reference_labels (the
    references' digits) are given and there are more than k of each digit, "digit_coverage": {digit:
    coverage of that digit's references by the samples asked for it}. n and the references need at
    least k + 1 = 6 images for the k-NN metrics. classifier: the judge (default: `yardstick(dataset, data_dir)`).
    Note: binary samples (PixelCNN, NAR draws) are compared with grey-level references, which FID-MNIST
    also counts as a difference."""
    judge = yardstick(dataset, data_dir) if classifier is None else classifier
    n = len(reference_images) if n is None else int(n)
    if n < 2:
        raise ShapeError(f"sample_quality: need at least 2 samples to estimate a covariance, got n={n}")
    labels = np.arange(n) % 10 if model.conditional else None
    samples = np.concatenate([model.sample(min(SAMPLE_CHUNK, n - s), None if labels is None else
                                           labels[s:s + SAMPLE_CHUNK], generator=generator)
                              for s in range(0, n, SAMPLE_CHUNK)])
    return {"fid_samples": n, "yardstick_test_accuracy": getattr(judge, "test_accuracy", None),
            **score_samples(samples, judge.features(reference_images), judge, labels, reference_labels)}


def score_samples(samples, reference_feats, classifier, labels=None, reference_labels=None) -> dict:
    """Everything the yardstick says of samples (N, 1, 28, 28) against real images whose features
    (`classifier.features`) are reference_feats (R, 128): {"fid_mnist", "precision", "recall", "density",
    "coverage"}, plus "label_accuracy" when the samples were asked for labels (N,), and "digit_coverage"
    ({digit: coverage of that digit's references by the samples asked for it}) when reference_labels (R,)
    are given too and every digit has more than k samples and references. The references' features are
    taken, not their images, so a caller scoring several models against one set computes them once."""
    fake_feats = classifier.features(samples)
    result = {"fid_mnist": frechet_distance(*_moments(fake_feats), *_moments(reference_feats)),
              **fidelity_diversity(reference_feats, fake_feats)}
    if labels is not None:
        result["label_accuracy"] = label_accuracy(samples, labels, classifier)
        # each digit needs k + 1 samples and references (a small n has fewer: then no digit_coverage)
        if reference_labels is not None and min(np.bincount(labels, minlength=10).min(),
                                                np.bincount(reference_labels, minlength=10).min()) > NEIGHBOURS:
            by_digit = fidelity_diversity_by_class(reference_feats, reference_labels, fake_feats, labels)
            result["digit_coverage"] = {digit: m["coverage"] for digit, m in by_digit.items()}
    return result


# --- the trained yardstick, cached -------------------------------------------------------------
def yardstick_path(dataset: str) -> Path:
    """$MINIGEN_DATA/yardstick-<dataset>.npz, else ~/.cache/minigen/yardstick-<dataset>.npz."""
    root = os.environ.get("MINIGEN_DATA") or Path.home() / ".cache" / "minigen"
    return Path(root) / f"yardstick-{dataset}.npz"


def train_classifier(dataset: str = "mnist-5k", data_dir=None, epochs: int = 3, seed: int = 0):
    """Train the yardstick classifier on `dataset`'s train split; returns (classifier, test accuracy)."""
    from minigen import data
    from minigen.models.classifier import Classifier

    model = Classifier({}, generator=Generator(seed))
    train = data.load(dataset, "train", data_dir)
    loader = data.DataLoader(data.to_float(train.images), train.labels, model.hparams.batch_size,
                             generator=Generator(seed + 1))
    optimizers = model.make_optimizers()
    while loader.epoch < epochs:
        for xb, yb in loader:
            model.train_step(xb, yb, optimizers)
    test = data.load(dataset, "test", data_dir)
    return model, model.evaluate(data.to_float(test.images), test.labels)["accuracy"]


def yardstick(dataset: str = "mnist-5k", data_dir=None, train_if_missing: bool = True, epochs: int = 3):
    """The trained classifier for `dataset`, from its cache file (see `yardstick_path`), or trained now
    (`epochs` passes, about a minute on 2 cores for mnist-5k) and cached atomically.

    The cached file also records the test accuracy (`classifier.test_accuracy`)."""
    from minigen.models.classifier import Classifier
    from minigen.serialize import load, save

    path = yardstick_path(dataset)
    if path.exists():
        state = load(path)
        if state.get("dataset") != dataset or "model" not in state:
            raise CheckpointError(f"{path}: not a yardstick classifier for {dataset!r}; delete it to retrain")
        model = Classifier(state["config"])
        model.load_state_dict(state["model"])
        model.test_accuracy = float(state["test_accuracy"])
        return model.eval()
    if not train_if_missing:
        raise MinigenError(f"no trained yardstick classifier for {dataset!r} at {path}; call "
                           f"yardstick({dataset!r}) with train_if_missing=True (or `minigen train classifier`) "
                           f"to make one")
    model, accuracy = train_classifier(dataset, data_dir, epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    save({"dataset": dataset, "config": model.config, "model": model.state_dict(), "test_accuracy": accuracy,
          "epochs": epochs}, path)
    model.test_accuracy = accuracy
    return model.eval()
