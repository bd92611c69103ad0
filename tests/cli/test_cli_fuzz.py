"""A fuzz test of the command line: hypothesis draws subcommands, families, --set keys and values (wrong
types, negatives, zeros, huge numbers, NaN, strings, lists) and other options. Every outcome must be exit
status 0 or 2, with no traceback on stderr and nothing written outside the given --out.

Derandomized and small for CI (well under a minute); MINIGEN_FUZZ_EXAMPLES=2000 for a deliberate long run.
Most draws fail validation at once; the few that pass train for at most one step on 256 tiny images, and
MINIGEN_MEMORY_LIMIT keeps every model that passes small (a bigger one is refused with exit status 2).
"""
import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigen.cli import FAMILY_NAMES, main
from minigen.models import get_family
from tests.commands import run_in_process, write_noise_idx

EXAMPLES = int(os.environ.get("MINIGEN_FUZZ_EXAMPLES", "40"))
KNOBS = sorted({name for family in FAMILY_NAMES for name in get_family(family).default_config()})

json_values = st.one_of(
    st.integers(-3, 3), st.sampled_from([10**9, -(10**12), 2**63, 1e9, 1e300, 0.5, -0.0]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "true", "false", "null"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text("abc[]{},.:-01e \"'", max_size=8),
    st.lists(st.integers(-2, 70), max_size=4).map(json.dumps),
    st.sampled_from(["mlp", "conv", "linear", "cosine", "bernoulli", "ddim", "ancestral", "[8]", "[[1]]",
                     '{"a": 1}']),
)
set_options = st.lists(st.tuples(st.sampled_from(KNOBS + ["nosuch", ""]), json_values.map(str)), max_size=3)
numbers_as_text = st.one_of(st.integers(-5, 100).map(str),
                            st.sampled_from(["nan", "inf", "-1e9", "1e9", "x", "", "0x1"]))


@st.composite
def train_argv(draw):
    family = draw(st.sampled_from(FAMILY_NAMES + ["nosuch"]))
    own = sorted(get_family(family).default_config()) if family in FAMILY_NAMES else KNOBS
    argv = ["train", family]
    for _ in range(draw(st.integers(0, 3))):
        # mostly the family's own knobs, with values that are often valid; sometimes anything at all
        key = draw(st.sampled_from(own) | st.sampled_from(KNOBS + ["nosuch", ""]))
        value = draw(st.sampled_from(["1", "2", "4", "8", "0.5", "0.01", "true", "false", "null", "[8]", "[4, 8]"])
                     | json_values)
        argv += ["--set", f"{key}={value}"]
    for option in draw(st.lists(st.sampled_from(["--epochs", "--batch-size", "--lr", "--seed", "--train-n"]),
                                max_size=2, unique=True)):
        argv += [option, draw(numbers_as_text)]
    if draw(st.booleans()):
        argv.append("--conditional")
    return argv


@st.composite
def sample_argv(draw):
    argv = ["sample", "RUN"]
    for option in draw(st.lists(st.sampled_from(["--n", "--temperature", "--guidance", "--steps", "--label",
                                                 "--seed", "--method"]), max_size=3, unique=True)):
        value = draw(st.sampled_from(["ddim", "ancestral", "euler"])) if option == "--method" else draw(numbers_as_text)
        argv += [option, value]
    return argv


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder to run in: tiny IDX data, a one-step VAE run to sample from, and the places to watch."""
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "data"
    data.mkdir()
    write_noise_idx(data, 256, 8)
    run = root / "vae"
    assert main(["train", "vae", "--out", str(run), "--dataset", "mnist", "--data-dir", str(data), "--batch-size",
                 "8", "--max-steps", "1", "--eval-n", "0", "--no-progress", "--set", "hidden_dim=8"]) == 0
    return root, data, run


def snapshot(*folders):
    """Every file under the folders, with size and modification time."""
    files = {}
    for folder in folders:
        for dirpath, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(dirpath, name)
                st_ = os.stat(path)
                files[path] = (st_.st_size, st_.st_mtime_ns)
    return files


COUNTER = iter(range(10**9))


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=st.one_of(train_argv(), train_argv(), sample_argv()))
def test_every_command_line_ends_in_0_or_2_without_traceback(argv, sandbox, monkeypatch):
    root, data, run = sandbox
    monkeypatch.chdir(root)
    monkeypatch.setenv("MINIGEN_MEMORY_LIMIT", str(256 * 2**20))
    out = root / f"out{next(COUNTER)}"
    if argv[0] == "train":
        argv = argv + ["--out", str(out), "--dataset", "mnist", "--data-dir", str(data), "--max-steps", "1",
                       "--eval-n", "0", "--no-progress"]
    else:
        argv = ["sample", str(run)] + argv[2:] + ["--out", str(out / "grid.png")]
        out.mkdir()
    before = snapshot(root, os.environ["MINIGEN_DATA"])
    code, err = run_in_process(argv)
    assert code in (0, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 2:
        assert err.strip(), argv                            # a refusal says why
    after = snapshot(root, os.environ["MINIGEN_DATA"])
    outside = {p for p in set(after) ^ set(before) if not p.startswith(str(out) + os.sep)}
    changed = {p for p in set(after) & set(before) if after[p] != before[p] and not p.startswith(str(out) + os.sep)}
    assert not outside and not changed, (argv, outside, changed)


@pytest.mark.parametrize("argv", [
    ["train", "vae", "--set", "latent_dim=NaN"],
    ["train", "ddpm", "--set", "channels=[[1]]", "--lr", "-1"],
    ["train", "gan", "--set", "label_dim=1e999", "--batch-size", "x"],
])
def test_a_few_in_real_processes(argv, sandbox, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "minigen", *argv, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []
