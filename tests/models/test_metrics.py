"""The yardstick: Frechet distance (closed forms, near-singular stability), the classifier, FID-MNIST,
label accuracy and the cached yardstick."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen import metrics
from minigen.errors import MinigenError, ShapeError
from minigen.models import get_family
from minigen.models.classifier import Classifier
from minigen.random import Generator


def random_cov(d, generator, rank=None):
    a = generator.normal((d, rank or d)).astype(np.float64)
    return a @ a.T / (rank or d)


def test_distance_of_a_set_to_itself_is_zero():
    feats = Generator(0).normal((500, 16)).astype(np.float64)
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 12), shift=st.floats(0, 10), seed=st.integers(0, 1000))
def test_a_mean_shift_adds_its_squared_length(d, shift, seed):
    """Same covariance, means differ by delta: d^2 = |delta|^2 exactly."""
    gen = Generator(seed)
    cov = random_cov(d, gen)
    direction = gen.normal((d,)).astype(np.float64)
    delta = shift * direction / np.linalg.norm(direction)
    mu = gen.normal((d,)).astype(np.float64)
    assert metrics.frechet_distance(mu, cov, mu + delta, cov) == pytest.approx(shift ** 2, abs=1e-6 * (1 + shift ** 2))


@settings(max_examples=15, deadline=None)
@given(d=st.integers(1, 12), seed=st.integers(0, 1000))
def test_gaussians_with_diagonal_covariances_match_the_closed_form(d, seed):
    """Diagonal covariances commute: d^2 = |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2."""
    gen = Generator(seed)
    s1, s2 = gen.uniform((d,), 0.1, 3).astype(np.float64), gen.uniform((d,), 0.1, 3).astype(np.float64)
    m1, m2 = gen.normal((d,)).astype(np.float64), gen.normal((d,)).astype(np.float64)
    expected = np.sum((m1 - m2) ** 2) + np.sum((s1 - s2) ** 2)
    got = metrics.frechet_distance(m1, np.diag(s1 ** 2), m2, np.diag(s2 ** 2))
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # a rotation of both Gaussians changes nothing
    q, _ = np.linalg.qr(gen.normal((d, d)).astype(np.float64))
    rotated = metrics.frechet_distance(q @ m1, q @ np.diag(s1 ** 2) @ q.T, q @ m2, q @ np.diag(s2 ** 2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-7, abs=1e-7)


def test_near_singular_covariances_stay_finite_and_exact():
    """Covariances from fewer samples than dimensions are singular (and numerically slightly
    indefinite); the distance must stay real, finite and equal to the closed form."""
    gen = Generator(3)
    d = 64
    feats = gen.normal((10, d)).astype(np.float64)           # rank 9 covariance in 64 dimensions
    cov = np.cov(feats, rowvar=False)
    assert np.linalg.eigvalsh(cov).min() < 0 < np.linalg.eigvalsh(cov).max()   # indefinite by rounding
    mu = feats.mean(0)
    delta = np.zeros(d)
    delta[0] = 2.0
    assert metrics.frechet_distance(mu, cov, mu, cov) == pytest.approx(0, abs=1e-8)
    assert metrics.frechet_distance(mu, cov, mu + delta, cov) == pytest.approx(4.0, abs=1e-8)
    # scaling a singular covariance by c^2: d^2 = tr(S) (1 - c)^2
    assert metrics.frechet_distance(mu, cov, mu, 4 * cov) == pytest.approx(np.trace(cov), rel=1e-8)
    # two different rank-deficient covariances (dead features too): finite and non-negative
    other = random_cov(d, gen, rank=5)
    other[:, :3] = other[:3, :] = 0
    value = metrics.frechet_distance(mu, cov, mu, other)
    assert np.isfinite(value) and value > 0


def test_frechet_distance_rejects_bad_shapes_and_values():
    with pytest.raises(ShapeError, match="cov2 has shape"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))
    with pytest.raises(MinigenError, match="NaN"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.array([0, np.nan]), np.eye(2))


# --- the classifier, FID-MNIST and label accuracy ----------------------------------------
def blobs(n, generator):
    """Two easy synthetic 'digits': class 0 a bright top half, class 1 a bright bottom half."""
    y = generator.integers(0, 2, (n,))
    x = generator.uniform((n, 1, 28, 28), 0, 0.3)
    for k in range(n):
        x[k, 0, 14 * y[k]:14 * y[k] + 14] += 0.7
    return x, y.astype(np.int64)


@pytest.fixture(scope="module")
def trained_classifier():
    model = Classifier({"lr": 3e-3}, generator=Generator(0))
    optimizers = model.make_optimizers()
    gen = Generator(1)
    for _ in range(8):
        xb, yb = blobs(32, gen)
        logged = model.train_step(xb, yb, optimizers, gen)
    assert set(logged) == {"loss", "grad_norm"}
    return model


def test_classifier_is_a_family_that_learns_and_does_not_generate(trained_classifier):
    assert get_family("classifier") is Classifier
    x, y = blobs(64, Generator(9))
    assert trained_classifier.evaluate(x, y)["accuracy"] > 0.95
    assert trained_classifier.features(x).shape == (64, 128)
    with pytest.raises(MinigenError, match="does not generate"):
        trained_classifier.sample(4)


def test_fid_mnist_and_label_accuracy(trained_classifier):
    x, y = blobs(200, Generator(4))
    x_again, _ = blobs(200, Generator(4))
    assert metrics.fid_mnist(x, x_again, trained_classifier) == pytest.approx(0, abs=1e-6)
    same_kind, _ = blobs(200, Generator(5))
    only_zeros = x[y == 0]
    close, far = (metrics.fid_mnist(s, x, trained_classifier) for s in (same_kind, only_zeros))
    assert 0 < close < far
    assert metrics.label_accuracy(x, y, trained_classifier) > 0.95
    assert metrics.label_accuracy(x, 1 - y, trained_classifier) < 0.05
    with pytest.raises(ShapeError, match="labels of shape"):
        metrics.label_accuracy(x, y[:10], trained_classifier)
    with pytest.raises(ShapeError, match="at least 2 images"):
        metrics.fid_mnist(x[:1], x, trained_classifier)


def test_sample_quality_reports_fid_and_label_accuracy_for_conditional_models(trained_classifier):
    from minigen.models.nar import NAR
    reference, _ = blobs(40, Generator(6))
    for conditional in (True, False):
        model = NAR({"hidden": 8, "conditional": conditional}, generator=Generator(0))
        result = metrics.sample_quality(model, reference, Generator(1), n=30, classifier=trained_classifier)
        assert result["fid_samples"] == 30 and result["fid_mnist"] > 0
        assert all(0 <= result[k] <= 1 for k in ("precision", "recall", "coverage")) and result["density"] >= 0
        assert ("label_accuracy" in result) == conditional
        if conditional:
            assert 0 <= result["label_accuracy"] <= 1
    # per-digit coverage needs more than k samples and references of each digit
    model = NAR({"hidden": 8, "conditional": True}, generator=Generator(0))
    many, _ = blobs(80, Generator(7))
    result = metrics.sample_quality(model, many, Generator(1), n=80, classifier=trained_classifier,
                                    reference_labels=np.arange(80) % 10)
    assert sorted(result["digit_coverage"]) == list(range(10))
    assert all(0 <= c <= 1 for c in result["digit_coverage"].values())
    few = metrics.sample_quality(model, many, Generator(1), n=50, classifier=trained_classifier,
                                 reference_labels=np.arange(80) % 10)
    assert "digit_coverage" not in few
    with pytest.raises(ShapeError, match="at least 2 samples"):
        metrics.sample_quality(model, reference, n=1, classifier=trained_classifier)


def test_yardstick_trains_once_then_loads_from_its_cache(tmp_path, monkeypatch, trained_classifier):
    """The caching around training (the real training on mnist-5k takes too long for a unit test:
    a quick stand-in returns the module's classifier)."""
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path))
    calls = []

    def quick_training(dataset, data_dir, epochs):
        calls.append((dataset, data_dir, epochs))
        return trained_classifier, 0.75
    monkeypatch.setattr(metrics, "train_classifier", quick_training)
    with pytest.raises(MinigenError, match="no trained yardstick"):
        metrics.yardstick("mnist-5k", train_if_missing=False)
    assert calls == []
    trained = metrics.yardstick("mnist-5k", epochs=2)
    assert calls == [("mnist-5k", None, 2)] and (tmp_path / "yardstick-mnist-5k.npz").exists()
    loaded = metrics.yardstick("mnist-5k", train_if_missing=False)
    assert len(calls) == 1 and loaded is not trained and loaded.test_accuracy == 0.75
    x = Generator(0).uniform((5, 1, 28, 28))
    np.testing.assert_array_equal(loaded.features(x), trained.features(x))
    with pytest.raises(MinigenError, match="no trained yardstick"):   # one cache file per dataset
        metrics.yardstick("fashion-mnist", train_if_missing=False)


