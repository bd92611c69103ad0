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


def _result(cpu="cpu A", samples=500, **families):
    return {"machine": {"cpu": cpu, "threads": 1}, "samples": samples,
            "minutes": sorted({r["minutes"] for runs in families.values() for r in runs}), "families": families}


def _run(framework, minutes, fid):
    return {"framework": framework, "minutes": minutes, "steps": 10, "fid_mnist": fid, "label_accuracy": 0.5}


def test_merge_joins_runs_split_over_cores_and_a_later_run_wins():
    old = _result(vae=[_run("minigen", 1.0, 100), _run("torch", 1.0, 110)], ddpm=[_run("minigen", 1.0, 50)])
    core0 = _result(vae=[_run("torch", 10.0, 60), _run("minigen", 1.0, 90), _run("minigen", 10.0, 70)])
    core1 = _result(pixelcnn=[_run("minigen", 10.0, 30)])
    merged = quality_time.merge([old, core0, core1], ["old", "core0", "core1"])
    assert list(merged["families"]) == ["pixelcnn", "vae", "ddpm"]          # the tour's order
    assert merged["minutes"] == [1.0, 10.0]
    assert [(r["framework"], r["minutes"], r["fid_mnist"]) for r in merged["families"]["vae"]] == [
        ("minigen", 1.0, 90), ("torch", 1.0, 110), ("minigen", 10.0, 70), ("torch", 10.0, 60)]


def test_merge_refuses_runs_of_another_cpu_or_sample_count():
    a, b = _result(vae=[_run("minigen", 1.0, 1)]), _result(cpu="cpu B", vae=[_run("torch", 1.0, 1)])
    with pytest.raises(SystemExit, match="b.json was measured with CPU 'cpu B', a.json with 'cpu A'"):
        quality_time.merge([a, b], ["a.json", "b.json"])
    with pytest.raises(SystemExit, match="measured with samples 100"):
        quality_time.merge([a, _result(samples=100)], ["a.json", "c.json"])
    with pytest.raises(SystemExit, match="cannot read .* as a quality_time result"):
        quality_time.main(["--merge", "/nonexistent/quality_time.json"])


def test_merge_writes_the_table_and_plots_runs_without_a_likelihood(tmp_path):
    import json
    with_likelihood = {**_run("minigen", 1.0, 50), "likelihood": {"metric": "bits_per_dim", "value": 1.2}}
    refused = {**_run("minigen", 10.0, 40), "likelihood": None}        # an estimate below the bound, left out
    paths = []
    for i, result in enumerate([_result(flowmatch=[with_likelihood, _run("torch", 1.0, 45)]),
                                _result(flowmatch=[refused, _run("torch", 10.0, 35)])]):
        paths.append(str(tmp_path / f"{i}.json"))
        (tmp_path / f"{i}.json").write_text(json.dumps(result))
    assert quality_time.main(["--merge", *paths, "--out", str(tmp_path)]) == 0
    merged = json.loads((tmp_path / "quality_time.json").read_text())
    assert len(merged["families"]["flowmatch"]) == 4
    assert (tmp_path / "quality_time_flowmatch.png").stat().st_size > 1000
