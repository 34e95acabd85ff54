#!/usr/bin/env python
"""Generate a phantom hand X-ray data set in the competition layout (or reuse one made with the same parameters).

    python scripts/make_phantom.py --out data/phantom --train-ids 40 --test-ids 10 [--size 2048] [--seed 0] [--preview]
                                   [--meta csv|xlsx-ko]

The parameters are stored in ``<out>/phantom.json``; running again with the same ones reuses the data set.
A phantom folder made with other parameters (or left incomplete) is regenerated; a non-empty folder that is
not a phantom data set is left alone unless ``--force`` is given. ``--meta xlsx-ko`` writes the per-person table
as the competition releases it (``meta_data.xlsx``, Korean headers, sex ``남`` / ``여``) instead of the English
``meta_data.csv``; switching forms on a reused data set rewrites only that table.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from handseg.data.phantom_record import read_params
from handseg.phantom.dataset import (
    PhantomSpec,
    dataset_params,
    generate_dataset,
    is_complete,
    meta_rows,
    remove_outputs,
)
from handseg.phantom.meta_table import META_FILES, META_FORMATS, write_meta_table
from handseg.runtime.cli import add_workers_argument, command_parser
from handseg.runtime.errors import DataFormatError, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="output folder (the data root)")
    p.add_argument("--train-ids", type=int, required=True, help="persons in the training set (2 images each)")
    p.add_argument("--test-ids", type=int, required=True, help="persons in the test set (2 images each)")
    p.add_argument("--size", type=int, default=2048, help="image side in pixels (default 2048)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--preview", action="store_true",
                   help="also write contact sheets: <out>/preview.png (training), preview_test.png")
    p.add_argument("--meta", choices=META_FORMATS, default="csv",
                   help="per-person table: csv (meta_data.csv, English; default) or xlsx-ko (meta_data.xlsx with the "
                        "competition's Korean headers and sex values)")
    p.add_argument("--force", action="store_true", help="regenerate even where the folder holds other files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_workers_argument(p, os.cpu_count() or 1, "render persons (default: one per CPU core; the files do not "
                                                 "depend on it)")
    args = p.parse_args(argv)
    if args.train_ids < 1 or args.test_ids < 0:
        p.error("--train-ids must be >= 1 and --test-ids >= 0")
    if args.size < 64:
        p.error("--size must be at least 64")
    return args


def _summary(out: Path, args: argparse.Namespace) -> str:
    return (f"{out}: {2 * args.train_ids} train images ({args.train_ids} IDs), {2 * args.test_ids} test images "
            f"({args.test_ids} IDs), {args.size}x{args.size}, seed {args.seed}")


def write_missing_previews(out: Path, size: int) -> None:
    """The contact sheets of a reused data set that has none yet (training and test images)."""
    from handseg.phantom.preview import write_preview

    for name, images, labels in (("preview.png", "train/DCM", "train/outputs_json"),
                                 ("preview_test.png", "test/DCM", "test_labels/outputs_json")):
        pngs = sorted((out / images).glob("ID*/*.png"))[:6]
        if pngs and not (out / name).is_file():
            pairs = [(p, out / labels / p.parent.name / f"{p.stem}.json") for p in pngs]
            print(f"preview: {write_preview(pairs, out / name, tile=min(size, 512))}")


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    spec = PhantomSpec(args.train_ids, args.test_ids, args.size, args.seed)
    params = dataset_params(spec)
    if is_complete(out, params):
        print(f"phantom data set already present, reusing it: {_summary(out, args)}")
        if args.preview:
            write_missing_previews(out, args.size)
        if not (out / META_FILES[args.meta]).is_file():
            rows = meta_rows(args.seed, args.train_ids + args.test_ids)
            print(f"meta data rewritten: {write_meta_table(out, rows, args.meta)}")
        return 0
    if out.exists() and not out.is_dir():
        raise DataFormatError(out, "exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if read_params(out) is not None:
            print(f"{out} holds a phantom data set with other parameters (or an unfinished one): regenerating")
            remove_outputs(out)
        elif args.force:
            remove_outputs(out)
        else:
            raise DataFormatError(out, "folder is not empty and holds no phantom.json; choose an empty or new "
                                       "folder, or pass --force to write the phantom data set into it")
    generate_dataset(out, spec, preview=args.preview, progress=not args.quiet, workers=args.workers)
    if args.meta != "csv":
        write_meta_table(out, meta_rows(args.seed, args.train_ids + args.test_ids), args.meta)
    print(f"wrote {_summary(out, args)}")
    if args.preview:
        print(f"preview: {out / 'preview.png'}, {out / 'preview_test.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
