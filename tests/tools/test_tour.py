"""`minigen tour` with a tiny budget: every family trains, samples every digit, and gets a table row."""
import json
import os

import numpy as np
import pytest

from minigen.tools import tour
from minigen.errors import MinigenError

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
FASHION_SYSTEM = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION_SYSTEM),
                                   reason=f"{FASHION_SYSTEM} absent (apt-get install dataset-fashion-mnist)")


@pytest.mark.slow
def test_tiny_tour_produces_every_family(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path / "cache"))     # the yardstick is trained and cached here
    data_dir = SHARED_MNIST if os.path.isdir(SHARED_MNIST) else None
    result = tour.run(minutes=0.2, out_dir=str(tmp_path / "tour"), dataset="mnist-5k", data_dir=data_dir,
                      metric_samples=60, yardstick_epochs=1, eval_n=100, progress=False, lanes=2)
    families = [recipe.family for recipe in tour.FAMILIES]
    # two lanes, each a process of its own, trained every family once between them
    assert len(result["lanes"]) == 2 and sorted(sum(result["lanes"], [])) == sorted(families)
    cores = sorted(os.sched_getaffinity(0))
    for i, lane in enumerate(result["lanes"]):              # each lane pinned to a core of its own (if there are 2)
        log = (tmp_path / "tour" / f"lane-{i}.log").read_text()
        assert f"lane: {', '.join(lane)} on core {cores[i % len(cores)]}, one thread" in log
    assert "trained side by side in 2 lanes" in tour.format_table(result)
    modules = [{"flowmatch": "flow_matching"}.get(f, f) for f in families]     # the one family named apart
    assert [row["module"] for row in result["families"]] == [f"minigen/models/{m}.py" for m in modules]
    for family in families:
        samples = result["samples"][family]
        assert samples.shape == (60, 1, 28, 28), family
        assert samples.dtype == np.float32 and samples.min() >= 0 and samples.max() <= 1, family
    for row in result["families"]:
        assert row["train_steps"] >= 1 and row["parameters"] > 0
        assert np.isfinite(row["fid_mnist"]) and 0 <= row["label_accuracy"] <= 1
        assert all(0 <= row[k] <= 1 for k in ("precision", "recall", "coverage")) and row["density"] >= 0
        assert sorted(row["digit_coverage"]) == list(range(10)) and row["metric_sample_seconds"] > 0
    perfect = result["perfect_model"]                 # real digits in place of samples
    assert perfect["fid_mnist"] > 0 and perfect["precision"] > 0.5 and perfect["coverage"] > 0.5
    likelihoods = {r["family"]: r["likelihood"] for r in result["families"]}
    assert likelihoods["AR (PixelCNN)"]["metric"] == "nll_nats" and likelihoods["AR (PixelCNN)"]["value"] > 0
    assert likelihoods["Flow (Glow)"]["metric"] == "bits_per_dim"
    assert likelihoods["GAN (DCGAN)"] is None
    assert likelihoods["Flow matching"]["metric"] == "bits_per_dim" and likelihoods["Flow matching"]["value"] > 0
    # each row says what bought its quality: steps, and the recipe as the model used it
    recipes = {r.title: r for r in tour.FAMILIES}
    for row in result["families"]:
        recipe = recipes[row["family"]]
        assert row["recipe"]["warmup_steps"] == recipe.warmup_steps and row["recipe"]["lr_decay"] == recipe.lr_decay
        assert row["recipe"]["lr"] == recipe.config.get("lr", row["recipe"]["lr"]) > 0
        for key, value in recipe.sample_options.items():     # e.g. the flow's temperature
            assert row["recipe"][key] == value
    assert "temperature" in recipes["Flow (Glow)"].sample_options      # printed in the table as T
    assert isinstance(result["within_budget"], bool)
    assert result["cores"] == len(os.sched_getaffinity(0))     # a one-core tour (taskset -c 0) says so
    text = tour.format_table(result)
    assert "steps" in text.splitlines()[0] and "coverage" in text.splitlines()[0] and "T 1" in text
    assert "budget" in text.splitlines()[-1] and "a perfect model (60 real training digits" in text
    saved = json.loads((tmp_path / "tour" / "tour.json").read_text())
    assert len(saved["families"]) == len(families) and saved["families"][0]["digit_coverage"]["3"] >= 0
    # the README's tour section quotes it: it names the data, not where it lies on this machine
    assert saved["test_source"].startswith("mnist-5k test: ") and os.sep not in saved["test_source"]
    for name in ("tour_samples.png", "tour_strips.png", "tour_ddpm.gif", "tour_flowmatch.gif", "tour_pixelcnn.gif"):
        assert (tmp_path / "tour" / name).stat().st_size > 1000
    page = (tmp_path / "tour" / "index.html").read_text()          # the whole lecture on one page
    for name in ("tour_samples.png", "tour_ddpm.gif", "tour_pixelcnn.gif", "gan/index.html"):
        assert f'"{name}"' in page
    assert "coverage" in page and "a perfect model" in page
    for family in families:
        assert (tmp_path / "tour" / family / "index.html").is_file()


