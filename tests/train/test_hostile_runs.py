"""Run directories, sweeps and checkpoints under hostile input (issue 26): each damaged or crafted file a
command reads gets one line naming the file, the field and what was expected, and exit status 2 - never a
traceback, never a hang; a torn last metrics line (what a kill leaves) is dropped with a warning.

The first tests go through the issue's table row by row on copies of one tiny finished VAE run; the
hypothesis test at the end mutates its files at random (truncate, flip bytes, values of other types,
swapped or replaced arrays, a FIFO) and runs every command that reads them. Derandomized and small for
CI (about half a minute); MINIGEN_FUZZ_EXAMPLES=500 for a deliberate long run.
"""
import errno
import io
import json
import os
import shutil
import signal
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigen import nn, ops
from minigen.errors import ConfigError, MinigenError
from minigen.rundir import STATE
from minigen.tools.sweep import load_spec, plan
from minigen.tensor import Tensor
from minigen.train import CHECKPOINT, CONFIG, METRICS
from tests.commands import run_in_process, write_noise_idx

EXAMPLES = int(os.environ.get("MINIGEN_FUZZ_EXAMPLES", "40"))
SECONDS_PER_COMMAND = 30        # a command still running after this long counts as a hang


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data folder, a finished two-step VAE run with test metrics and eval.json, a sweep folder holding a
    copy of that run as its one run)."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    data.mkdir()
    write_noise_idx(data, 64, 8)
    run = root / "run"
    code, err = run_in_process(["train", "vae", "--out", str(run), "--dataset", "mnist", "--data-dir", str(data),
                                "--batch-size", "8", "--max-steps", "2", "--eval-n", "8", "--no-progress",
                                "--set", "hidden_dim=8", "--set", "iw_samples=2"])
    assert code == 0, err
    assert run_in_process(["eval", str(run), "--n", "4"])[0] == 0
    spec = root / "sweep.toml"
    spec.write_text('[train]\nmodel = "vae"\nmax_steps = 2\n')
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text(json.dumps(load_spec(str(spec)), indent=2))    # as `minigen sweep` claims it
    shutil.copytree(run, sweep / "run")
    assert run_in_process(["sweep", str(spec), "--out", str(sweep), "--no-progress"])[0] == 0
    return data, run, spec, sweep


@pytest.fixture
def run(finished, tmp_path):
    """A fresh copy of the finished run, to damage."""
    shutil.copytree(finished[1], tmp_path / "run")
    return tmp_path / "run"


def one_line(argv, pattern=None):
    """Run the command in-process: exit status 2, its last stderr line one `minigen: error:` line (matching
    `pattern`), no traceback. Returns that line."""
    code, err = run_in_process(argv)
    lines = err.strip().splitlines()
    assert code == 2 and lines, (argv, code, err)
    assert "Traceback" not in err and [line.startswith("minigen: error:") for line in lines].count(True) == 1, err
    if pattern is not None:
        assert pattern in lines[-1], (pattern, lines[-1])
    return lines[-1]


def npy(array) -> bytes:
    f = io.BytesIO()
    np.save(f, array)
    return f.getvalue()


def rewrite_members(path, change: dict) -> None:
    """Rewrite the .npz at `path` with members replaced ({name: .npy bytes}) or removed ({name: None})."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename.removesuffix(".npy"): archive.read(info) for info in archive.infolist()}
    members.update(change)
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            if content is not None:
                archive.writestr(name + ".npy", content)


def edit_meta(path, change) -> None:
    """Apply change(meta dict) to the checkpoint's __meta__ JSON."""
    with np.load(path) as data:
        meta = json.loads(str(data["__meta__"]))
    change(meta)
    rewrite_members(path, {"__meta__": npy(np.array(json.dumps(meta)))})


