"""Peak memory during a measurement, sampled by a background thread: a process's RSS on the CPU, and on a GPU both
what torch's allocator holds and what the device has in use (which also sees TensorRT's and AOTInductor's own
allocations, outside torch's allocator)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import psutil
import torch


def status_mib(key: str) -> float | None:
    """A ``/proc/self/status`` memory line (``VmRSS``, ``VmHWM``: the peak) in MiB; None where there is no procfs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakSampler:
    """Context manager sampling ``read()`` (bytes) in a background thread every ``interval_s``; ``peak`` and
    ``base`` (the value on entry) in bytes."""

    def __init__(self, read: Callable[[], int], interval_s: float = 0.002):
        self._read = read
        self._interval = interval_s
        self._stop = threading.Event()
        self.base = self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._read())
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakSampler":
        self.base = self.peak = self._read()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._read())


class PeakRSS(PeakSampler):
    """This process's resident set size, sampled (see :class:`PeakSampler`)."""

    def __init__(self, interval_s: float = 0.002):
        process = psutil.Process()
        super().__init__(lambda: process.memory_info().rss, interval_s)


def device_used(device: str) -> int:
    """Bytes in use on the CUDA ``device``, by anyone (total - free)."""
    free, total = torch.cuda.mem_get_info(device)
    return int(total - free)


@contextmanager
def cuda_memory(device: str) -> Iterator[dict]:
    """Peak memory on the CUDA ``device`` during the block: the dict gets ``peak``/``increase`` (torch's allocator)
    and ``device_peak``/``device_increase`` (the device's used memory), in bytes."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base, found = torch.cuda.memory_allocated(device), {}
    with PeakSampler(lambda: device_used(device)) as used:
        yield found
        torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    found.update(peak=peak, increase=peak - base, device_peak=used.peak, device_increase=used.peak - used.base)
