"""Evaluation loops over images in worker processes, for a CPU whose cores one process does not keep busy.

A cascade's image spends about a third of its time outside the compiled engine (decoding, perturbing, sampling
stage 1's probabilities, blending, counting) on one core. Two processes with one torch thread each get through the
robustness report's images about 1.2 times as fast as one process with two threads on a 2-core CPU, with the same
results: the AOTInductor engines and the rest of the path give the same values at any thread count (checked on the
demo's engines; the reports' rows come out equal).

A worker builds its own evaluation state once (``builder(*args)``: e.g. the engine and settings of an eval config)
and then maps jobs through it; results come back in the jobs' order.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

from handseg.runtime.process_map import process_map

_STATE: dict = {}


def _setup(builder: Callable, args: tuple, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _STATE["fn"] = builder(*args)


def _call(*job):
    return _STATE["fn"](*job)


def map_in_workers(builder: Callable, args: tuple, jobs: Sequence[tuple], workers: int, desc: str, unit: str,
                   progress: bool = True) -> Iterator:
    """Yield ``builder(*args)(*job)`` for each job, in order, from ``workers`` spawned processes (``builder``
    importable at module level, called once per process), each with ``cores // workers`` torch threads; with one
    worker (or one job), in this process."""
    threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    if workers <= 1 or len(jobs) < 2:  # no pool: this process builds the state and keeps its threads
        _STATE["fn"] = builder(*args)
    try:
        yield from process_map(_call, jobs, workers, desc, unit, progress, initializer=_setup,
                               initargs=(builder, args, threads))
    finally:
        _STATE.pop("fn", None)
