"""Samples/s of the project's training loader against the usual per-sample competition loader, in one run.

    python benchmarks/bench_loader.py [--data ROOT] [--ids 4] [--size 2048] [--samples 24] [--workers 0 2]

Data: ``--data`` (the train split of a data root), or a phantom set of ``--ids`` persons (two hands each) at
``--size`` generated into a temporary folder. Both loaders produce batches of dict(pixel_values (B, 3, h, w)
float32 normalised, labels), with no augmentation:

- stage 1: whole images at ``--image-size`` (512);
- stage 2: ``--crop-size`` (1024) crops at native resolution.

Baseline (the usual notebook Dataset): per sample ``cv2.imread`` the PNG, ``json.load`` the annotation,
``cv2.fillPoly`` each class into a full-size (H, W, 29) mask, then ``cv2.resize`` image and mask (stage 1) or
crop both (stage 2). Project: :class:`~trainer.cache.ImageCache` (built once; its build time is printed
separately and excluded from the rates) read by :class:`~trainer.datasets.WholeImageDataset` /
:class:`~trainer.datasets.CropDataset`. Each measurement draws ``--samples`` samples in batches of
``--batch-size``; the clock starts when the first batch arrives, so worker start-up is excluded for both.
Labels: the headline rows, "handseg (packed labels)", time the project's default ``data.label_dtype: packed``
((B, h, w) int32, bit c = class c) against the baseline's usual (B, 29, h, w) float32. Packed labels defer the
unpack to the training device, so the same run also times :func:`~handseg.format.rasterize.unpack_label_batch` of one
packed batch to float32 on the CPU and prints it separately (on a GPU it runs on the device). The rows
"float32" and "uint8" give both loaders the same (B, 29, h, w) labels of that dtype.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from handseg.data.dataset_index import index_split
from handseg.format.classes import CLASS_TO_INDEX, NUM_CLASSES
from handseg.format.markdown import markdown_table
from handseg.format.rasterize import unpack_label_batch
from handseg.model.io import IMAGENET_MEAN, IMAGENET_STD
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main
from trainer.cache import ImageCache
from trainer.datasets import CropDataset, WholeImageDataset

MEAN = np.array(IMAGENET_MEAN, np.float32)
STD = np.array(IMAGENET_STD, np.float32)


class BaselineDataset(Dataset):
    """The usual competition loader: decode and rasterise everything from the files, every time."""

    def __init__(self, samples, stage: int, image_size: int, crop_size: int, length: int, seed: int = 0,
                 label_dtype: torch.dtype = torch.float32):
        self.samples, self.stage, self.length, self.label_dtype = samples, stage, length, label_dtype
        self.image_size, self.crop_size, self.seed = image_size, crop_size, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i % len(self.samples)]
        image = cv2.imread(str(s.image_path))  # (H, W, 3) uint8 BGR of the gray X-ray
        with open(s.label_path) as f:
            annotations = json.load(f)["annotations"]
        h, w = image.shape[:2]
        label = np.zeros((h, w, NUM_CLASSES), dtype=np.uint8)
        for ann in annotations:
            class_label = np.zeros((h, w), dtype=np.uint8)
            cv2.fillPoly(class_label, [np.array(ann["points"], dtype=np.int32)], 1)
            label[..., CLASS_TO_INDEX[ann["label"]]] = class_label
        if self.stage == 1:
            size = (self.image_size, self.image_size)
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        else:
            c = self.crop_size
            rng = np.random.default_rng([self.seed, i])
            y0, x0 = int(rng.integers(0, max(h - c, 0) + 1)), int(rng.integers(0, max(w - c, 0) + 1))
            image, label = image[y0 : y0 + c, x0 : x0 + c], label[y0 : y0 + c, x0 : x0 + c]
        image = (image[..., ::-1].astype(np.float32) / 255.0 - MEAN) / STD
        return {
            "pixel_values": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "labels": torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1))).to(self.label_dtype),
        }


def samples_per_second(dataset: Dataset, batch_size: int, workers: int, seed: int) -> float:
    """Steady-state rate: samples after the first batch divided by the time since the first batch arrived."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=RandomSampler(dataset, generator=gen), num_workers=workers
    )
    it = iter(loader)
    next(it)
    t0, n = time.perf_counter(), 0
    for batch in it:
        n += batch["pixel_values"].shape[0]
    return n / (time.perf_counter() - t0)


