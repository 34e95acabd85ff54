"""This process's resident memory from procfs, for the benchmarks' child processes (Linux; fallbacks elsewhere)."""

from __future__ import annotations

import ctypes
import resource
from pathlib import Path

from evaluator.memory_peak import status_mib


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB. ``VmHWM`` belongs to the process's own address space; ru_maxrss
    (the fallback) also counts the parent's peak on Linux, since it survives ``exec``."""
    hwm = status_mib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Reset the peak to the current resident set (Linux: ``5`` into ``/proc/self/clear_refs``), so that what
    follows is measured on its own; a no-op where that is not possible."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap (the phantoms' rendering) back first
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
