"""benchmarks/recipe_probe.py: settings are read as literals, a bad key fails before training, and a
three-step probe prints its measurements."""
import argparse
import json
import os
import subprocess
import sys

import pytest

from benchmarks import recipe_probe
from minigen.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("text, expected", [
    ("lr=1e-3", ("lr", 1e-3)), ("channels=[8, 16, 16]", ("channels", [8, 16, 16])),
    ("label_map=true", ("label_map", True)), ("variant=glow", ("variant", "glow")), ("note=", ("note", "")),
])
def test_a_setting_is_read_as_a_literal(text, expected):
    assert recipe_probe.setting(text) == expected


@pytest.mark.parametrize("text", ["lr", "=3"])
def test_a_setting_without_key_and_value_is_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE"):
        recipe_probe.setting(text)


def test_the_probed_recipe_is_the_tour_recipe_with_the_overrides():
    recipe = recipe_probe.probe_recipe("ddpm", {"lr": 1e-3}, {"guidance": 2.0}, variant="8/16/16", warmup=7)
    assert recipe.config["lr"] == 1e-3 and recipe.config["channels"] == [8, 16, 16]
    assert recipe.sample_options["guidance"] == 2.0 and recipe.warmup_steps == 7
    with pytest.raises(ConfigError, match="chanels"):
        recipe_probe.probe_recipe("ddpm", {"chanels": 3}, {})


def test_a_three_step_probe_prints_its_steps_and_metrics(tmp_path):
    grid = tmp_path / "grid.png"
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "recipe_probe.py"), "nar", "3",
                          "--samples", "10", "--set", "hidden=32", "--grid", str(grid)],
                         capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps"] == 3 and result["recipe"]["hidden"] == 32
    assert result["seconds_per_step"] > 0 and 0 <= result["label_accuracy"] <= 1 and result["fid_mnist"] > 0
    assert grid.stat().st_size > 0