# --- precision, recall, density, coverage ----------------------------------------------------------
def brute_force_prdc(real, fake, k=5):
    """The definitions, written out with full distance matrices (small sets only)."""
    def dist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    real_radius = np.sort(dist(real, real), axis=1)[:, k]      # column 0 is the point itself
    fake_radius = np.sort(dist(fake, fake), axis=1)[:, k]
    d = dist(real, fake)                                         # (N, M)
    inside_real = d < real_radius[:, None]                       # fake j in ball(real i)
    return {"precision": inside_real.any(0).mean(), "recall": (d < fake_radius[None, :]).any(1).mean(),
            "density": inside_real.sum() / (k * len(fake)), "coverage": (d.min(1) < real_radius).mean()}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 60), m=st.integers(6, 60), d=st.integers(1, 8), shift=st.floats(0, 3),
       k=st.integers(1, 5), seed=st.integers(0, 1000))
def test_fidelity_diversity_matches_the_brute_force_definitions(n, m, d, shift, k, seed):
    gen = Generator(seed)
    real = gen.normal((n, d)).astype(np.float64)
    fake = gen.normal((m, d)).astype(np.float64) * 1.5 + shift
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(metrics, "DISTANCE_CHUNK", 7)              # several blocks, a ragged last one
        got = metrics.fidelity_diversity(real, fake, k)
    expected = brute_force_prdc(real, fake, k)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert all(0 <= got[name] <= 1 for name in ("precision", "recall", "coverage")) and got["density"] >= 0


