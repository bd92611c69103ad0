"""Large arrays reuse memory the process already has, instead of fresh pages from the OS.

Every op allocates its output, and every backward its gradients, afresh: one GAN training step at
batch 128 allocates and frees hundreds of MB. glibc's malloc serves a block above its mmap threshold
(128 KB at first) straight from the OS and gives back free memory at the top of its heap beyond a
trim threshold; the next array then lands on fresh pages, and the first write to each 4 KB page is a
page fault in which the kernel zeroes it. Measured on the Intel Xeon (rocketlake), per training step
at batch 128: 23,000 faults in the GAN's, 27,500 in the DDPM's (docs/measurements.md#allocator).

`keep_freed_memory` raises both thresholds (glibc's `mallopt`), so freed blocks stay in the process
and are reused: the faults fall to almost none and the peak resident size stays what it was (the
high-water mark of the live arrays; measured +3-8 MB). What the process has freed is not returned
to the OS until it exits. (PyTorch users get the same effect from jemalloc or tcmalloc.)

minigen calls it on import. MINIGEN_MALLOC=system leaves malloc as it is; on systems without glibc
nothing changes either.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

from minigen.errors import ConfigError

__all__ = ["keep_freed_memory", "CHOICES"]

CHOICES = ("keep", "system")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameters (malloc.h)
# Blocks up to 32 MB (glibc's most for the mmap threshold on 64-bit; one 128x64x28x28 float32 array is 25.7 MB)
# come from the heap; free memory at its top is kept up to 2 GB.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 2 << 30


def keep_freed_memory() -> bool:
    """Set malloc to keep freed memory for reuse (see the module docstring), unless MINIGEN_MALLOC=system.
    Returns whether malloc's settings were changed."""
    choice = os.environ.get("MINIGEN_MALLOC", "keep") or "keep"
    if choice not in CHOICES:
        raise ConfigError(f"MINIGEN_MALLOC={choice!r} is not an allocator setting; expected one of {', '.join(CHOICES)}")
    if choice == "system":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):         # not glibc (macOS, musl without mallopt): nothing to set
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
