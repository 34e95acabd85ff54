"""Every random number generator a training process draws from, captured and restored for an exact resume.

Dropout and drop-path draw from torch's global CPU (or CUDA) generator; albumentations and the phantom code may
use numpy's and Python's. Each process saves its own states (``rng_<rank>`` in the state folder) and restores them
as the last step of a resume, so the next optimiser step draws exactly what the uninterrupted run drew.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from handseg.runtime.errors import HandSegError


def seed_process(seed: int, rank: int) -> None:
    """Give each process its own stream of torch's global generators (dropout and drop-path masks differ across
    GPUs, as in any data-parallel run): process ``rank`` > 0 reseeds them with ``seed + rank``, called once the
    model is built, so that every process starts from the same weights. Process 0 keeps the stream
    ``set_seed(seed)`` started: a single-process run draws exactly what it drew before."""
    if rank > 0:
        torch.manual_seed(seed + rank)


def capture(cuda: bool) -> dict[str, Any]:
    """This process's generator states as a tree of tensors and numbers (see :mod:`trainer.tree_io`); ``cuda``:
    also the CUDA generators (a run on a CUDA device)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt_state, gauss_next = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(mt_state), "gauss_next": gauss_next},
    }
    if cuda:
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore(states: dict[str, Any]) -> None:
    """Set this process's generators to ``states`` (from :func:`capture`)."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    cuda = states.get("cuda")
    if cuda is not None:
        if not torch.cuda.is_available() or torch.cuda.device_count() != len(cuda):
            found = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise HandSegError(f"the saved state comes from a machine with {len(cuda)} CUDA device(s), this one has "
                               f"{found}: an exact resume needs the same devices")
        torch.cuda.set_rng_state_all(cuda)
