"""Write a phantom data set in the competition layout.

```
<out>/train/DCM/ID001/image<13 digits>_R.png     (and _L.png: every person has a right and a left hand)
<out>/train/outputs_json/ID001/image<...>_R.json
<out>/test/DCM/ID00k/image<...>_R.png            no annotations in the competition layout...
<out>/test_labels/outputs_json/ID00k/...json     ...they are held out here, for scripts/score_submission.py
<out>/meta_data.csv                              ID, age, sex, weight, height (or meta_data.xlsx in the
                                                 competition's Korean form: handseg.phantom.meta_table)
<out>/sample_submission.csv                      image_name,class,rle for the test images (shuffled order)
<out>/phantom.json                               the parameters (with each split's share of strongly bent wrists)
                                                 and how many images of each split came out bent; "complete"
                                                 once everything is written
<out>/preview.png, preview_test.png              optional contact sheets (training, test images)
```
Every random draw comes from ``np.random.default_rng([seed, ...])`` streams keyed by the person and image
index, so the same parameters give byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handseg.data.image_io import write_png
from handseg.data.phantom_record import GENERATOR, GENERATOR_VERSION, read_params
from handseg.format.annotations import ImageAnnotation, write_annotation
from handseg.format.classes import CLASSES
from handseg.phantom.anatomy import sample_person
from handseg.phantom.meta_table import META_FILES, write_meta_table
from handseg.phantom.render import render
from handseg.runtime.atomic import atomic_write_text
from handseg.runtime.process_map import process_map

SIDES = ("R", "L")
OUTPUTS = ("train", "test", "test_labels", "meta_data.csv", "meta_data.xlsx", "sample_submission.csv", "preview.png",
           "preview_test.png", "phantom.json")
STREAM_PERSON, STREAM_NAMES, STREAM_SUBMISSION, STREAM_BENT = 0, 1, 2, 3
# Share of images with a strongly bent wrist (18-30 degrees): training images draw it (about one in five); in the
# test split exactly half of the images (a seeded choice) are bent, as in the competition, where one team's EDA
# found bent wrists in about half of the test images but about one in ten training images.
BENT_FRACTION = {"train": 0.2, "test": 0.5}


@dataclass(frozen=True)
class PhantomSpec:
    """What defines a phantom data set: persons ``ID001 .. ID{train_ids}`` are training data and the next
    ``test_ids`` the test set, images are ``size`` x ``size`` px, and every draw is seeded by ``seed`` (the same
    spec gives byte-identical files)."""

    train_ids: int
    test_ids: int
    size: int = 2048
    seed: int = 0


def test_bends(seed: int, test_ids: int) -> np.ndarray:
    """(test_ids, 2) bool: which test image (person, right/left) has a strongly bent wrist; round(half) of them."""
    n = 2 * test_ids
    flags = np.zeros(n, dtype=bool)
    flags[np.random.default_rng([seed, STREAM_BENT]).permutation(n)[: round(BENT_FRACTION["test"] * n)]] = True
    return flags.reshape(test_ids, 2)


def dataset_params(spec: PhantomSpec) -> dict:
    """The parameters that define a phantom data set (stored in ``phantom.json``)."""
    return {"generator": GENERATOR, "version": GENERATOR_VERSION, "train_ids": int(spec.train_ids),
            "test_ids": int(spec.test_ids), "size": int(spec.size), "seed": int(spec.seed),
            "bent_fraction": dict(BENT_FRACTION)}



def is_complete(out: Path, params: dict) -> bool:
    """True when ``out`` holds a finished data set made with exactly ``params`` (all files present)."""
    found = read_params(out)
    if not found or not found.get("complete") or {k: found.get(k) for k in params} != params:
        return False
    out = Path(out)
    n_train, n_test = 2 * params["train_ids"], 2 * params["test_ids"]
    counts = [
        (out / "train" / "DCM", "*.png", n_train), (out / "train" / "outputs_json", "*.json", n_train),
        (out / "test" / "DCM", "*.png", n_test), (out / "test_labels" / "outputs_json", "*.json", n_test),
    ]
    files_ok = all(len(list(folder.glob(f"ID*/{pattern}"))) == n for folder, pattern, n in counts)
    meta_ok = any((out / name).is_file() for name in META_FILES.values())
    return files_ok and meta_ok and (out / "sample_submission.csv").is_file()


def remove_outputs(out: Path) -> None:
    """Delete what a phantom generation writes under ``out`` (and nothing else)."""
    for name in OUTPUTS:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def image_names(seed: int, n_persons: int) -> list[list[str]]:
    """Per person, the file stems of the right and left image: ``image<13-digit timestamp>_R`` / ``_L``."""
    rng = np.random.default_rng([seed, STREAM_NAMES])
    t = 1_660_000_000_000 + int(rng.integers(0, 2_000_000_000))
    names = []
    for _ in range(n_persons):
        person = []
        for side in SIDES:
            t += int(rng.integers(2_000, 600_000))  # milliseconds between acquisitions
            person.append(f"image{t:013d}_{side}")
        names.append(person)
    return names


def _meta_row(rng: np.random.Generator, pid: int) -> dict:
    sex = "M" if rng.random() < 0.5 else "F"
    age = int(rng.integers(19, 75))
    height = float(np.round(rng.normal(174.0 if sex == "M" else 161.0, 6.5), 1))
    bmi = rng.normal(23.5, 3.0)
    weight = float(np.round(bmi * (height / 100.0) ** 2, 1))
    return {"ID": pid, "age": age, "sex": sex, "weight": weight, "height": height}


def meta_rows(seed: int, n_persons: int) -> list[dict]:
    """The meta-data rows of persons 1..n_persons, without rendering (each row is its person's first draws)."""
    return [_meta_row(np.random.default_rng([seed, STREAM_PERSON, pid]), pid) for pid in range(1, n_persons + 1)]


def _csv_text(rows: list[dict], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _sample_submission(seed: int, test_names: list[str]) -> str:
    """Rows for every test image and class, images shuffled and classes reversed (not the default order)."""
    rng = np.random.default_rng([seed, STREAM_SUBMISSION])
    order = list(rng.permutation(len(test_names)))
    if len(order) > 1 and order == sorted(order):
        order = order[1:] + order[:1]
    rows = [{"image_name": test_names[i], "class": c, "rle": ""} for i in order for c in reversed(CLASSES)]
    return _csv_text(rows, ["image_name", "class", "rle"])


def generate_person(out: Path, spec: PhantomSpec, split: str, pid: int, stems: list[str],
                    bends: tuple[bool | None, bool | None] = (None, None)) -> tuple[dict, list, int]:
    """Render and write person ``pid``'s two hands (at ``spec``'s size and seed; ``bends``: whether each is
    strongly bent, None: drawn); returns their meta-data row, the written (png, json) pairs and how many of the two
    have a strongly bent wrist."""
    size, seed = spec.size, spec.seed
    rng = np.random.default_rng([seed, STREAM_PERSON, pid])
    meta = _meta_row(rng, pid)
    person = sample_person(rng, meta["age"], meta["sex"], meta["height"])
    folder = f"ID{pid:03d}"
    label_root = out / ("train/outputs_json" if split == "train" else "test_labels/outputs_json")
    pairs, bent = [], 0
    for k, (side, stem) in enumerate(zip(SIDES, stems)):
        hand = render(np.random.default_rng([seed, STREAM_PERSON, pid, 1 + k]), size, side, person, bends[k])
        bent += int(hand.info["strongly_bent"])
        png = write_png(out / split / "DCM" / folder / f"{stem}.png", hand.image)
        ann = ImageAnnotation(filename=f"{stem}.png", width=size, height=size, polygons=hand.polygons)
        js = write_annotation(label_root / folder / f"{stem}.json", ann,
                              extra={"attributes": {"phantom": hand.info}, "parent_path": f"{split}/DCM/{folder}"})
        pairs.append((png, js))
    return meta, pairs, bent


def generate_dataset(out: Path, spec: PhantomSpec, preview: bool = False, progress: bool = True,
                     workers: int = 1) -> None:
    """Write the phantom data set of ``spec`` under ``out`` (see the module docstring for the layout), with the
    contact sheets when ``preview``.

    Persons ``ID001 .. ID{train_ids}`` are training data, the next ``test_ids`` are the test set. Files of an
    earlier generation in ``out`` are overwritten; ``phantom.json`` is marked complete last. ``workers`` > 1
    renders persons in that many processes: every person draws from its own seeded streams, so the files are
    the same byte for byte.
    """
    train_ids, test_ids, size, seed = spec.train_ids, spec.test_ids, spec.size, spec.seed
    if train_ids < 1 or test_ids < 0:
        raise ValueError(f"need at least one training person and no negative test count, got {train_ids}, {test_ids}")
    if size < 64:
        raise ValueError(f"image size must be at least 64 px, got {size}")
    out = Path(out)
    params = dataset_params(spec)
    atomic_write_text(out / "phantom.json", json.dumps({**params, "complete": False}, indent=2) + "\n")
    n = train_ids + test_ids
    names = image_names(seed, n)
    test_bent = test_bends(seed, test_ids)
    jobs = []
    for pid in range(1, n + 1):
        split = "train" if pid <= train_ids else "test"
        bends = (None, None) if split == "train" else tuple(bool(b) for b in test_bent[pid - train_ids - 1])
        jobs.append((out, spec, split, pid, names[pid - 1], bends))
    person_rows, train_pairs, test_pairs = [], [], []
    bent = {"train": 0, "test": 0}
    people = process_map(generate_person, jobs, workers, "phantom", "person", progress)
    for (_out, _spec, split, *_rest), (meta, pairs, n_bent) in zip(jobs, people):
        person_rows.append(meta)
        bent[split] += n_bent
        (train_pairs if split == "train" else test_pairs).extend(pairs)
    write_meta_table(out, person_rows, "csv")
    atomic_write_text(out / "sample_submission.csv", _sample_submission(seed, sorted(p.name for p, _ in test_pairs)))
    if preview:
        from handseg.phantom.preview import write_preview

        write_preview(train_pairs[:6], out / "preview.png", tile=min(size, 512))
        if test_pairs:  # the test split's shift (half of its hands strongly bent) at a glance
            write_preview(test_pairs[:6], out / "preview_test.png", tile=min(size, 512))
    counts = {"strongly_bent_images": bent, "images": {"train": 2 * train_ids, "test": 2 * test_ids}}
    atomic_write_text(out / "phantom.json", json.dumps({**params, **counts, "complete": True}, indent=2) + "\n")
