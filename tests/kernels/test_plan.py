"""The conv plan (kernels/plan.py): estimate mode times nothing; measure mode runs the fastest candidate,
timed with an injected clock (no real convs are timed here), remembers it in memory and in the wisdom
file, which a corrupt or stale copy of cannot break."""
import json

import numpy as np
import pytest

from minigen import kernels as K
from minigen.errors import ConfigError
from minigen.kernels import conv, plan


@pytest.fixture
def measured(monkeypatch, tmp_path):
    """Measure mode with the wisdom file in a fresh folder and nothing remembered."""
    monkeypatch.setenv("MINIGEN_PLAN", "measure")
    monkeypatch.setenv("MINIGEN_DATA", str(tmp_path))
    plan.forget()
    yield tmp_path
    plan.forget()


class FakeCandidates:
    """Candidates whose runs take the given seconds on a fake clock; each run returns its name."""

    def __init__(self, monkeypatch, seconds):
        self.seconds, self.now, self.runs = seconds, 0.0, []
        monkeypatch.setattr(plan, "_clock", lambda: self.now)

    def run(self, name):
        self.runs.append(name)
        self.now += self.seconds[name]
        return name


def test_measure_mode_runs_the_fastest_candidate_and_remembers_it(monkeypatch, measured):
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01, "im2col": 0.02})
    assert plan.run("key", ["direct", "winograd", "im2col"], "direct", fake.run) == "winograd"
    assert plan.timings["key"] == pytest.approx({"direct": 0.03, "winograd": 0.01, "im2col": 0.02})
    fake.runs.clear()
    assert plan.run("key", ["direct", "winograd", "im2col"], "direct", fake.run) == "winograd"
    assert fake.runs == ["winograd"]                     # known: nothing timed again


def test_a_candidate_whose_warm_up_is_much_slower_is_not_timed_again(monkeypatch, measured):
    fake = FakeCandidates(monkeypatch, {"direct": 0.01, "planar": 1.0})
    assert plan.run("key", ["planar", "direct"], "direct", fake.run) == "direct"
    assert fake.runs == ["direct"] * (1 + plan.TIMED_RUNS) + ["planar"]


def test_one_slow_run_under_load_does_not_decide_the_plan(monkeypatch, measured):
    """direct's first timed run is slowed tenfold (another job took the core): the median of its runs
    still says direct is faster than im2col, where that run alone would have said the opposite."""
    times = {"direct": iter([0.02, 0.10, 0.01, 0.01]), "im2col": iter([0.03] * 4)}
    fake = FakeCandidates(monkeypatch, {})
    fake.seconds = type("Slowed", (), {"__getitem__": lambda self, name: next(times[name])})()
    assert plan.run("key", ["direct", "im2col"], "direct", fake.run) == "direct"
    assert plan.timings["key"] == pytest.approx({"direct": 0.01, "im2col": 0.03})


def test_estimate_mode_times_nothing_and_always_picks_the_estimate(monkeypatch, measured):
    monkeypatch.setenv("MINIGEN_PLAN", "estimate")
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01})
    for _ in range(3):
        assert plan.run("key", ["direct", "winograd"], "direct", fake.run) == "direct"
    assert fake.runs == ["direct"] * 3 and plan.timings == {}
    assert not list(measured.iterdir())                  # no wisdom file written


def test_wisdom_round_trip_a_new_process_measures_nothing(monkeypatch, measured):
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01})
    plan.run("key", ["direct", "winograd"], "direct", fake.run)
    saved = json.loads(plan.wisdom_path().read_text())
    assert saved["winners"] == {"key": "winograd"} and saved["machine"] == plan.machine()
    assert [p.name for p in measured.iterdir()] == [plan.wisdom_path().name]     # no temporary left
    plan.forget()                                        # as a new process: read back from the file
    fake.runs.clear()
    assert plan.run("key", ["direct", "winograd"], "direct", fake.run) == "winograd"
    assert fake.runs == ["winograd"]


@pytest.mark.parametrize("content, says", [
    ("{not json", "corrupt"),
    ('{"machine": {}, "winners": ["x"]}', "corrupt"),
    ("STALE", "made for"),
])
def test_a_corrupt_or_stale_wisdom_file_is_ignored_with_a_warning(monkeypatch, measured, content, says):
    if content == "STALE":
        content = json.dumps({"machine": dict(plan.machine(), minigen="0.0.1"), "winners": {"key": "direct"}})
    plan.wisdom_path().parent.mkdir(parents=True, exist_ok=True)
    plan.wisdom_path().write_text(content)
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01})
    with pytest.warns(UserWarning, match=says):
        assert plan.run("key", ["direct", "winograd"], "direct", fake.run) == "winograd"
    assert json.loads(plan.wisdom_path().read_text())["winners"] == {"key": "winograd"}     # rewritten


