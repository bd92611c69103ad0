"""PixelCNN: causality end to end, fast == naive sampling, determinism, learning, exact likelihoods, errors,
the label map, agreement with the PyTorch twin."""
import importlib.util
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen.errors import DTypeError, MinigenError, ShapeError
from minigen.models import get_family
from minigen.models import pixelcnn
from minigen.models.pixelcnn import PixelCNN
from minigen.random import Generator
from minigen.tensor import Tensor

# (output, conditional, label_map); the ids without a map stay "bernoulli-False" etc. (minigen/tools/assign.py names one)
VARIANTS = [pytest.param(output, conditional, label_map, id=f"{output}-{conditional}" + "-label_map" * label_map)
            for output in ("bernoulli", "categorical256")
            for conditional, label_map in ((False, False), (True, False), (True, True))]


def tiny(output="bernoulli", conditional=False, size=8, channels=6, blocks=3, seed=1, **extra):
    return PixelCNN({"output": output, "conditional": conditional, "image_size": size, "channels": channels,
                     "num_blocks": blocks, **extra}, generator=Generator(seed))


def randomise_label_biases(model, seed=5):
    """Label biases and maps start at zero; make them matter so the conditional path is exercised.
    The map is made positive: it differs per position, and a negative one can switch off every ReLU at
    some position of a 6-channel net, cutting that pixel off from the past."""
    for name, p in model.named_parameters():
        if name.endswith("label_bias"):
            p.data[...] = Generator(seed).normal(p.shape)
        elif name.endswith("label_map"):
            p.data[...] = np.abs(Generator(seed).normal(p.shape))


def bars(n, generator, size=28):
    """Synthetic binary-ish digits: one random horizontal and one vertical bar per image, in [0, 1]."""
    x = np.zeros((n, 1, size, size), np.float32)
    rows, cols = generator.integers(2, size - 2, (n,)), generator.integers(2, size - 2, (n,))
    for k in range(n):
        x[k, 0, rows[k] - 1:rows[k] + 1, 1:-1] = 1
        x[k, 0, 1:-1, cols[k] - 1:cols[k] + 1] = 0.9
    return x


def test_registered():
    assert get_family("pixelcnn") is PixelCNN


@pytest.mark.parametrize("output,conditional,label_map", VARIANTS)
def test_each_logit_depends_only_on_earlier_pixels_end_to_end(output, conditional, label_map):
    """d logit(p) / d x(q) == 0 for every q at or after p in raster order, through the whole network.

    One backward pass: copy k of the batch sends a gradient only from pixel k's logits."""
    size = 6
    model = tiny(output, conditional, size=size, label_map=label_map)
    randomise_label_biases(model)
    n = size * size
    x = Tensor(Generator(2).uniform((1, 1, size, size)).repeat(n, axis=0), requires_grad=True)
    y = np.arange(n) % 10 if conditional else None
    logits = model(x, y)
    upstream = np.zeros(logits.shape, np.float32)
    for k in range(n):
        upstream[k, :, k // size, k % size] = Generator(k).normal((logits.shape[1],))
    logits.backward(upstream)
    grads = x.grad.reshape(n, n)          # row k: d(logits at pixel k) / d(every pixel)
    at_or_after = np.triu(np.ones((n, n), bool))
    assert np.all(grads[at_or_after] == 0), "a logit saw its own pixel or a later one"
    # ...and the network does use the past: every pixel but the first sees some earlier pixel
    assert all(np.any(grads[k, :k] != 0) for k in range(1, n))


@pytest.mark.parametrize("output,conditional,label_map", VARIANTS)
def test_fast_sampling_equals_naive_full_forward_sampling(output, conditional, label_map):
    model = tiny(output, conditional, size=7, blocks=2, label_map=label_map)
    for p in model.parameters():       # larger weights: confident, varied pixels rather than all-grey
        p.data *= 3
    randomise_label_biases(model)
    labels = np.array([0, 3, 3, 9, 1]) if conditional else None
    fast = model.sample(5, labels, Generator(3), temperature=0.8)
    naive = model.sample(5, labels, Generator(3), temperature=0.8, fast=False)
    assert fast.shape == (5, 1, 7, 7) and fast.dtype == np.float32
    np.testing.assert_array_equal(fast, naive)
    assert 0 <= fast.min() and fast.max() <= 1 and len(np.unique(fast)) > 1


def test_sampling_is_deterministic_given_the_seed():
    model = tiny("categorical256", size=6)
    a, b = model.sample(4, None, Generator(11)), model.sample(4, None, Generator(11))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, model.sample(4, None, Generator(12)))
    binary = tiny("bernoulli", size=6).sample(4, None, Generator(11))
    assert set(np.unique(binary)) <= {0.0, 1.0}


def test_sampling_in_chunks_changes_nothing(monkeypatch):
    model = tiny("bernoulli", conditional=True, size=6)
    randomise_label_biases(model)
    whole = model.sample(5, np.arange(5), Generator(4))
    monkeypatch.setattr(pixelcnn, "SAMPLE_CHUNK", 2)
    np.testing.assert_array_equal(model.sample(5, np.arange(5), Generator(4)), whole)