def huge_header() -> bytes:
    """A .npy member whose header claims 36 TiB of float64 but holds 8 bytes."""
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (36 * 2**40 // 8,)})
    return f.getvalue() + bytes(8)


# --- the rows, one by one -------------------------------------------------------------------
def test_a_first_start_that_fails_before_its_first_checkpoint_is_no_dead_end(finished, tmp_path):
    data, run = finished[0], tmp_path / "new"
    argv = ["train", "vae", "--out", run, "--dataset", "mnist", "--batch-size", "8", "--max-steps", "2",
            "--eval-n", "0", "--no-progress", "--set", "hidden_dim=8"]
    one_line(argv + ["--data-dir", tmp_path / "nosuch"], "nosuch")
    assert json.loads((run / STATE).read_text())["state"] == "failed"
    # --resume says what happened and what to run; the same command (its data folder fixed) starts it again
    line = one_line(["train", "--resume", run], "never reached a checkpoint (it failed: ")
    assert f"start it again with the same command: minigen train vae --out {run}" in line
    code, err = run_in_process([*argv, "--data-dir", data])
    assert code == 0 and "starting it again there" in err, err
    assert json.loads((run / STATE).read_text()) == {"state": "finished", "reason": ""}


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(run, tmp_path):
    with open(run / METRICS, "a") as f:
        f.write('{"kind": "step", "st')
    for argv in (["eval", run, "--n", "4"], ["report", run, "--out", tmp_path / "report"]):
        code, err = run_in_process(argv)
        assert code == 0 and f"{run / METRICS} line" in err and "torn" in err, err


@pytest.mark.parametrize("name, content, pattern", [
    ("summary.json", '{"model": "vae", "ste', "summary.json: not valid JSON"),
    (METRICS, '{"kind": "step", "step": 1, "loss": 1.0}\nnot json\n{"kind": "epoch", "step": 2}\n',
     "metrics.jsonl line 2: expected a JSON object"),
    (METRICS, '{"kind": "step", "step": "abc", "loss": 1.0}\n{"kind": "epoch", "step": 2}\n',
     "line 1: field 'step': expected a non-negative integer"),
])
def test_torn_or_wrong_summary_and_metrics_are_one_line_in_eval_and_report(run, tmp_path, name, content, pattern):
    (run / name).write_text(content)
    one_line(["report", run, "--out", tmp_path / "report"], pattern)
    one_line(["eval", run, "--n", "4"], pattern)


@pytest.mark.parametrize("content, pattern", [
    ("{not json", "config.json: not valid JSON"),
    ("", "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a run's configuration: a JSON object with model, model_config and train, "
               "found a list"),
    ('{"model_config": {}, "train": {}}', "config.json: no field 'model'; expected a model family"),
    ('{"model": "vae", "train": {}}', "no field 'model_config'"),
    ('{"model": "vae", "model_config": {}}', "no field 'train'"),
    ('{"model": "vae", "model_config": {}, "train": {"epochs": "abc"}}',
     "config.json: field 'train.epochs': expected an integer, found a string"),
    ('{"model": "vae", "model_config": {}, "train": {"epochs": -3}}', "field 'train': --epochs must be a positive"),
])
def test_a_damaged_config_is_one_line_in_every_command(run, tmp_path, content, pattern):
    (run / CONFIG).write_text(content)
    for argv in (["sample", run, "--out", tmp_path / "s.png"], ["eval", run], ["train", "--resume", run],
                 ["report", run, "--out", tmp_path / "report"]):
        if "--epochs" in pattern and argv[0] != "train":
            continue          # only a resume reads the training options back
        one_line(argv, pattern)


@pytest.mark.parametrize("damage, pattern, resuming", [
    (lambda p: rewrite_members(p, {"__meta__": npy(np.array([1, 2]))}), "member '__meta__' has dtype", False),
    (lambda p: rewrite_members(p, {"__meta__": npy(np.array("[1, 2]"))}), "'__meta__': expected a JSON object", False),
    (lambda p: rewrite_members(p, {"__format__": npy(np.arange(3))}), "member '__format__': expected an integer",
     False),
    (lambda p: rewrite_members(p, {"__format__": None}), "not a minigen checkpoint (no __format__ inside)", False),
    (lambda p: edit_meta(p, lambda m: m.pop("model")), "checkpoint.npz: no field 'model'", False),
    (lambda p: edit_meta(p, lambda m: m.pop("optimizers")), "no field 'optimizers'", True),
    (lambda p: edit_meta(p, lambda m: m.pop("rng")), "no field 'rng'", True),
    (lambda p: edit_meta(p, lambda m: m.update(step="abc")), "field 'step': expected a non-negative integer", True),
    (lambda p: edit_meta(p, lambda m: m["rng"].update(state=5)), "member 'rng' does not fit this run", True),
    (lambda p: rewrite_members(p, {"model/enc_mu.bias": npy(np.array(["a", "b"]))}),
     "member 'model/enc_mu.bias' has dtype <U1; expected booleans, integers or real floats", False),
    (lambda p: rewrite_members(p, {"model/enc_mu.bias": huge_header()}),
     "member 'model/enc_mu.bias' claims shape (4947802324992,) of float64 (39,582,418,599,936 bytes)", False),
    (lambda p: rewrite_members(p, {"model/enc_mu.bias": npy(np.zeros(20, np.complex64))}), "has dtype complex64",
     False),
    (lambda p: rewrite_members(p, {"model/enc_mu.bias": npy(np.full(20, np.nan, np.float32))}),
     "model/enc_mu.bias hold(s) NaN or infinity; expected finite weights (--allow-non-finite", False),
    (lambda p: rewrite_members(p, {"model/enc_mu.bias": npy(np.zeros(3, np.float32))}),
     "member 'model': load_state_dict into VAE: mis-shaped: enc_mu.bias", False),
    (lambda p: (os.unlink(p), os.mkfifo(p)), "checkpoint.npz: expected a regular file, found a FIFO", False),
    (lambda p: p.write_bytes(p.read_bytes()[:300]), "checkpoint is truncated or corrupt", False),
])
def test_a_crafted_checkpoint_is_one_line(run, tmp_path, damage, pattern, resuming):
    damage(run / CHECKPOINT)
    commands = [["train", "--resume", run, "--no-progress"]]
    if not resuming:          # what sample and eval do not read, only a resume needs
        commands += [["sample", run, "--out", tmp_path / "s.png"], ["eval", run, "--n", "4"]]
    with time_limit(SECONDS_PER_COMMAND):
        for argv in commands:
            one_line(argv, pattern)


def test_non_finite_weights_load_when_asked_for(run, tmp_path):
    rewrite_members(run / CHECKPOINT, {"model/enc_mu.bias": npy(np.full(20, np.nan, np.float32))})
    code, err = run_in_process(["sample", str(run), "--out", str(tmp_path / "s.png"), "--allow-non-finite"])
    assert code == 0 and (tmp_path / "s.png").exists(), err


@pytest.mark.parametrize("spec, pattern", [
    ("train = 5", "[train] must be a table (KEY = VALUE lines under a [train] header), got 5"),
    ('train = "abc"', "[train] must be a table"),
    ("grid = [1, 2]", "[grid] must be a table"),
    ('[train]\nmodel = "vae"\nset = 5', "[train.set] must be a table"),
    ('[train]\nmodel = "vae"\n[grid]\n"set.latent_dim" = ["2", 2]',
     'grid points {"set.latent_dim": "2"} and {"set.latent_dim": 2} would both be run \'latent_dim=2\''),
])
def test_a_bad_sweep_spec_is_one_line_before_anything_runs(tmp_path, spec, pattern):
    (tmp_path / "s.toml").write_text(spec + "\n")
    one_line(["sweep", tmp_path / "s.toml", "--out", tmp_path / "out"], pattern)
    assert not (tmp_path / "out").exists()


def test_a_huge_grid_is_refused_with_its_count_unless_allowed(tmp_path):
    grid = "\n".join(f'"set.k{i}" = [{", ".join(map(str, range(20)))}]' for i in range(8))
    (tmp_path / "s.toml").write_text(f'[train]\nmodel = "vae"\n[grid]\n{grid}\n')
    one_line(["sweep", tmp_path / "s.toml", "--out", tmp_path / "out"],
             "the grid makes 25,600,000,000 runs (20 x 20 x 20 x 20 x 20 x 20 x 20 x 20 values of set.k0")
    small = load_spec(str(tmp_path / "s.toml"))
    small["grid"] = {"set.k0": list(range(20)), "set.k1": list(range(60))}
    with pytest.raises(MinigenError, match="1,200 runs"):
        plan(small)
    assert len(plan(small, max_runs=1200)) == 1200


def test_a_corrupt_sweep_json_in_out_is_one_line(finished, tmp_path):
    _, _, spec, sweep = finished
    shutil.copytree(sweep, tmp_path / "sweep")
    (tmp_path / "sweep" / "sweep.json").write_text('{"seed": 0, "tra')
    one_line(["sweep", spec, "--out", tmp_path / "sweep", "--no-progress"], "sweep.json: not valid JSON")


def test_sample_out_must_be_a_picture_file(run, tmp_path):
    one_line(["sample", run, "--out", tmp_path / "x.txt"], "x.txt: expected a file name ending in .png or .svg or .pdf")
    one_line(["sample", run, "--out", tmp_path], f"--out {tmp_path} is a folder; expected a file name such as")


def test_a_full_disk_names_the_file(run, tmp_path, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_space)
    one_line(["sample", run, "--out", tmp_path / "s.png"], f"{tmp_path / 's.png'}: No space left on device")
    one_line(["eval", run, "--n", "4"], f"{run / 'eval.json'}: No space left on device")
    assert f"{run}/" in one_line(["train", "--resume", run, "--no-progress"], "No space left on device")
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path, monkeypatch):
    import minigen.train

    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(minigen.train, "open", lambda *args: FullDisk(), raising=False)
    with pytest.raises(OSError) as raised:
        minigen.train._log(str(tmp_path), {"kind": "step", "step": 1, "loss": 0.5})
    assert raised.value.filename == str(tmp_path / METRICS)


