"""benchmarks/quality_time.py: the parts that run without training (the benchmark itself is run by hand)."""
import pytest

from benchmarks import quality_time
from minigen.tools.tour import FAMILIES


def test_minutes_list_is_parsed_and_bad_lists_are_refused():
    assert quality_time.parse_minutes("0.5,1") == [0.5, 1.0]
    assert quality_time.parse_minutes(quality_time.DEFAULT_MINUTES) == [1, 2, 5, 10, 20]
    for bad in ("", "1,x", "0,1", "-2"):
        with pytest.raises(SystemExit, match="--minutes must be a comma-separated list of positive numbers"):
            quality_time.parse_minutes(bad)


def test_every_family_is_benchmarked_on_its_tour_recipe():
    for recipe in FAMILIES:
        assert quality_time.recipe_of(recipe.family) is recipe
    with pytest.raises(SystemExit, match="unknown family 'nosuch'"):
        quality_time.recipe_of("nosuch")
    with pytest.raises(ValueError, match="exactly one of seconds and max_steps"):
        quality_time.train_for("minigen", "nar")


def test_a_variant_is_probed_with_its_config_over_the_recipe():
    ddpm = quality_time.recipe_of("ddpm")
    small = quality_time.recipe_of("ddpm", ddpm.variants[-1].label)
    assert small.config == {**ddpm.config, **ddpm.variants[-1].config} and small.warmup_steps == ddpm.warmup_steps
    with pytest.raises(SystemExit, match="ddpm has no variant 'huge'; expected one of '16/32/32', '8/16/16'"):
        quality_time.recipe_of("ddpm", "huge")
    with pytest.raises(SystemExit, match="nar has no variant 'x'; expected one of none"):
        quality_time.recipe_of("nar", "x")
