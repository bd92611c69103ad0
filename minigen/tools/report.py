"""HTML reports: one self-contained `index.html` per run directory, one for the tour, and one that
puts several runs side by side (`minigen report RUN_DIR ... --out DIR`).

Plain HTML and CSS (no JavaScript), every picture by a relative link with alt text, readable
on a narrow screen; everything that comes from a config or a path is HTML-escaped (Jinja2's
autoescape); written atomically (a temp file renamed into place).
"""
from __future__ import annotations

import json
import os
import shlex
import urllib.parse

from minigen.errors import MinigenError
from minigen.rundir import EVAL
from minigen.serialize import atomic_write

__all__ = ["write_run_report", "write_tour_report", "write_comparison", "REPORT"]

REPORT = "index.html"

# what a picture shows, by file name (for alt text and captions); others are described by their name
DESCRIPTIONS = {
    "samples.png": "a grid of samples drawn after training",
    "generation.gif": "an animation of how the model generates",
    "loss.png": "the training loss curve",
    "curves.png": "every logged training number, step by step",
    "reconstructions.png": "test images and their reconstructions",
    "interpolation.png": "decoded codes along a line in latent space",
    "latent_scatter.png": "encoder means of test images coloured by label",
    "latent_manifold.png": "a grid of latent codes decoded",
    "samples_by_temperature.png": "samples at three temperatures",
    "invertibility.png": "test images and their round trip through the flow",
    "ddpm_reverse.png": "the reverse process from noise to images",
    "ddpm_forward.png": "test images noised by the forward process",
    "flowmatch_paths.png": "the ODE from noise to images, step by step",
    "flowmatch_interpolation.png": "test images on the straight line from noise (the training points)",
    "gan_latent.png": "generator outputs along latent directions",
    "pixelcnn_samples.png": "PixelCNN samples",
    "tour_samples.png": "one sample per family (rows) for each requested label (columns)",
    "tour_strips.png": "generating label 7: diffusion from noise, PixelCNN pixel by pixel",
}
FIRST = ["samples.png", "generation.gif", "loss.png", "curves.png"]

_BASE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 72rem; line-height: 1.4;
       color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem; border-bottom: 1px solid #ddd; }