@pytest.mark.slow
@needs_fashion
def test_tiny_tour_on_fashion_mnist_names_its_classes_and_its_fid(tmp_path, monkeypatch):
    """The whole tour on real Fashion-MNIST images: the first 1,000 training and 300 test images (a data_dir),
    so that the yardstick (trained on the same data, cached under its name) takes seconds."""
    from minigen.data import load, write_idx
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path / "cache"))
    subset = tmp_path / "fashion"
    subset.mkdir()
    for split, prefix, n in (("train", "train", 1000), ("test", "t10k", 300)):
        ds = load("fashion-mnist", split)
        write_idx(subset / f"{prefix}-images-idx3-ubyte", ds.images[:n])
        write_idx(subset / f"{prefix}-labels-idx1-ubyte", ds.labels[:n].astype(np.uint8))
    result = tour.run(minutes=0.2, out_dir=str(tmp_path / "tour"), dataset="fashion-mnist", data_dir=str(subset), lanes=1,
                      metric_samples=60, yardstick_epochs=1, eval_n=50, progress=False)
    assert result["dataset"] == "fashion-mnist" and result["test_source"].startswith("fashion-mnist test: ")
    assert "300 images" in result["test_source"]
    assert (tmp_path / "cache" / "yardstick-fashion-mnist.npz").is_file()
    assert all(np.isfinite(row["fid_mnist"]) for row in result["families"])      # the key stays "fid_mnist"
    assert "FID-Fashion" in tour.format_table(result).splitlines()[0]
    page = (tmp_path / "tour" / "index.html").read_text()
    assert "<th>FID-Fashion</th>" in page and "FID-MNIST" not in page and "every class" in page
    assert (tmp_path / "tour" / "tour_samples.png").stat().st_size > 1000


def test_the_fid_column_is_named_for_the_tours_data():
    assert "FID-MNIST" in tour.table_header({"dataset": "mnist-5k"})
    assert "FID-MNIST" in tour.table_header({})                 # a tour.json from before Fashion-MNIST: no dataset
    fashion = tour.table_header({"dataset": "fashion-mnist"})
    assert "FID-Fashion" in fashion and "FID-MNIST" not in fashion and len(fashion) == len(tour.TABLE_HEADER)


def test_the_table_prints_steps_recipes_and_the_budget_check():
    row = {"family": "Flow (Glow)", "parameters": 1000, "train_steps": 1234, "train_seconds": 60.0,
           "sample_seconds_per_image": 0.001, "likelihood": {"metric": "bits_per_dim", "value": 1.5},
           "fid_mnist": 80.0, "label_accuracy": 0.6, "module": "minigen/models/flow.py", "note": "",
           "recipe": tour.recipe_settings(next(r for r in tour.FAMILIES if r.family == "flow"),
                                          {"lr": 1e-3, "batch_size": 128, "variant": "glow", "hidden_channels": 16,
                                           "prior": "class"})}
    text = tour.format_table({"minutes": 10, "seconds": 640.0, "families": [row]})
    assert "1,234" in text.splitlines()[1]
    assert tour.table_rows({"families": [row]})[0][-4:-1] == ["-", "-", "-"]    # tour.json from before them
    scored = {**row, "precision": 0.9, "recall": 0.55, "coverage": 0.5}
    assert tour.table_rows({"families": [scored]})[0][-4:-1] == ["90%", "55%", "50%"]
    perfect = {"fid_mnist": 3.21, "precision": 0.8, "recall": 0.8, "coverage": 0.95, "density": 1.0}
    text = tour.format_table({"minutes": 10, "seconds": 640.0, "families": [scored], "metric_samples": 500,
                              "perfect_model": perfect})
    assert "a perfect model (500 real training digits in place of samples): FID-MNIST 3.21 (the floor)" in text
    assert ("Flow (Glow): lr 0.001, batch 128, warm-up 100, decay cosine, variant glow, hidden_channels 16, "
            "prior class, T 1") in text
    assert text.splitlines()[-1] == "whole tour: 640 s of a 600 s budget (OVER the budget + 5%)"
    text = tour.format_table({"minutes": 10, "seconds": 629.0, "families": [row]})
    assert text.splitlines()[-1] == "whole tour: 629 s of a 600 s budget (within the budget + 5%)"


