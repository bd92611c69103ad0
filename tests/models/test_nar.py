"""NAR baseline: it learns the per-class mean image, its draws are independent, its likelihood is exact."""
import math

import numpy as np
import pytest

from minigen.errors import MinigenError, ShapeError
from minigen.models import get_family
from minigen.models.nar import NAR
from minigen.random import Generator


def prototypes():
    """One fixed 0/1 image per digit: the data a per-class mean model can fit exactly."""
    return (Generator(7).uniform((10, 1, 28, 28)) > 0.7).astype(np.float32)


def test_registered():
    assert get_family("nar") is NAR


def test_training_learns_each_class_mean_image():
    protos = prototypes()
    model = NAR({"hidden": 32, "lr": 3e-2}, generator=Generator(0))
    optimizers = model.make_optimizers()
    gen = Generator(1)
    labels = np.arange(10)
    before = model.evaluate(protos, labels)["nll_nats"]
    for _ in range(80):
        y = gen.integers(0, 10, (32,))
        logged = model.train_step(protos[y], y, optimizers, gen)
    assert set(logged) == {"loss", "grad_norm"}
    means = model.sample(10, labels, mean=True)
    assert np.abs(means - protos).max() < 0.1
    assert model.evaluate(protos, labels)["nll_nats"] < 0.05 * before


def test_samples_are_independent_draws_from_the_mean():
    model = NAR({"hidden": 16}, generator=Generator(0))
    labels = np.full(400, 3)
    means = model.sample(400, labels, mean=True)
    assert means.shape == (400, 1, 28, 28) and 0 < means.min() and means.max() < 1
    # the mean depends on the label only (equal up to float32 rounding: BLAS may block rows differently)
    np.testing.assert_allclose(means[0], means[-1], rtol=1e-6, atol=1e-7)
    draws = model.sample(400, labels, Generator(5))
    assert set(np.unique(draws)) == {0.0, 1.0}
    np.testing.assert_array_equal(draws, model.sample(400, labels, Generator(5)))
    # 400 draws per pixel: their average is within 5 standard errors of the probability
    assert np.all(np.abs(draws.mean(axis=0) - means[0]) < 5 * 0.5 / math.sqrt(400))


def test_nll_is_exact_for_known_logits():
    """Zero output layer: every pixel has probability 1/2, so any binary image costs 784 log 2 nats."""
    model = NAR({"hidden": 16}, generator=Generator(0))
    model.output.weight.data[...] = 0
    model.output.bias.data[...] = 0
    x, y = prototypes(), np.arange(10)
    metrics = model.evaluate(x, y)
    assert metrics["nll_nats"] == pytest.approx(784 * math.log(2), rel=1e-6) and metrics["examples"] == 10


def test_unconditional_model_ignores_labels_and_refuses_them_when_sampling():
    model = NAR({"hidden": 16, "conditional": False}, generator=Generator(0))
    x = prototypes()
    a = model.evaluate(x, np.arange(10))["nll_nats"]
    assert model.evaluate(x, np.zeros(10, np.int64))["nll_nats"] == a
    assert model.sample(3, None, Generator(0)).shape == (3, 1, 28, 28)
    with pytest.raises(MinigenError, match="unconditional"):
        model.sample(3, np.arange(3), Generator(0))


def test_figures_write_mean_and_sample_rows(tmp_path):
    paths = NAR({"hidden": 8}, generator=Generator(0)).figures(str(tmp_path), None, None, Generator(0))
    assert len(paths) == 1 and (tmp_path / "nar_mean_and_sample.png").stat().st_size > 0


def test_bad_input_gives_clear_errors():
    model = NAR({"hidden": 16}, generator=Generator(0))
    opt = model.make_optimizers()
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        model.train_step(np.zeros((2, 28, 28), np.float32), np.zeros(2, np.int64), opt, Generator(0))
    with pytest.raises(ShapeError, match="labels must be an integer array"):
        model.train_step(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2), opt, Generator(0))
    with pytest.raises(MinigenError, match=r"labels must be in \[0, 10\)"):
        model.sample(2, np.array([-1, 3]))
    with pytest.raises(MinigenError, match="positive integer"):
        model.sample(0)


def test_ar_vs_nar_demo_draws_its_figure_and_table(tmp_path):
    from minigen.tools.demos.ar_vs_nar import format_table, run
    result = run(out_dir=str(tmp_path), pixelcnn_steps=2, nar_steps=2, batch_size=8, channels=4, num_blocks=1,
                 eval_examples=20, verbose=False)
    assert (tmp_path / "ar_vs_nar.png").stat().st_size > 0 and result["figure"].endswith("ar_vs_nar.png")
    assert [r["model"] for r in result["rows"]] == ["NAR", "PixelCNN"]
    for row in result["rows"]:
        assert row["train_steps"] == 2 and np.isfinite(row["test_nll_nats"]) and row["sample_seconds_per_image"] > 0
    assert "PixelCNN" in format_table(result)
