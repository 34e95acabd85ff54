"""Write the failure cases (:mod:`handseg.phantom.failures`) as small test sets, one folder per case.

```
<out>/<case>/test/DCM/ID001/image<13 digits>_R.png    (and _L.png)
<out>/<case>/test_labels/outputs_json/ID001/...json    exact labels (a bone cut away or absent has no polygon);
                                                       attributes.phantom.failure = {"case", "bones"}
<out>/<case>/preview.png                               optional contact sheet with the labels drawn
<out>/failure_cases.json                               the parameters and the cases; "complete" once written
```
The persons and images come from their own generator streams (``[seed, STREAM_FAILURE, case, person, ...]``),
so no failure image repeats a hand of the plain data set made with the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from handseg.data.image_io import write_png
from handseg.format.annotations import ImageAnnotation, write_annotation
from handseg.phantom.anatomy import sample_person
from handseg.phantom.dataset import SIDES, _meta_row, image_names
from handseg.phantom.failures import CASES, Failure
from handseg.phantom.render import render
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.process_map import process_map

STREAM_FAILURE = 4  # after the plain data set's streams (person, names, submission, bent)
RECORD = "failure_cases.json"


def failure_params(cases: Sequence[str], persons: int, size: int, seed: int) -> dict:
    """What defines a set of failure cases (stored in ``failure_cases.json``)."""
    return {"cases": list(cases), "persons": int(persons), "size": int(size), "seed": int(seed)}


def failure_sets_complete(out: str | Path, params: dict) -> bool:
    """True when ``out`` holds every case of ``params``, finished."""
    try:
        found = json.loads((Path(out) / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return bool(found.get("complete")) and {k: found.get(k) for k in params} == params


def write_failure_case(out: Path, case: str, persons: int, size: int, seed: int, preview: bool = False) -> list:
    """Render ``persons`` x 2 images of one case into ``out`` (the test layout above); returns the written
    (png, json) pairs."""
    if case not in CASES:
        raise ValueError(f"unknown failure case {case!r}; expected one of {', '.join(CASES)}")
    key = list(CASES).index(case)
    pairs = []
    for pid, stems in enumerate(image_names(seed + 1 + key, persons), start=1):
        rng = np.random.default_rng([seed, STREAM_FAILURE, key, pid])
        meta = _meta_row(rng, pid)
        person = sample_person(rng, meta["age"], meta["sex"], meta["height"])
        folder = f"ID{pid:03d}"
        for k, (side, stem) in enumerate(zip(SIDES, stems)):
            failure = Failure(case, np.random.default_rng([seed, STREAM_FAILURE, key, pid, 1 + k, 1]))
            hand = render(np.random.default_rng([seed, STREAM_FAILURE, key, pid, 1 + k]), size, side, person,
                          failure=failure)
            png = write_png(out / "test" / "DCM" / folder / f"{stem}.png", hand.image)
            ann = ImageAnnotation(filename=f"{stem}.png", width=size, height=size, polygons=hand.polygons)
            js = write_annotation(out / "test_labels" / "outputs_json" / folder / f"{stem}.json", ann,
                                  extra={"attributes": {"phantom": hand.info}, "parent_path": f"test/DCM/{folder}"})
            pairs.append((png, js))
    if preview:
        from handseg.phantom.preview import write_preview

        write_preview(pairs[:6], out / "preview.png", tile=min(size, 512))
    return pairs


def generate_failure_cases(out: str | Path, cases: Sequence[str] = tuple(CASES), persons: int = 2, size: int = 2048,
                           seed: int = 0, preview: bool = False, workers: int = 1) -> dict[str, Path]:
    """Write every case of ``cases`` under ``out/<case>/`` (module docstring); returns {case: folder}. ``workers``
    > 1 writes the cases in that many processes: each draws from its own seeded streams, so the files are the same
    byte for byte."""
    if persons < 1 or size < 64:
        raise ValueError(f"need at least one person and a side of 64 px, got {persons}, {size}")
    out = Path(out)
    params = failure_params(cases, persons, size, seed)
    atomic_write_text(out / RECORD, json.dumps({**params, "complete": False}, indent=2) + "\n")
    folders = {case: out / case for case in cases}
    jobs = [(folders[case], case, persons, size, seed, preview) for case in cases]
    for _pairs in process_map(write_failure_case, jobs, workers, "failure cases", "case", progress=False):
        pass
    record = {**params, "descriptions": {c: CASES[c] for c in cases}, "complete": True}
    atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")
    return folders
