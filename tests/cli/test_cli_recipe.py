"""`minigen train FAMILY --recipe tour --max-seconds S`: the tour's recipe, sized to the budget on this
machine (issue 27). The machine is faked by replacing minigen.calibrate.seconds_per_step."""
import json

import pytest

from minigen.tools.tour import FAMILIES as RECIPES

from .test_cli import DATA, one_line_error, run_cli


def test_the_tour_recipe_sized_for_a_slow_machine(tmp_path, capsys, monkeypatch):
    ddpm = next(r for r in RECIPES if r.family == "ddpm")
    small = ddpm.variants[-1]
    # the recipe's own U-Net costs a second a step, the small one a microsecond: only the small one fits
    monkeypatch.setattr("minigen.calibrate.seconds_per_step",
                        lambda family, config, x, y: 1.0 if config["channels"] != small.config["channels"] else 1e-6)
    run = tmp_path / "ddpm"
    code, out, err = run_cli(capsys, "train", "ddpm", "--recipe", "tour", "--max-seconds", "5", "--max-steps", "2",
                             "--eval-n", "0", "--no-progress", "--set", "sample_steps=2", "--out", str(run), *DATA)
    assert code == 0, err
    assert f"calibration: ddpm: 1 s/step -> ~4 steps in 5 s < {ddpm.variants[0].steps_needed} needed for " \
           f"{ddpm.variants[0].label}; chose {small.label} (" in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["model_config"]["channels"] == small.config["channels"]
    assert saved["model_config"]["prediction"] == "v" and saved["model_config"]["conditional"] is True
    assert saved["model_config"]["sample_steps"] == 2                       # --set overrides the recipe
    assert saved["train"]["warmup_steps"] == ddpm.warmup_steps and saved["train"]["lr_decay"] == "cosine"
    assert saved["train"]["max_seconds"] < 5                                  # calibration came out of the budget
    summary = json.loads(out[out.index("{"):out.rindex("}") + 1])
    assert summary["calibration"]["chosen"] == small.label


def test_without_the_flag_train_keeps_its_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minigen.calibrate.seconds_per_step", lambda *a: pytest.fail("calibrated"))
    run = tmp_path / "nar"
    code, out, err = run_cli(capsys, "train", "nar", "--max-seconds", "5", "--max-steps", "1", "--eval-n", "0",
                             "--no-progress", "--out", str(run), *DATA)
    assert code == 0, err
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["lr_decay"] == "none" and "calibration" not in out


@pytest.mark.parametrize("argv, pattern", [
    (["train", "ddpm", "--recipe", "tour"], "--recipe tour sizes the model to a time budget: give --max-seconds"),
    (["train", "classifier", "--recipe", "tour", "--max-seconds", "9"],
     "--recipe tour: the tour has no recipe for classifier; it has recipes for pixelcnn, "),
    (["train", "--resume", "runs/x", "--recipe", "tour"], "--recipe: a resumed run keeps the recipe it started with"),
    (["train", "ddpm", "--recipe", "fast", "--max-seconds", "9"], "argument --recipe: invalid choice: 'fast'"),
    (["train", "ddpm", "--recipe", "tour", "--max-seconds", "9", "--set", "channels=7"], "ddpm: channels="),
])
def test_bad_recipe_requests_are_one_line_errors_before_any_timing(argv, pattern, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("minigen.calibrate.seconds_per_step", lambda *a: pytest.fail("calibrated"))
    one_line_error(capsys, *argv, "--out", str(tmp_path / "run"), pattern=pattern)
    assert not (tmp_path / "run").exists()