def test_resuming_a_finished_run_keeps_one_test_record(run):
    assert run_in_process(["train", "--resume", str(run), "--no-progress"])[0] == 0
    records = [json.loads(line) for line in (run / METRICS).read_text().splitlines()]
    assert [r["kind"] for r in records].count("test") == 1


@pytest.mark.parametrize("build, pattern", [
    (lambda: nn.Linear(0, 3), "Linear: in_features must be a positive integer, got 0"),
    (lambda: nn.Linear(-1, 3), "Linear: in_features must be a positive integer, got -1"),
    (lambda: nn.Linear(4, 2.5), "Linear: out_features must be a positive integer, got 2.5"),
    (lambda: nn.Conv2d(3, 4, 0), "Conv2d: kernel_size must be a positive integer, got 0"),
    (lambda: nn.Conv2d(3, 4, 3, stride=(1, 0)), "Conv2d: stride must be a positive integer (or a pair of them)"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "Conv2d: padding must be a non-negative integer, got -1"),
    (lambda: nn.Conv2d(3, 4, 3, groups=2), "divisible by groups=2"),
    (lambda: nn.ConvTranspose2d(3, 0, 4), "ConvTranspose2d: out_channels must be a positive integer"),
    (lambda: nn.MaskedConv2d(1, 4, 3, "C"), "MaskedConv2d: mask_type must be 'A' or 'B'"),
    (lambda: nn.Embedding(10, 0), "Embedding: dim must be a positive integer"),
    (lambda: nn.GroupNorm(0, 4), "GroupNorm: num_groups must be a positive integer"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size must be a positive integer"),
    (lambda: nn.Upsample(0), "Upsample: scale_factor must be a positive integer"),
    (lambda: nn.Dropout(1.5), "Dropout: p must be in [0, 1)"),
    (lambda: ops.mse_loss(Tensor(np.ones(3, np.float32)), Tensor(np.ones(3, np.float32)), reduction="avg"),
     "mse_loss: reduction must be one of 'mean', 'sum', 'none', got 'avg'"),
])
def test_library_constructors_name_the_bad_argument(build, pattern):
    with pytest.raises(ConfigError) as raised:
        build()
    assert pattern in str(raised.value)


def test_evaluation_memory_joins_the_estimate(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGEN_MEMORY_LIMIT", str(4 * 2**30))       # the default VAE needs far less
    one_line(["train", "vae", "--out", tmp_path / "v", "--set", "iw_samples=100000", "--set", "eval_batch_size=100000",
              "--set", "eval_examples=null"],
             "vae: evaluating this model would need about ")
    assert not (tmp_path / "v").exists()


# --- the fuzz test: every command on randomly damaged files ---------------------------------------------
class Hang(Exception):
    pass


class time_limit:
    """Raise Hang in the main thread if the block runs longer than `seconds` (SIGALRM)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def alarm(signum, frame):
            raise Hang(f"still running after {self.seconds} s")
        self.previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.previous)


OTHER_VALUES = [None, True, -1, 0, 2**63, 1e308, 0.5, "", "abc", "vae", [], [1, "x"], {}, {"a": 1}]
REPLACEMENT_ARRAYS = [np.array("abc"), np.zeros(3, np.complex64), np.zeros((2, 2), np.float32), np.array(5),
                      np.full(20, np.inf, np.float32), np.zeros(0, np.float32)]
RUN_FILES = [CONFIG, METRICS, "summary.json", "eval.json", STATE, CHECKPOINT]


def json_paths(value, path=()):
    """Every place in a JSON document: the root, then each key or index, depth first."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield from json_paths(child, path + (key,))


def replaced(document, path, new):
    if not path:
        return new
    document[path[0]] = replaced(document[path[0]], path[1:], new)
    return document


def mutate(path, data) -> None:
    """Damage the file at `path` one way, drawn with hypothesis' `data`."""
    content = path.read_bytes()
    kinds = ["truncate", "flip", "empty", "fifo"]
    if path.suffix == ".npz":
        kinds += ["swap arrays", "replace array", "retype meta"]
    elif path.suffix == ".json":
        kinds += ["retype"] * 3
    elif path.suffix == ".jsonl":
        kinds += ["retype line"] * 3
    kind = data.draw(st.sampled_from(kinds), label="mutation")
    if kind == "truncate":
        path.write_bytes(content[:data.draw(st.integers(0, max(len(content) - 1, 0)), label="keep bytes")])
    elif kind == "flip":
        damaged = bytearray(content)
        for _ in range(data.draw(st.integers(1, 4))):
            damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(damaged))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif kind == "retype":
        document = json.loads(content)
        where = data.draw(st.sampled_from(list(json_paths(document))), label="path")
        path.write_text(json.dumps(replaced(document, where, data.draw(st.sampled_from(OTHER_VALUES)))))
    elif kind == "retype line":
        lines = content.decode().splitlines()
        number = data.draw(st.integers(0, len(lines) - 1), label="line")
        record = json.loads(lines[number])
        where = data.draw(st.sampled_from(list(json_paths(record))), label="path")
        lines[number] = json.dumps(replaced(record, where, data.draw(st.sampled_from(OTHER_VALUES))))
        path.write_text("\n".join(lines) + "\n")
    else:
        with zipfile.ZipFile(path) as archive:
            names = [info.filename.removesuffix(".npy") for info in archive.infolist()]
        arrays = [n for n in names if not n.startswith("__")]
        if kind == "swap arrays":
            a, b = data.draw(st.lists(st.sampled_from(arrays), min_size=2, max_size=2, unique=True), label="swap")
            with zipfile.ZipFile(path) as archive:
                rewrite = {a: archive.read(b + ".npy"), b: archive.read(a + ".npy")}
            rewrite_members(path, rewrite)
        elif kind == "replace array":
            rewrite_members(path, {data.draw(st.sampled_from(arrays), label="array"):
                                   npy(data.draw(st.sampled_from(REPLACEMENT_ARRAYS), label="by"))})
        else:
            def retype(meta):
                where = data.draw(st.sampled_from(list(json_paths(meta))[1:]), label="meta path")
                replaced(meta, where, data.draw(st.sampled_from(OTHER_VALUES)))
            edit_meta(path, retype)


def file_states(folder) -> dict:
    """{relative path: bytes, or the kind of a file that is not regular}."""
    states = {}
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        states[name] = "fifo" if not os.path.isfile(full) else open(full, "rb").read()
    return states


COMMANDS = {   # what each command may write in the run directory it is given
    "sample": set(), "eval": {"eval.json", "index.html", "curves.png"}, "report": {"index.html", "curves.png"},
    "train --resume": {STATE, "train.lock"}, "sweep": {"index.html", "curves.png"},
}


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from(sorted(COMMANDS)), file=st.sampled_from(RUN_FILES), data=st.data())
def test_every_command_on_a_damaged_run_ends_in_0_or_2_in_time_and_changes_nothing(finished, tmp_path_factory,
                                                                                   command, file, data):
    _, original, spec, sweep = finished
    work = tmp_path_factory.mktemp("case")
    if command == "sweep":
        shutil.copytree(sweep, work / "sweep")
        run = work / "sweep" / "run"
        file = data.draw(st.sampled_from(["../sweep.json", "../results.json", "summary.json"]), label="sweep file")
    else:
        run = work / "run"
        shutil.copytree(original, run)
    target = run / file
    mutate(target, data)
    folder = target.parent
    before = file_states(folder)
    argv = {"sample": ["sample", run, "--n", "2", "--out", work / "s.png"], "eval": ["eval", run, "--n", "4"],
            "report": ["report", run, "--out", work / "report"],
            "train --resume": ["train", "--resume", run, "--max-steps", "3", "--no-progress"],
            "sweep": ["sweep", spec, "--out", work / "sweep", "--no-progress"]}[command]
    with time_limit(SECONDS_PER_COMMAND):
        code, err = run_in_process(argv)
    assert code in (0, 2) and "Traceback" not in err, (argv, file, code, err)
    if code == 2:
        errors = [line for line in err.strip().splitlines() if line.startswith("minigen: error:")]
        assert len(errors) == 1 and err.strip().endswith(errors[0]), err
    if code == 2 or command != "train --resume":           # a resume that goes ahead continues the run
        after = file_states(folder)
        may_write = COMMANDS[command] | ({"results.json", "results.csv", "plots"} if command == "sweep" else set())
        changed = {n for n in set(before) | set(after) if before.get(n) != after.get(n) and n not in may_write}
        assert not changed, (argv, file, changed, err)