def unpack_seconds(labels: torch.Tensor, repeats: int = 5) -> float:
    """Median seconds of ``unpack_label_batch(labels)`` (B, h, w) int32 -> (B, 29, h, w) float32 here."""
    unpack_label_batch(labels, NUM_CLASSES)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        unpack_label_batch(labels, NUM_CLASSES)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def make_phantom(out: Path, ids: int, size: int, seed: int) -> Path:
    from handseg.phantom import PhantomSpec, generate_dataset

    generate_dataset(out, PhantomSpec(train_ids=ids, test_ids=0, size=size, seed=seed), preview=False, progress=True)
    return out


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, default=None, help="data root (default: generate a phantom set)")
    parser.add_argument("--ids", type=int, default=4, help="persons in the generated phantom set")
    parser.add_argument("--size", type=int, default=2048, help="side of the generated phantom images")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--crop-size", type=int, default=1024)
    parser.add_argument("--samples", type=int, default=24, help="samples drawn per measurement")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--label-dtype", nargs="+", choices=["packed", "float32", "uint8"],
                        default=["packed", "float32", "uint8"],
                        help="label batches (packed: the default data.label_dtype, against float32 baseline labels)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    # OpenCV's thread pool is not fork-safe (see trainer.loader.build_train_loader); same setting for both loaders.
    cv2.setNumThreads(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_loader."))
    try:
        root = args.data or make_phantom(tmp / "data", args.ids, args.size, args.seed)
        samples = index_split(root, "train")
        h, w = cv2.imread(str(samples[0].image_path), cv2.IMREAD_GRAYSCALE).shape
        print(f"data: {len(samples)} images of {w}x{h} from {root}; {args.samples} samples per measurement, "
              f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")

        t0 = time.perf_counter()
        cache1 = ImageCache(samples, tmp / "cache", args.image_size, progress=False)
        build1 = time.perf_counter() - t0
        t0 = time.perf_counter()
        cache2 = ImageCache(samples, tmp / "cache", None, progress=False)
        build2 = time.perf_counter() - t0
        n = len(samples)
        reps = -(-args.samples // n)
        rows, base_rates, unpack = [], {}, {}
        for stage, what in ((1, f"stage 1: whole image at {args.image_size}"),
                            (2, f"stage 2: {args.crop_size} native crops")):
            for name in args.label_dtype:
                base_name = "float32" if name == "packed" else name  # the usual loader has no packed labels
                if stage == 1:
                    ours = WholeImageDataset(cache1, list(range(n)) * reps, seed=args.seed, label_dtype=name)
                else:
                    ours = CropDataset(cache2, args.crop_size, list(range(n)), crops_per_image=reps, seed=args.seed,
                                       label_dtype=name)
                base = BaselineDataset(samples, stage, args.image_size, args.crop_size, args.samples, args.seed,
                                       getattr(torch, base_name))
                if name == "packed":
                    batch = next(iter(DataLoader(ours, batch_size=args.batch_size)))["labels"]
                    unpack[stage] = (tuple(batch.shape), unpack_seconds(batch))
                for workers in args.workers:
                    key = (stage, base_name, workers)
                    if key not in base_rates:
                        base_rates[key] = samples_per_second(base, args.batch_size, workers, args.seed)
                    b = base_rates[key]
                    o = samples_per_second(ours, args.batch_size, workers, args.seed)
                    rows.append((stage, what, name, base_name, workers, b, o))
                    print(f"  {what}, {workers} workers: baseline ({base_name} labels) {b:.1f}/s, "
                          f"handseg ({name} labels) {o:.1f}/s", flush=True)

        order = {name: i for i, name in enumerate(("packed", "float32", "uint8"))}
        rows.sort(key=lambda r: (order[r[2]], r[0], r[4]))
        print()
        cells = [[what, "**handseg (packed labels)** vs baseline float32" if name == "packed" else f"{name} (both)",
                  workers, f"{b:.1f}", f"{o:.1f}", f"{o / b:.1f}x"] for _, what, name, base_name, workers, b, o in rows]
        print(markdown_table(["loader input", "labels", "workers", "baseline samples/s", "handseg samples/s",
                              "speed-up"], cells, "llrrrr"))
        print()
        for stage, (shape, sec) in unpack.items():
            b = shape[0]
            packed_mb, float_mb = b * shape[1] * shape[2] * 4 / 2**20, b * NUM_CLASSES * shape[1] * shape[2] * 4 / 2**20
            print(f"deferred to the device, stage {stage}: unpack_label_batch of one packed batch {shape} int32 "
                  f"({packed_mb:.0f} MiB) -> ({b}, {NUM_CLASSES}, {shape[1]}, {shape[2]}) float32 ({float_mb:.0f} MiB) "
                  f"takes {sec * 1e3:.1f} ms on this CPU ({b / sec:.0f} samples/s). On a GPU this runs on the device, "
                  f"in the training step after the packed batch is copied there, not in the loader: it is not part "
                  f"of the loader rates above")
        print()
        print(f"one-time cache build: {build1:.1f} s at {args.image_size} ({n} images), {build2:.1f} s native; "
              f"on disk {sum(f.stat().st_size for f in (tmp / 'cache').rglob('*.npy')) / 2**20:.0f} MiB")
        rate = {s: max(r[5] for r in rows if r[0] == s) for s in (1, 2)}
        print(f"the build takes as long as {build1 * rate[1] / n:.2f} (stage 1) and {build2 * rate[2] / n:.2f} "
              f"(stage 2) epochs of the fastest baseline on this data set")
        for name in args.label_dtype:
            speedups = [o / b for *_, b, o in (r for r in rows if r[2] == name)]
            print(f"speed-up with {name} labels: min {min(speedups):.1f}x, max {max(speedups):.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
