"""benchmarks/lane_speed.py: the summary's ratios and the checks made before any process starts."""
import pytest

from benchmarks import lane_speed


def test_ratios_are_per_round_against_the_first_setting():
    medians = {("estimate", "256", "keep"): [0.10, 0.20, 0.10], ("measure", "256", "keep"): [0.08, 0.20, 0.09],
               ("estimate", "512", "keep"): [0.10, 0.10, 0.12], ("measure", "512", "keep"): [0.11, 0.22, 0.10]}
    summary = lane_speed.summarize(medians)
    assert summary[("estimate", "256", "keep")]["ratio"] == 1.0
    assert summary[("measure", "256", "keep")] == pytest.approx({"median_s": 0.09, "ratio": 0.9, "ratio_min": 0.8,
                                                               "ratio_max": 1.0})
    assert summary[("estimate", "512", "keep")]["ratio_min"] == pytest.approx(0.5)   # the round it was twice as fast


def test_settings_are_every_combination_named_and_a_bad_one_is_refused():
    import argparse
    args = argparse.Namespace(plans="measure", widths="256", malloc="keep,system")
    assert lane_speed.settings_of(args) == [("measure", "256", "keep"), ("measure", "256", "system")]
    assert lane_speed.label(("measure", "256", "system")) == "measure 256-bit malloc=system"
    with pytest.raises(SystemExit, match="--malloc: expected some of keep, system, got 'jemalloc'"):
        lane_speed.settings_of(argparse.Namespace(plans="measure", widths="256", malloc="jemalloc"))


def test_a_bad_family_or_round_count_fails_before_any_process_starts():
    with pytest.raises(SystemExit, match="unknown family 'nosuch'"):
        lane_speed.main(["--families", "nosuch", "--rounds", "1"])
    with pytest.raises(SystemExit, match="gan has no variant 'batch 7'"):
        lane_speed.main(["--families", "gan:batch 7", "--rounds", "1"])
    with pytest.raises(SystemExit):
        lane_speed.main(["--rounds", "0"])
    with pytest.raises(SystemExit, match="unknown model variant 'pixelcnn:batch 32'"):
        lane_speed.main(["--families", "pixelcnn:batch 32", "--bench", "--rounds", "1"])
    with pytest.raises(SystemExit):
        lane_speed.main(["--widths", "128", "--rounds", "1"])


def test_a_bench_child_times_the_benchmark_variants_batch_128_step(monkeypatch):
    """--bench: the child times benchmarks/run.py's step of the variant (here faked), not a tour recipe's."""
    import benchmarks.run
    calls = []
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    monkeypatch.setattr(benchmarks.run, "train_step_case", lambda framework, model: lambda: calls.append(model))
    result = lane_speed.child("bench:gan")
    assert calls == ["gan"] * (lane_speed.WARMUP + lane_speed.TIMED)
    assert set(result) == {"first_s", "median_s"} and result["median_s"] >= 0


def test_a_benchmark_child_runs_in_a_fresh_process_with_its_threads_and_environment(tmp_path, monkeypatch):
    """benchmarks/common.py's spawn_child and child_or_args: the script re-run as its own worker."""
    import os

    from benchmarks.common import spawn_child
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = tmp_path / "worker.py"
    script.write_text(
        "import argparse, os, sys\n"
        f"sys.path.insert(0, {root!r})\n"
        "from benchmarks.common import child_or_args\n"
        "def child(spec):\n"
        "    if spec == 'fail':\n"
        "        raise ValueError('the child failed on purpose')\n"
        "    return {'spec': spec, 'threads': os.environ['NUMBA_NUM_THREADS'], 'y': os.environ.get('Y'),\n"
        "            'x_gone': 'X' not in os.environ}\n"
        "child_or_args(argparse.ArgumentParser(), None, child)\n"
        "print('not a child')\n")
    monkeypatch.setenv("X", "set by the parent")
    assert spawn_child(str(script), "abc", 3, X=None, Y="1") == {"spec": "abc", "threads": "3", "y": "1",
                                                                 "x_gone": True}
    with pytest.raises(RuntimeError, match="worker.py --child fail failed:(.|\n)*the child failed on purpose"):
        spawn_child(str(script), "fail", 1)


def test_threads_must_be_positive():
    with pytest.raises(SystemExit):
        lane_speed.main(["--threads", "0"])
