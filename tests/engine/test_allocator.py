"""minigen/allocator.py: with minigen imported, arrays allocated and freed over and over (as every
training step does) reuse the process's memory instead of page-faulting fresh pages in."""
import os
import platform
import subprocess
import sys

import pytest

from minigen import allocator
from minigen.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = """
import resource
import minigen, numpy as np
def one_step():     # arrays of a training step's sizes (6.4, 3.2, 12.8 MB ...), all freed at the end
    arrays = [np.ones(n, np.float32) for n in (1_600_000, 800_000, 3_200_000, 400_000, 1_600_000)]
    del arrays
one_step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    one_step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(setting: str) -> float:
    env = {**os.environ, "MINIGEN_MALLOC": setting, "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", ROUNDS], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_arrays_are_reused_without_page_faults():
    kept, system = faults_per_step("keep"), faults_per_step("system")
    assert kept < 50                 # 7.6 M floats allocated per step: 7,400 pages if all were fresh
    assert system > 1000             # glibc as it is: most of them fresh again every step


def test_a_bad_setting_names_the_choices(monkeypatch):
    monkeypatch.setenv("MINIGEN_MALLOC", "jemalloc")
    with pytest.raises(ConfigError, match=r"MINIGEN_MALLOC='jemalloc' is not an allocator setting; expected one of "
                                          r"keep, system"):
        allocator.keep_freed_memory()
    monkeypatch.setenv("MINIGEN_MALLOC", "system")
    assert allocator.keep_freed_memory() is False