def test_measured_conv_equals_the_estimated_one_and_is_planned_once(measured):
    """Through the dispatcher with real (tiny) convs: the answer does not depend on the plan, and the
    part's winner is known afterwards."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 32, 7, 7)), rng.standard_normal((32, 32, 3, 3))
    y = K.conv2d_forward(x, w, None, 1, 1)
    geo = conv.conv2d_geometry("test", x, w, None, 1, 1, 1, 1)
    chosen = conv.algorithm_for(conv.with_zero_tap(geo, w), "forward", x.dtype)
    assert chosen in conv.candidates(geo, "forward")
    with conv.forced("im2col"):
        np.testing.assert_allclose(y, K.conv2d_forward(x, w, None, 1, 1), rtol=1e-10, atol=1e-10)


def test_a_default_mode_block_measures_unless_minigen_plan_says_otherwise(monkeypatch):
    monkeypatch.delenv("MINIGEN_PLAN", raising=False)
    assert plan.mode() == "estimate"
    with plan.default_mode("measure"):
        assert plan.mode() == "measure"
        with plan.default_mode("estimate"):
            assert plan.mode() == "estimate"
        assert plan.mode() == "measure"
        monkeypatch.setenv("MINIGEN_PLAN", "estimate")          # the user's setting wins
        assert plan.mode() == "estimate"
    monkeypatch.delenv("MINIGEN_PLAN")
    assert plan.mode() == "estimate"
    with pytest.raises(ConfigError, match=r"plan.default_mode\('fast'\): expected one of estimate, measure"):
        with plan.default_mode("fast"):
            pass


def test_a_second_process_writing_the_wisdom_keeps_what_the_first_saved(monkeypatch, measured):
    """Two lanes measure side by side, each with its own memory of the file: neither's winners are lost."""
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01})
    plan.run("first lane's key", ["direct", "winograd"], "direct", fake.run)
    monkeypatch.setattr(plan, "_winners", {})               # the other lane read the file before that write
    plan.run("second lane's key", ["direct", "winograd"], "direct", fake.run)
    assert json.loads(plan.wisdom_path().read_text())["winners"] == {"first lane's key": "winograd",
                                                                      "second lane's key": "winograd"}


def test_a_large_part_is_timed_on_a_trial_then_run_whole_by_the_winner(monkeypatch, measured):
    """Above TRIAL_MULTIPLY_ADDS the candidates are timed on the trial only (what bounds the first call's
    cost), and the call's answer is the winner's run on the whole batch, not a trial's."""
    fake = FakeCandidates(monkeypatch, {"direct": 0.03, "winograd": 0.01})
    whole = []
    answer = plan.run("key", ["direct", "winograd"], "direct", lambda name: whole.append(name) or f"whole {name}",
                      work=4 * plan.TRIAL_MULTIPLY_ADDS, trial=(fake.run, plan.TRIAL_MULTIPLY_ADDS))
    assert answer == "whole winograd" and whole == ["winograd"]
    assert fake.runs == ["direct"] * (1 + plan.TIMED_RUNS) + ["winograd"] * (1 + plan.TIMED_RUNS)
    assert plan.multiply_adds["key"] == plan.TRIAL_MULTIPLY_ADDS         # the work that was timed
    fake.runs.clear()                                   # a part within the budget: timed on its own arrays
    assert plan.run("small", ["direct", "winograd"], "direct", fake.run, work=plan.TRIAL_MULTIPLY_ADDS,
                    trial=(lambda name: pytest.fail("a small part has no trial"), plan.TRIAL_MULTIPLY_ADDS)) == "winograd"


@pytest.mark.parametrize("batch, work, images", [(128, 1 << 20, 128), (128, 1 << 27, 128), (128, 1 << 29, 32),
                                                 (128, 3 << 27, 43), (2, 1 << 40, 1)])
def test_a_trial_takes_the_fewest_images_that_make_up_its_work(monkeypatch, batch, work, images):
    monkeypatch.setattr(plan, "TRIAL_MULTIPLY_ADDS", 1 << 27)
    assert plan.trial_images(batch, work) == images
    if images < batch:                                  # never less work than the threads' threshold
        assert images * work // batch >= plan.TRIAL_MULTIPLY_ADDS


def test_a_candidate_losing_clearly_on_its_first_timed_run_is_not_run_again(monkeypatch, measured):
    fake = FakeCandidates(monkeypatch, {"direct": 0.01, "im2col": 0.02, "planar": 0.012})
    assert plan.run("key", ["direct", "im2col", "planar"], "direct", fake.run) == "direct"
    assert fake.runs == ["direct"] * (1 + plan.TIMED_RUNS) + ["im2col"] * 2 + ["planar"] * (1 + plan.TIMED_RUNS)


@pytest.mark.parametrize("part", ["forward", "input_grad", "weight_grad"])
def test_conv_trials_take_the_first_images_and_the_answer_is_the_whole_batch(monkeypatch, measured, part):
    """Through the dispatcher with real convs and a tiny trial budget: the timed runs see a quarter of the
    batch (both batch arrays of a weight gradient), the answer is the whole batch's and equals im2col's."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((8, 32, 7, 7)), rng.standard_normal((32, 32, 3, 3))
    g = rng.standard_normal((8, 32, 7, 7))
    geo = conv.with_zero_tap(conv.conv2d_geometry("test", x, w, None, 1, 1, 1, 1), w)
    monkeypatch.setattr(plan, "TRIAL_MULTIPLY_ADDS", conv.conv_multiply_adds(geo) // 4)     # 2 of the 8 images
    arrays = {"forward": (x, w, None), "input_grad": (g, w, None), "weight_grad": (g, x)}[part]
    batches = []
    for name in conv.candidates(geo, part):
        module = conv.BY_NAME[name].module
        original = getattr(module, part)

        def spy(*args, original=original):
            batches.append((args[0].shape[0], args[-1].image[0]) + ((args[1].shape[0],) if part == "weight_grad"
                                                                     else ()))
            return original(*args)
        monkeypatch.setattr(module, part, spy)
    got = conv.run_part(geo, part, *arrays)
    trials, whole = batches[:-1], batches[-1]
    assert len(trials) >= 1 + plan.TIMED_RUNS and all(set(b) == {2} for b in trials)
    assert set(whole) == {8}
    with conv.forced("im2col"):
        np.testing.assert_allclose(got, conv.run_part(geo, part, *arrays), rtol=1e-10, atol=1e-10)
