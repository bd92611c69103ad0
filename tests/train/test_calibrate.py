"""minigen.calibrate: a recipe's variant chosen from the seconds per step of this machine. The machine is
faked (time_step), so nothing here depends on how fast the machine running the tests is."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.calibrate import Variant, choose_variant, seconds_per_step
from minigen.errors import MinigenError

# the DDPM's shape: a wide net needs fewer steps than a narrow one but costs more per step
WIDE, NARROW = Variant("16/32/32", {}, 430), Variant("8/16/16", {"channels": [8, 16, 16]}, 500)
COST = {"16/32/32": 0.1, "8/16/16": 0.04}          # seconds per step on the fast machine


def machine(slowdown: float):
    timed = []

    def time_step(variant):
        timed.append(variant.label)
        return COST[variant.label] * slowdown
    return time_step, timed


def test_a_fast_machine_gets_the_largest_variant_and_times_nothing_else():
    time_step, timed = machine(1.0)
    choice = choose_variant("ddpm", [WIDE, NARROW], 95, time_step)     # 949.99 steps >= 430
    assert choice.variant is WIDE and timed == ["16/32/32"]
    assert choice.reason == "ddpm: chose 16/32/32 (0.1 s/step, ~949 steps in 95 s >= 430 needed)"


def test_a_machine_three_times_slower_gets_the_smaller_variant_and_says_why():
    time_step, timed = machine(3.0)
    choice = choose_variant("ddpm", [WIDE, NARROW], 95, time_step)     # 316.7 < 430; 791.7 >= 500
    assert choice.variant is NARROW and timed == ["16/32/32", "8/16/16"]
    assert choice.reason == ("ddpm: 0.3 s/step -> ~316 steps in 95 s < 430 needed for 16/32/32; "
                             "chose 8/16/16 (0.12 s/step, ~791 steps in 95 s >= 500 needed)")
    record = choice.as_dict()
    assert record["chosen"] == "8/16/16" and record["steps_needed"] == 500
    assert [t["variant"] for t in record["timed"]] == ["16/32/32", "8/16/16"]
    assert record["timed"][0]["seconds_per_step"] == pytest.approx(0.3)


def test_a_hopeless_machine_gets_the_best_ratio_of_steps_to_steps_needed():
    time_step, _ = machine(20.0)          # 2 s/step: 47 of 430; 0.8 s/step: 118 of 500 (the better ratio)
    choice = choose_variant("ddpm", [WIDE, NARROW], 95, time_step)
    assert choice.variant is NARROW
    assert choice.reason.endswith("; none fits: chose 8/16/16, the best ratio (~118 of 500 steps needed)")
    # where the small variant does not pay for its extra steps, the large one has the better ratio
    choice = choose_variant("ddpm", [WIDE, Variant("tiny", {}, 5000)], 95, lambda v: 2.0 if v is WIDE else 1.0)
    assert choice.variant is WIDE and "none fits: chose 16/32/32" in choice.reason
    # no budget left for a single step of either: the smaller one, the cheaper to evaluate and sample
    assert choose_variant("ddpm", [WIDE, NARROW], 0, machine(1.0)[0]).variant is NARROW


@settings(max_examples=60, deadline=None)
@given(costs=st.lists(st.floats(1e-3, 10.0), min_size=1, max_size=4),
       needs=st.lists(st.integers(1, 20_000), min_size=4, max_size=4),
       budget=st.floats(0.0, 1000.0))
def test_the_choice_is_the_first_that_fits_else_the_best_ratio(costs, needs, budget):
    variants = [Variant(f"v{i}", {}, needs[i]) for i in range(len(costs))]
    choice = choose_variant("f", variants, budget, lambda v: costs[int(v.label[1:])])
    chosen = variants.index(choice.variant)
    predicted = [steps for _, _, steps in choice.timings]
    fits = [p >= v.steps_needed for p, v in zip(predicted, variants)]
    if any(fits):          # timed up to the first that fits, and that one chosen
        assert len(predicted) == chosen + 1 and fits[chosen] and not any(fits[:chosen])
    else:
        ratios = [p / v.steps_needed for p, v in zip(predicted, variants)]
        assert len(predicted) == len(variants) and ratios[chosen] == max(ratios)
        assert all(r < max(ratios) for r in ratios[chosen + 1:])          # ties go to the smaller variant
        assert "none fits" in choice.reason
    assert all(p <= budget / c for p, c in zip(predicted, costs))        # never more steps than the budget buys


def test_bad_inputs_are_named():
    with pytest.raises(MinigenError, match="steps_needed must be a positive integer, got 0"):
        Variant("x", {}, 0)
    with pytest.raises(MinigenError, match="no variants"):
        choose_variant("ddpm", [], 10, lambda v: 1.0)
    with pytest.raises(MinigenError, match="budget must be a non-negative number of seconds, got -1"):
        choose_variant("ddpm", [WIDE], -1, lambda v: 1.0)
    with pytest.raises(MinigenError, match="16/32/32 timed at 0.0 s/step; expected a positive number"):
        choose_variant("ddpm", [WIDE], 10, lambda v: 0.0)


def test_seconds_per_step_times_real_steps_of_the_family_and_needs_a_batch_of_data():
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 28, 28), dtype=np.float32), np.arange(40) % 10
    config = {"conditional": True, "batch_size": 16, "hidden_dim": 32}
    assert seconds_per_step("vae", config, x, y, warmup_steps=1, timed_steps=2) > 0
    with pytest.raises(MinigenError, match="vae needs a batch of 16 images, the data holds 8"):
        seconds_per_step("vae", config, x[:8], y[:8])