@settings(max_examples=15, deadline=None)
@given(n=st.integers(6, 80), d=st.integers(1, 16), seed=st.integers(0, 1000))
def test_a_set_against_itself_and_against_a_far_away_set(n, d, seed):
    feats = Generator(seed).normal((n, d)).astype(np.float64)
    same = metrics.fidelity_diversity(feats, feats.copy())
    assert (same["precision"], same["recall"], same["coverage"]) == (1.0, 1.0, 1.0)
    # each real ball holds its own copy and k - 1 others; the k-th neighbour's copy lies on the (open) ball's
    # edge, where rounding may put it in or out
    k = metrics.NEIGHBOURS
    assert (k - 1) / k <= same["density"] <= (k + 1) / k
    far = metrics.fidelity_diversity(feats, feats + 1000.0)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 1000), modes=st.integers(1, 3))
def test_a_collapsed_model_is_precise_but_covers_little(seed, modes):
    """Fakes that are copies of a few reals (a model drawing the same few good digits every time)."""
    gen = Generator(seed)
    real = gen.normal((200, 8)).astype(np.float64)
    fake = np.repeat(real[:modes], 100 // modes, axis=0)
    got = metrics.fidelity_diversity(real, fake)
    assert got["precision"] == 1.0
    assert got["recall"] == 0.0                    # the fake balls have radius 0: each mode repeats > k times
    assert got["coverage"] <= 0.2


def test_fidelity_diversity_rejects_bad_shapes_and_too_few_points():
    feats = np.zeros((10, 4))
    with pytest.raises(ShapeError, match=r"real_feats must be features of shape \(N, D\)"):
        metrics.fidelity_diversity(np.zeros((10, 4, 1)), feats)
    with pytest.raises(ShapeError, match=r"fake_feats must be features of shape \(N, 4\), got \(10, 3\)"):
        metrics.fidelity_diversity(feats, np.zeros((10, 3)))
    with pytest.raises(ShapeError, match=r"fake_feats needs at least k \+ 1 = 6 points.*got 5"):
        metrics.fidelity_diversity(feats, feats[:5])
    with pytest.raises(MinigenError, match="NaN"):
        metrics.fidelity_diversity(feats + np.nan, feats)


def test_per_class_metrics_name_the_class_that_collapsed():
    gen = Generator(7)
    centres = 10.0 * np.eye(3)
    real_labels = np.repeat(np.arange(3), 50)
    real = centres[real_labels] + gen.normal((150, 3))
    fake_labels = np.repeat(np.arange(3), 40)
    fake = centres[fake_labels] + gen.normal((120, 3))
    fake[fake_labels == 2] = real[real_labels == 2][0]           # class 2: one real digit, every time
    by_class = metrics.fidelity_diversity_by_class(real, real_labels, fake, fake_labels)
    assert sorted(by_class) == [0, 1, 2]
    assert by_class[0]["coverage"] > 0.8 and by_class[1]["coverage"] > 0.8
    assert by_class[2]["coverage"] < 0.2 and by_class[2]["precision"] == 1.0
    assert by_class[1] == metrics.fidelity_diversity(real[real_labels == 1], fake[fake_labels == 1])
    with pytest.raises(ShapeError, match="class 2: .*fake_feats needs at least"):
        metrics.fidelity_diversity_by_class(real, real_labels, fake[:85], fake_labels[:85])
    with pytest.raises(ShapeError, match=r"fake_labels must have shape \(120,\)"):
        metrics.fidelity_diversity_by_class(real, real_labels, fake, fake_labels[:5])


def test_fid_floor_is_the_fid_of_held_out_reals_and_refuses_shared_images(trained_classifier):
    x, _ = blobs(120, Generator(4))
    floor = metrics.fid_floor(x[:60], x[60:], trained_classifier)
    assert floor == metrics.fid_mnist(x[:60], x[60:], trained_classifier) > 0
    with pytest.raises(MinigenError, match="3 of the 60 held-out images are also reference images"):
        metrics.fid_floor(x[:60], x[57:], trained_classifier)


def test_fid_is_named_for_the_data_its_yardstick_saw():
    assert metrics.fid_name("mnist") == metrics.fid_name("mnist-5k") == "FID-MNIST"
    assert metrics.fid_name("fashion-mnist") == "FID-Fashion"
    with pytest.raises(MinigenError, match="unknown dataset 'cifar'"):
        metrics.fid_name("cifar")
