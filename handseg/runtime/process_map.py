"""An ordered map over worker processes, for CPU-bound jobs that draw from their own seeded streams.

Spawned (not forked) processes: a parent whose OpenCV or torch threads already ran cannot fork safely. Each job's
result comes back in the order of the jobs, so what a caller writes from the results does not depend on the number
of workers.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterator, Sequence


def process_map(fn: Callable, jobs: Sequence[tuple], workers: int = 1, desc: str | None = None, unit: str = "it",
                progress: bool = True, initializer: Callable | None = None, initargs: tuple = ()) -> Iterator:
    """Yield ``fn(*job)`` for each job of ``jobs``, in order: in this process when ``workers`` <= 1 (or for one
    job), else in ``min(workers, len(jobs))`` spawned processes (``fn`` must be importable at module level), each
    set up by ``initializer(*initargs)`` first (only there: in this process ``fn`` runs as it is). A progress bar
    ``desc`` counts the finished jobs."""
    from tqdm.auto import tqdm

    with tqdm(total=len(jobs), desc=desc, unit=unit, disable=not progress) as bar:
        if workers <= 1 or len(jobs) < 2:
            for job in jobs:
                yield fn(*job)
                bar.update()
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context, initializer=initializer,
                                 initargs=initargs) as pool:
            for result in pool.map(fn, *zip(*jobs)):
                yield result
                bar.update()
