"""The sandbox every submission runs in: bubblewrap (`bwrap`), a well-kept tool, not home-made isolation.

    sandboxed(argv, inputs={host path: path inside}, env={...})  -> the bwrap command line that runs argv inside it

Inside: new PID, network, IPC, UTS and user namespaces (`--unshare-all`), uid/gid 65534 with no
capabilities, `--die-with-parent` and `--new-session`. The filesystem is only: the system's /usr
(and /etc, /lib*, /bin) read-only; the Python interpreter's prefix and the grader's own
import path read-only, with any installed `minigen` package hidden under an empty tmpfs; the
submission's files and the teacher's tests read-only at fixed places; a size-capped tmpfs for the
working folder (`/grading`) and `/tmp`. Nothing else of the host is there: not the teacher's
checkout, not other submissions, not the gradebook. Python is started with `-I -S`, so no `.pth`
file (an editable install's finder) runs: the import path is the one the grader passes in.

The rlimits (CPU seconds, address space, processes, open files, file size) are set by
minigen.tools.jobs.run_limited on the process that becomes bwrap, and so hold for everything inside.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from minigen.errors import MinigenError

__all__ = ["BWRAP", "INSTALL_HINT", "ROOT", "bwrap_path", "check_sandbox", "python_path", "sandboxed"]

BWRAP = "bwrap"
INSTALL_HINT = ("grading runs every submission in a bubblewrap sandbox, and `bwrap` was not found or does not "
                "work here: install it (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
                "it needs unprivileged user namespaces), or pass --no-sandbox to grade without one (unsafe for "
                "code you do not trust)")
ROOT = "/grading"                   # the working folder inside: the student's minigen/ and the tests/ live here
NOBODY = "65534"
WORK_BYTES = 512 * 1024 * 1024      # the tmpfs of /grading (pytest's tmp_path, HOME, caches)
TMP_BYTES = 64 * 1024 * 1024        # the tmpfs of /tmp
SYSTEM = ("/usr", "/etc", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


def bwrap_path() -> str | None:
    return shutil.which(BWRAP)


def check_sandbox() -> None:
    """Raise MinigenError (INSTALL_HINT) unless bwrap is installed and can start a sandbox here."""
    path = bwrap_path()
    if path:
        try:
            done = subprocess.run(sandboxed(["true"], inputs={}), capture_output=True, timeout=60)
            if done.returncode == 0:
                return
        except (OSError, subprocess.TimeoutExpired):
            pass
    raise MinigenError(INSTALL_HINT)


def python_path() -> list[str]:
    """The folders of this interpreter's import path that the sandbox may see: the standard library
    and the site-packages (numpy, numba, pytest, hypothesis; a virtualenv inside the checkout is
    fine), never the current folder or minigen's source checkout itself (an old-style editable
    install puts it on the path)."""
    from minigen.tools.assign import source_root
    checkout = os.path.realpath(source_root())
    keep = []
    for folder in sys.path:
        real = os.path.realpath(folder) if folder else ""
        if real and os.path.isdir(real) and real != checkout and real not in keep:
            keep.append(real)
    return keep


def _installed_minigen(folders: list[str]) -> list[str]:
    """Installed copies of the package (`pip install .` puts one in site-packages): hidden inside."""
    return [os.path.join(f, "minigen") for f in folders if os.path.isdir(os.path.join(f, "minigen"))]


def sandboxed(argv: list[str], *, inputs: dict, env: dict | None = None, cwd: str = ROOT) -> list[str]:
    """The bwrap command line that runs argv in the sandbox. inputs: {host path: path inside}, bound
    read-only; env: the whole environment inside (nothing of the caller's is inherited)."""
    path = bwrap_path() or BWRAP
    interpreter = os.path.realpath(sys.executable)
    prefixes = [os.path.realpath(p) for p in {sys.base_prefix, sys.prefix}]
    args = [path, "--unshare-all", "--die-with-parent", "--new-session", "--uid", NOBODY, "--gid", NOBODY,
            "--dev", "/dev", "--proc", "/proc"]
    for folder in SYSTEM:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    readable = sorted(set(prefixes + python_path() + [os.path.dirname(interpreter)]))
    for folder in readable:         # each once: not inside the system folders or another one bound
        if os.path.exists(folder) and not any(folder == s or folder.startswith(s + "/")
                                              for s in (*SYSTEM, *[r for r in readable if r != folder])):
            args += ["--ro-bind", folder, folder]
    for hidden in _installed_minigen(readable):
        args += ["--tmpfs", hidden]
    args += ["--size", str(WORK_BYTES), "--tmpfs", ROOT, "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for host, inside in inputs.items():
        args += ["--ro-bind", host, inside]
    args += ["--chdir", cwd, "--clearenv"]
    for name, value in (env or {}).items():
        args += ["--setenv", name, value]
    return args + ["--", *argv]