def test_figures_write_a_sample_grid(tmp_path):
    model = tiny(conditional=True, size=6)
    paths = model.figures(str(tmp_path), None, None, Generator(0))
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["pixelcnn_samples.png"]
    assert (tmp_path / "pixelcnn_samples.png").stat().st_size > 0


def test_untrained_output_layer_gives_the_uniform_likelihood_exactly():
    """All-zero output logits: each pixel costs log 2 (Bernoulli) or log 256 = 8 bits (categorical)."""
    x, y = bars(4, Generator(0), size=8), np.zeros(4, np.int64)
    for output, nats_per_pixel in (("bernoulli", math.log(2)), ("categorical256", math.log(256))):
        model = tiny(output, size=8, eval_examples=None)
        model.output.conv.weight.data[...] = 0
        model.output.conv.bias.data[...] = 0
        metrics = model.evaluate(x, y)
        assert metrics["nll_nats"] == pytest.approx(64 * nats_per_pixel, rel=1e-6)
        assert metrics["examples"] == 4
    assert metrics["bits_per_dim"] == pytest.approx(8.0, rel=1e-6)


def test_a_few_training_steps_lower_the_test_nll():
    gen = Generator(0)
    model = tiny(size=14, channels=8, blocks=1, lr=1e-2, eval_examples=None)
    x_test, y_test = bars(16, Generator(99), size=14), np.zeros(16, np.int64)
    before = model.evaluate(x_test, y_test)["nll_nats"]
    optimizers = model.make_optimizers()
    for _ in range(15):
        logged = model.train_step(bars(16, gen, size=14), np.zeros(16, np.int64), optimizers, gen)
    assert set(logged) == {"loss", "grad_norm"} and np.isfinite(logged["loss"])
    after = model.evaluate(x_test, y_test)["nll_nats"]
    assert after < 0.8 * before, (before, after)


def test_bad_input_gives_clear_errors():
    model = tiny(size=8)
    opt = model.make_optimizers()
    good = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ShapeError, match=r"\(N, 1, 8, 8\)"):
        model.train_step(np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64), opt, Generator(0))
    with pytest.raises(DTypeError, match="floats in"):
        model.train_step(good.astype(np.uint8), np.zeros(2, np.int64), opt, Generator(0))
    with pytest.raises(MinigenError, match=r"\[0, 1\]"):
        model.evaluate(good + 2, np.zeros(2, np.int64))
    with pytest.raises(MinigenError, match="unconditional"):
        model.sample(2, np.array([1, 2]), Generator(0))
    with pytest.raises(MinigenError, match='output="gaussian" is not allowed; expected one of bernoulli, categorical256'):
        PixelCNN({"output": "gaussian"})
    with pytest.raises(MinigenError, match="unknown hyper-parameter 'chanels'"):
        PixelCNN({"chanels": 8})
    conditional = tiny(conditional=True, size=8)
    with pytest.raises(MinigenError, match=r"labels must be in \[0, 10\)"):
        conditional.sample(2, np.array([1, 10]), Generator(0))
    with pytest.raises(ShapeError, match="labels must be an integer array"):
        conditional.train_step(good, np.zeros(3, np.int64), conditional.make_optimizers(), Generator(0))
    with pytest.raises(MinigenError, match="label_map=true needs conditional=true"):
        PixelCNN({"label_map": True})


# --- label_map: location-dependent conditioning -------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(position=st.integers(0, 35), digit=st.integers(0, 9))
def test_a_label_map_entry_moves_only_its_digits_logits_at_and_after_its_position(position, digit):
    """The map starts at zero (the model is then the plain conditional one); an entry at (digit, pixel p)
    changes the logits of that digit's images at p and later pixels only, never earlier ones or other digits."""
    size = 6
    plain, mapped = tiny(conditional=True, size=size), tiny(conditional=True, size=size, label_map=True)
    x, y = Tensor(Generator(2).uniform((10, 1, size, size))), np.arange(10)
    before = mapped(x, y).data
    np.testing.assert_array_equal(before, plain(x, y).data)
    mapped.label_map.data[digit, :, position // size, position % size] = 3.0
    moved = np.any(mapped(x, y).data != before, axis=1).reshape(10, -1)     # (image, pixel)
    assert not moved[np.arange(10) != digit].any()
    assert not moved[digit, :position].any() and moved[digit, position]


def test_training_moves_the_label_map_of_the_digits_seen_only():
    model = tiny(conditional=True, size=8, label_map=True)
    optimizers = model.make_optimizers()
    model.train_step(bars(4, Generator(0), size=8), np.array([3, 3, 7, 7]), optimizers, Generator(1))
    changed = np.any(model.label_map.data != 0, axis=(1, 2, 3))
    assert changed.tolist() == [d in (3, 7) for d in range(10)]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs PyTorch (the twin)")
def test_the_pytorch_twin_agrees_on_logits_and_samples():
    import torch
    from benchmarks.twins import pixelcnn as twin
    model = tiny(conditional=True, size=7, blocks=2, label_map=True)
    randomise_label_biases(model)
    net = twin.build(model)
    x, y = Generator(2).uniform((4, 1, 7, 7)), np.array([0, 3, 3, 9])
    with torch.no_grad():
        theirs = net(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(model(Tensor(x), y).data, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.sample(4, y, Generator(3)), twin.sample(net, 4, y, Generator(3)))
