"""Many independent jobs, each supervised in a subprocess of its own: the engine behind
`minigen assign grade` and `minigen sweep`.

Two layers, kept apart:

    run_limited(argv, timeout=..., memory_mb=...)
        runs one command in a new process group with a memory limit (RLIMIT_AS) and a wall-clock
        timeout that kills the whole group; says how it ended. The job's work always happens here,
        never inside the scheduler's worker, so a job that hangs or eats memory harms only itself.
    run_jobs(function, items, workers=N | scheduler="tcp://HOST:8786")
        calls function(item) for every item on Dask distributed (a LocalCluster of N single-threaded
        worker processes on 127.0.0.1 by default, or the cluster at `scheduler`) and yields
        (item, result) as each finishes. Without Dask (or with MINIGEN_NO_DASK=1) the same calls run in
        a concurrent.futures process pool, with the same results and a one-line notice.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from minigen.errors import MinigenError

__all__ = ["Finished", "run_limited", "run_jobs", "dask_available"]

NO_DASK_ENV = "MINIGEN_NO_DASK"


@dataclass
class Finished:
    """How one limited command ended. `how`: "exited" (see returncode), "timeout" or "killed"
    (a signal: the OOM killer, a crash in native code); `seconds`: wall-clock time."""
    how: str
    returncode: int | None
    seconds: float
    output: str          # stdout and stderr together, the last 20,000 characters


# Runs first in the job's process, then becomes the command (exec): asks Linux to send it a signal
# when its supervisor dies (so killing a sweep or a grader leaves no orphan training or grading),
# and sets the rlimits: the address space, so an allocation past the limit fails (MemoryError)
# instead of swapping the machine, and any others asked for (a sandbox's CPU time, processes,
# files). A preexec_fn could do the same, but it is not safe in a threaded parent such as a Dask worker.
_SUPERVISED = """
import ctypes, json, os, resource, sys
parent, signum, limits = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signum)      # 1: PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass                                                     # not Linux: no parent-death signal
if os.getppid() != parent:
    sys.exit(128 + signum)                                   # the supervisor died before prctl
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))
os.execvp(sys.argv[4], sys.argv[4:])
"""


def run_limited(argv: list[str], *, timeout: float | None = None, memory_mb: int | None = None, cwd: str | None = None,
                env: dict | None = None, stdin_text: str | None = None, pass_fds=(),
                on_parent_death: int = signal.SIGKILL, log: str | None = None, rlimits: dict | None = None) -> Finished:
    """Run argv in a new session (its own process group) with the limits; on timeout, SIGKILL the
    whole group, so no child it started outlives it. If this (supervising) process dies first, the
    command gets the signal on_parent_death (SIGTERM lets a training run save a checkpoint).
    log: a file its output is appended to as it runs (else it is only collected).
    rlimits: more limits, {"RLIMIT_NPROC": 256, ...} (names of the resource module)."""
    limits = {**({"RLIMIT_AS": memory_mb * 1024 * 1024} if memory_mb else {}), **(rlimits or {})}
    argv = [sys.executable, "-c", _SUPERVISED, str(os.getpid()), str(int(on_parent_death)), json.dumps(limits), *argv]
    sink = open(log, "a") if log else subprocess.PIPE
    start = sink.tell() if log else 0
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin_text is not None else
                                subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, pass_fds=pass_fds)
        try:
            output, _ = proc.communicate(stdin_text, timeout=timeout)
            how = "exited" if proc.returncode >= 0 else "killed"
        except subprocess.TimeoutExpired:
            how = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)      # the group: children it left behind, or all of it on timeout
            except ProcessLookupError:
                pass
        if how == "timeout":
            output, _ = proc.communicate()
    finally:
        if log:
            sink.close()
    if log:                     # only the tail: a job that printed gigabytes must not fill this process
        with open(log, "rb") as f:
            f.seek(max(start, f.seek(0, os.SEEK_END) - 20000))
            output = f.read().decode("utf-8", errors="replace")
    return Finished(how, proc.returncode, time.perf_counter() - started, (output or "")[-20000:])


def dask_available() -> bool:
    """True when dask.distributed imports and MINIGEN_NO_DASK is not set."""
    if os.environ.get(NO_DASK_ENV):
        return False
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        return False
    return True


def run_jobs(function, items: list, *, workers: int = 1, scheduler: str | None = None, use_dask: bool | None = None,
             notice=None):
    """Yield (item, function(item)) for every item, in the order they finish.

    function must be importable by name on the workers (a module-level function of minigen) and
    should not raise: it reports its own failures in its result. use_dask: None = when available."""
    if workers < 1:
        raise MinigenError(f"--workers must be a positive integer, got {workers}")
    notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))
    use_dask = dask_available() if use_dask is None else use_dask
    if scheduler and not use_dask:
        raise MinigenError(f"--scheduler {scheduler} needs Dask distributed: pip install -e \".[distributed]\" "
                           f"(or drop --scheduler to use local worker processes)")
    if not items:
        return
    if use_dask:
        yield from _run_on_dask(function, items, workers, scheduler)
    else:
        notice(f"minigen: running {len(items)} job(s) in {workers} local worker process(es) "
               f"(Dask distributed not in use; pip install -e \".[distributed]\" for clusters)")
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(function, item): item for item in items}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _run_on_dask(function, items, workers, scheduler):
    from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as e:
            raise MinigenError(f"--scheduler {scheduler}: no Dask scheduler answers there ({e})") from None
        cluster = None
    else:
        # single-threaded worker processes: each job supervises one subprocess, and numba/BLAS
        # in that subprocess get the cores; no dashboard, nothing listening beyond 127.0.0.1
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        client = Client(cluster)
    try:
        futures = {client.submit(function, item, pure=False): index for index, item in enumerate(items)}
        for future in dask_completed(futures):
            yield items[futures[future]], future.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
