"""benchmarks/lane_speed.py: the summary's ratios and the checks made before any process starts."""
import pytest

from benchmarks import lane_speed


def test_ratios_are_per_round_against_estimate_at_256_bits():
    medians = {("estimate", 256): [0.10, 0.20, 0.10], ("measure", 256): [0.08, 0.20, 0.09],
               ("estimate", 512): [0.10, 0.10, 0.12], ("measure", 512): [0.11, 0.22, 0.10]}
    summary = lane_speed.summarize(medians)
    assert summary[("estimate", 256)]["ratio"] == 1.0
    assert summary[("measure", 256)] == pytest.approx({"median_s": 0.09, "ratio": 0.9, "ratio_min": 0.8,
                                                       "ratio_max": 1.0})
    assert summary[("estimate", 512)]["ratio_min"] == pytest.approx(0.5)      # the round where it was twice as fast


def test_a_bad_family_or_round_count_fails_before_any_process_starts():
    with pytest.raises(SystemExit, match="unknown family 'nosuch'"):
        lane_speed.main(["--families", "nosuch", "--rounds", "1"])
    with pytest.raises(SystemExit, match="gan has no variant 'batch 7'"):
        lane_speed.main(["--families", "gan:batch 7", "--rounds", "1"])
    with pytest.raises(SystemExit):
        lane_speed.main(["--rounds", "0"])