pre { background: #f5f5f5; padding: .6rem; overflow-x: auto; white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; display: block; overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5rem; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #eee; }
figcaption { font-size: .85rem; color: #555; }
.runs { display: flex; flex-wrap: wrap; gap: 1rem; }
.runs > section { flex: 1 1 20rem; min-width: 0; }
@media (max-width: 40rem) { body { padding: .5rem; } figure { margin: .25rem 0; } }
</style>
</head>
<body>
<h1>{{ title }}</h1>
{% block body %}{% endblock %}
<footer><p><small>written by minigen {{ version }}</small></p></footer>
</body>
</html>
"""

_MACROS = """
{% macro figure(src, alt, caption) -%}
<figure><a href="{{ src }}"><img src="{{ src }}" alt="{{ alt }}"></a><figcaption>{{ caption }}</figcaption></figure>
{%- endmacro %}
{% macro metrics_table(rows, id) -%}
<table id="{{ id }}"><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>
{% for name, value in rows %}<tr><th scope="row">{{ name }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}</tbody></table>
{%- endmacro %}
"""

_RUN = """{% extends "base.html" %}{% import "macros.html" as m %}{% block body %}
<p>A <code>{{ model }}</code> run: {{ facts }}.</p>
<h2>The command that made it</h2>
<pre id="command">{{ command }}</pre>
<h2>Test metrics</h2>
{% if metrics %}{{ m.metrics_table(metrics, "metrics") }}{% else %}<p id="metrics">No test metrics (the run skipped evaluation: --eval-n 0).</p>{% endif %}
{% if eval_metrics %}<h3>Latest <code>minigen eval</code></h3>{{ m.metrics_table(eval_metrics, "eval-metrics") }}{% endif %}
<h2>Pictures</h2>
{% for f in figures %}{{ m.figure(f.src, f.alt, f.caption) }}
{% else %}<p>No pictures yet.</p>{% endfor %}
<h2>Configuration</h2>
<pre id="config">{{ config }}</pre>
<h2>Files</h2>
<ul>{% for f in files %}<li><a href="{{ f.src }}">{{ f.name }}</a></li>{% endfor %}</ul>
{% endblock %}"""

_TOUR = """{% extends "base.html" %}{% import "macros.html" as m %}{% block body %}
<p>Every family trained for a share of {{ minutes }} minutes on {{ dataset }}, then asked for every {{ noun }}.
{{ fid }} compares the features of a small LeNet trained on {{ dataset }} (comparable only between models
measured here on the same data).</p>
<h2>The table</h2>
<table id="metrics"><thead><tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in rows %}<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% if perfect %}<p>{{ perfect }}. Precision: how many samples look like some real {{ noun }}; recall and coverage:
how much of the real data the samples reach (a model that draws one good 7 every time scores full label
accuracy but low coverage).</p>{% endif %}
<h2>Samples and animations</h2>
{% for f in figures %}{{ m.figure(f.src, f.alt, f.caption) }}
{% endfor %}
<h2>Each family's run</h2>
<ul>{% for r in runs %}<li><a href="{{ r.src }}">{{ r.name }}</a></li>{% endfor %}</ul>
{% endblock %}"""

_COMPARE = """{% extends "base.html" %}{% import "macros.html" as m %}{% block body %}
<h2>Numbers</h2>
<table id="metrics"><thead><tr><th>run</th>{% for r in runs %}<th><a href="{{ r.report }}">{{ r.name }}</a></th>{% endfor %}</tr></thead>
<tbody>{% for key in keys %}<tr><th scope="row">{{ key }}</th>{% for r in runs %}<td class="num">{{ r.numbers.get(key, "-") }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
<h2>Side by side</h2>
<div class="runs">{% for r in runs %}<section><h3><a href="{{ r.report }}">{{ r.name }}</a></h3>
<pre>{{ r.command }}</pre>
{% for f in r.figures %}{{ m.figure(f.src, f.alt, f.caption) }}{% endfor %}</section>
{% endfor %}</div>
{% endblock %}"""


def _environment():
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({"base.html": _BASE, "macros.html": _MACROS, "run.html": _RUN,
                                                       "tour.html": _TOUR, "compare.html": _COMPARE}),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env


def _write(path: str, template: str, **context) -> str:
    import minigen
    html = _environment().get_template(template).render(version=minigen.__version__, **context)
    atomic_write(path, lambda f: f.write(html.encode("utf-8")))
    return path


def _href(path: str, start: str) -> str:
    """A relative URL from folder `start` to `path` (percent-encoded, '/' separated)."""
    return urllib.parse.quote(os.path.relpath(path, start).replace(os.sep, "/"))


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):          # e.g. eval.json's digit_coverage: {digit: coverage}
        return ", ".join(f"{k}: {_number(v)}" for k, v in value.items())
    return str(value)


def _figure(path: str, start: str) -> dict:
    name = os.path.basename(path)
    what = DESCRIPTIONS.get(name, os.path.splitext(name)[0].replace("_", " "))
    return {"src": _href(path, start), "alt": f"{what} ({name})", "caption": f"{name}: {what}"}


def run_pictures(run_dir: str) -> list[str]:
    """The run's PNG and GIF files: samples, animation and curves first, then the family's figures by name."""
    names = [n for n in os.listdir(run_dir) if n.endswith((".png", ".gif", ".svg")) and not n.startswith(".")]
    return [os.path.join(run_dir, n) for n in sorted(names, key=lambda n: (FIRST.index(n) if n in FIRST else
                                                                           len(FIRST), n))]


def equivalent_command(config: dict) -> str:
    """A `minigen train` command line that makes this run again (for runs made through the Python API)."""
    train = config.get("train", {})
    words = ["minigen", "train", config["model"], "--out", train.get("out", "RUN_DIR")]
    for option in ("dataset", "data_dir", "epochs", "seed", "train_n", "max_steps", "eval_n"):
        if train.get(option) is not None:
            words += ["--" + option.replace("_", "-"), str(train[option])]
    if train.get("conditional"):
        words.append("--conditional")
    return shlex.join(words)


def _curves(run_dir: str) -> None:
    """curves.png: one small plot per number logged at each step (loss, its terms, gradient norm ...)."""
    from minigen.plots import save_metric_curves
    from minigen.rundir import read_metrics
    steps = [r for r in read_metrics(run_dir) if r.get("kind") == "step"]
    series = {}
    for record in steps:
        for key, value in record.items():
            if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)):
                series.setdefault(key, []).append((record["step"], value))
    if series:
        save_metric_curves(series, os.path.join(run_dir, "curves.png"))


def write_run_report(run_dir: str) -> str:
    """RUN_DIR/index.html from what the run directory holds (config, summary, metrics, pictures)."""
    from minigen.rundir import read_eval, read_summary
    from minigen.train import CONFIG, read_config
    config = read_config(run_dir)
    _curves(run_dir)
    summary = read_summary(run_dir) or {}
    evaluated = read_eval(run_dir) or {}
    facts = ", ".join(f"{label} {_number(summary[key])}" for key, label in
                      (("epochs", "epochs"), ("steps", "steps"), ("train_seconds", "seconds of training"),
                       ("parameters", "parameters"), ("sample_seconds_per_image", "seconds per sample"))
                      if key in summary) or "not finished yet"
    files = [n for n in (CONFIG, "metrics.jsonl", "summary.json", EVAL, "checkpoint.npz")
             if os.path.exists(os.path.join(run_dir, n))]
    return _write(os.path.join(run_dir, REPORT), "run.html",
                  title=f"minigen run: {config['model']} ({os.path.basename(os.path.abspath(run_dir))})",
                  model=config["model"], facts=facts,
                  command=config.get("train", {}).get("command") or equivalent_command(config),
                  metrics=[(k, _number(v)) for k, v in summary.get("test", {}).items()],
                  eval_metrics=[(k, _number(v)) for k, v in evaluated.items()],
                  figures=[_figure(p, run_dir) for p in run_pictures(run_dir)],
                  config=json.dumps(config, indent=2),
                  files=[{"src": _href(os.path.join(run_dir, n), run_dir), "name": n} for n in files])


def write_tour_report(out_dir: str, result: dict, pictures: list[str], runs: list[str]) -> str:
    """OUT/index.html for the tour: the table, its figures and animations, links to each family's run report."""
    from minigen.data import label_noun
    from minigen.metrics import fid_name
    from minigen.tools.tour import perfect_model_line, table_header, table_rows
    return _write(os.path.join(out_dir, REPORT), "tour.html", title="minigen tour: every family side by side",
                  minutes=result["minutes"], dataset=result["dataset"], noun=label_noun(result["dataset"]),
                  fid=fid_name(result["dataset"]), header=table_header(result),
                  rows=table_rows(result), perfect=perfect_model_line(result),
                  figures=[_figure(p, out_dir) for p in pictures],
                  runs=[{"src": _href(os.path.join(r, REPORT), out_dir), "name": os.path.basename(r)} for r in runs])


def write_comparison(run_dirs: list[str], out_dir: str) -> str:
    """OUT/index.html: several runs side by side (their numbers in one table, their pictures in columns).
    Each run's own index.html is (re)written too, so the links resolve."""
    if not run_dirs:
        raise MinigenError("report: name at least one run directory")
    from minigen.rundir import read_summary
    from minigen.train import read_config
    runs, keys = [], []
    for run_dir in run_dirs:
        write_run_report(run_dir)
        config = read_config(run_dir)
        summary = read_summary(run_dir) or {}
        values = {"model": config["model"]}
        values.update((k, _number(summary[k])) for k in ("steps", "train_seconds", "parameters") if k in summary)
        values.update((f"test {k}", _number(v)) for k, v in summary.get("test", {}).items())
        keys += [k for k in values if k not in keys]
        shown = [p for p in run_pictures(run_dir) if os.path.basename(p) in ("samples.png", "generation.gif",
                                                                               "loss.png")]
        runs.append({"name": run_dir, "report": _href(os.path.join(run_dir, REPORT), out_dir), "numbers": values,
                     "command": config.get("train", {}).get("command") or equivalent_command(config),
                     "figures": [_figure(p, out_dir) for p in shown]})
    os.makedirs(out_dir, exist_ok=True)
    return _write(os.path.join(out_dir, REPORT), "compare.html", title=f"minigen: {len(runs)} runs side by side",
                  runs=runs, keys=keys)
