"""The tour's recipes sized to the machine (issue 27): each recipe's variant table, and the variant chosen
on a faked fast, slow or hopeless machine (time_step replaces the timing of real steps)."""
import json
import os

import pytest

from minigen.models import get_family
from minigen.tools import tour

SHARED_MNIST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
DATA_DIR = SHARED_MNIST if os.path.isdir(SHARED_MNIST) else None
CALIBRATED = [r for r in tour.FAMILIES if r.variants]


def machine(budget: float, fractions):
    """A fake machine on which variant i gets fractions[i] x the steps it needs in `budget` seconds."""
    def time_step(variant):
        return budget / (variant.steps_needed * fractions[[v.label for v in recipe_of(variant).variants]
                                                          .index(variant.label)])
    return time_step


def recipe_of(variant):
    return next(r for r in CALIBRATED if variant in r.variants)


def test_the_starved_families_have_smaller_variants():
    # the flow is one size: its glow recipe at fewer steps beats the cheaper flows probed (docs/recipes.md)
    assert {r.family for r in CALIBRATED if len(r.variants) > 1} >= {"ddpm", "flowmatch", "pixelcnn", "gan"}


@pytest.mark.parametrize("recipe", CALIBRATED, ids=lambda r: r.family)
def test_a_variant_table_starts_with_the_recipe_itself_and_never_grows(recipe):
    assert recipe.variants[0].config == {}, "the first variant is the recipe's own config"
    sizes = [get_family(recipe.family)({**recipe.config, **v.config, "conditional": True}).num_parameters()
             for v in recipe.variants]                  # building each also checks its keys and values
    assert sizes == sorted(sizes, reverse=True)
    assert len({v.label for v in recipe.variants}) == len(recipe.variants)


@pytest.mark.parametrize("recipe", CALIBRATED, ids=lambda r: r.family)
def test_a_fast_machine_keeps_the_recipe_and_a_slow_one_gets_the_last_variant_that_fits(recipe, capsys):
    n = len(recipe.variants)
    config, choice = recipe.calibrated(100.0, "mnist-5k", time_step=machine(100.0, [1.5] * n))
    assert choice.variant is recipe.variants[0] and config == recipe.config
    assert capsys.readouterr().out.startswith(f"calibration: {recipe.family}: chose {recipe.variants[0].label} (")
    if n > 1:
        config, choice = recipe.calibrated(100.0, "mnist-5k", time_step=machine(100.0, [0.5] * (n - 1) + [1.2]))
        assert choice.variant is recipe.variants[-1]
        assert config == {**recipe.config, **recipe.variants[-1].config}
        line = capsys.readouterr().out
        assert f"< {recipe.variants[0].steps_needed} needed for {recipe.variants[0].label};" in line
        assert f"chose {recipe.variants[-1].label} (" in line


def test_a_recipe_of_one_size_is_not_timed(capsys):
    recipe = next(r for r in tour.FAMILIES if r.family == "nar")
    assert recipe.variants == ()
    assert recipe.calibrated(10.0, "mnist-5k", time_step=lambda v: pytest.fail("timed")) == (recipe.config, None)
    assert capsys.readouterr().out == "calibration: nar: one size, not timed\n"


def test_the_tour_trains_the_chosen_variant_and_records_why(tmp_path, capsys):
    """A machine on which DDPM's recipe gets too few steps: the family trains the smaller U-Net, and its
    summary (tour.json's "calibration") says what was timed and chosen."""
    recipe = next(r for r in CALIBRATED if r.family == "ddpm")
    small = recipe.variants[-1]
    fast_small = {v.label: (1.0 if v is not small else 1e-6) for v in recipe.variants}     # s/step
    model, summary = tour._train_family(recipe, 0.01, str(tmp_path), "mnist-5k", DATA_DIR, 0, 20,
                                        time_step=lambda v: fast_small[v.label])
    assert model.config["channels"] == small.config["channels"]
    record = summary["calibration"]
    assert record["chosen"] == small.label and record["steps_needed"] == small.steps_needed
    assert [t["variant"] for t in record["timed"]] == [v.label for v in recipe.variants]
    assert record["reason"] in capsys.readouterr().out
    saved = json.loads((tmp_path / "ddpm" / "config.json").read_text())
    assert saved["model_config"]["channels"] == small.config["channels"]