def test_a_rerun_replaces_only_what_a_tour_made(tmp_path):
    mine = tmp_path / "vae"
    mine.mkdir()
    (mine / "config.json").write_text("{}")                  # the user's own run, not the tour's
    with pytest.raises(MinigenError, match="did not make"):
        tour.claim_run_dir(str(mine))
    assert (mine / "config.json").exists()
    made = tmp_path / "gan"
    made.mkdir()
    (made / tour.TOUR_MARK).touch()
    (made / "checkpoint.npz").write_bytes(b"old")
    tour.claim_run_dir(str(made))
    assert not made.exists()
    tour.claim_run_dir(str(tmp_path / "new"))                # nothing there: nothing to do


def test_every_recipe_names_a_registered_family_and_every_generator_has_one():
    from minigen.models import FAMILIES
    recipes = [recipe.family for recipe in tour.FAMILIES]
    assert set(recipes) <= set(FAMILIES) and len(set(recipes)) == len(recipes)
    generators = {name for name, cls in FAMILIES.items()          # (tests may register toy families of their own)
                  if cls.generates and cls.__module__.startswith("minigen.models.")}
    assert generators == set(recipes), "a generating family without a tour recipe (or the reverse)"


def test_the_recipe_line_names_each_sampler_by_its_own_name():
    def recipe_text(family, config):
        recipe = next(r for r in tour.FAMILIES if r.family == family)
        return tour._settings_text(tour.recipe_settings(recipe, {"lr": 2e-3, "batch_size": 32, **config}))
    fm = next(r for r in tour.FAMILIES if r.family == "flowmatch")
    assert "Heun steps 2" in recipe_text("flowmatch", {k: {"sample_method": "heun", "sample_steps": 2}.get(k, 1)
                                                       for k in fm.shown})
    ddpm = next(r for r in tour.FAMILIES if r.family == "ddpm")
    text = recipe_text("ddpm", {k: {"sample_steps": 20}.get(k, 1) for k in ddpm.shown})
    assert "DDIM steps 20" in text and "Heun" not in text


def test_lanes_share_out_the_families_so_that_they_end_together():
    for n in (1, 2, 3, len(tour.FAMILIES), 50):
        lanes = tour.split_into_lanes(tour.FAMILIES, n)
        assert len(lanes) == min(n, len(tour.FAMILIES))
        order = [r.family for r in tour.FAMILIES]
        assert sorted(r.family for lane in lanes for r in lane) == sorted(order)          # each family once
        assert all([r.family for r in lane] == [f for f in order if f in {q.family for q in lane}] for lane in lanes)
        seconds = tour.lane_seconds(lanes, 100.0)
        for lane in lanes:           # every lane is busy for the whole training time
            assert sum(seconds[r.family] for r in lane) == pytest.approx(100.0)
    shares = [sum(r.share for r in lane) for lane in tour.split_into_lanes(tour.FAMILIES, 2)]
    assert abs(shares[0] - shares[1]) <= min(r.share for r in tour.FAMILIES)
    one = tour.lane_seconds(tour.split_into_lanes(tour.FAMILIES, 1), 100.0)      # in turn: each its own share
    assert one == pytest.approx({r.family: 100.0 * r.share for r in tour.FAMILIES})
    with pytest.raises(MinigenError, match="--lanes must be a positive whole number of processes, got 0"):
        tour.run(minutes=1, lanes=0)


def test_a_failing_lane_stops_the_tour_with_the_end_of_its_log(tmp_path):
    bogus = tour.Recipe("nosuch", "No such family", 1.0, {})
    with pytest.raises(MinigenError, match=r"(?s)the lane training nosuch failed .*lane-0.log.*KeyError: 'nosuch'"):
        tour._train_in_lanes([[bogus]], {"nosuch": 1.0}, str(tmp_path), "mnist-5k", None, 0, 10)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("threads", [1, 2])
def test_the_tour_trains_with_the_measured_conv_plan_unless_minigen_plan_says_otherwise(
        tmp_path, monkeypatch, threads):
    """A lane (one thread) or a one-lane tour on two threads trains with the plan measured on its machine;
    MINIGEN_PLAN, when the user sets it, wins."""
    import numba
    import minigen.train
    from minigen.kernels import plan
    if threads > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"needs {threads} Numba threads")
    seen = []

    def fake_train(opts):
        seen.append(plan.mode())
        raise _Stop
    monkeypatch.setattr(minigen.train, "train", fake_train)
    nar = next(r for r in tour.FAMILIES if r.family == "nar")
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        monkeypatch.delenv("MINIGEN_PLAN")
        with pytest.raises(_Stop):
            tour._train_family(nar, 1.0, str(tmp_path / "a"), "mnist-5k", None, 0, 0)
        monkeypatch.setenv("MINIGEN_PLAN", "estimate")
        with pytest.raises(_Stop):
            tour._train_family(nar, 1.0, str(tmp_path / "b"), "mnist-5k", None, 0, 0)
    finally:
        numba.set_num_threads(before)
    assert seen == ["measure", "estimate"] and plan.mode() == "estimate"
