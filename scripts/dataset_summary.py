"""Summarise a data root: image and person counts, validation problems, and the K-fold split.

    python scripts/dataset_summary.py --data data/phantom [--folds 5] [--seed 0] [--stratify sex]
                                      [--save runs/folds.json] [--decode]

Every PNG header (or, with --decode, every image) and every annotation JSON is validated, and test images must
have distinct file names (a submission names them by file name alone); problems are listed one per line and
the command exits non-zero after the summary when there are any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handseg.data.dataset_index import (
    assign_folds,
    fold_summary,
    index_split,
    save_folds,
    validate_samples,
)
from handseg.data.meta_data import meta_mapping, read_meta
from handseg.format.submission import check_image_names
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import ConfigError, DataFormatError, cli_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = command_parser(__doc__)
    parser.add_argument("--data", type=Path, required=True, help="data root holding train/ and test/")
    parser.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="fold shuffle seed (default 0)")
    parser.add_argument("--stratify", default=None,
                        help="meta_data column to stratify folds by (e.g. sex, age; Korean headers such as 성별 too)")
    parser.add_argument("--save", type=Path, default=None, help="write the folds here (.json or .csv)")
    parser.add_argument("--decode", action="store_true", help="decode every image, not only the PNG header")
    return parser.parse_args(argv)


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    train = index_split(args.data, "train")
    test_dir = args.data / "test" / "DCM"
    test = index_split(args.data, "test") if test_dir.is_dir() else []
    meta = read_meta(args.data)

    n_train_ids = len({s.patient_id for s in train})
    n_test_ids = len({s.patient_id for s in test})
    print(f"data root: {args.data}")
    print(f"train: {n_train_ids} person(s), {len(train)} image(s), {len(train)} annotation(s)")
    print(f"test:  {n_test_ids} person(s), {len(test)} image(s)" + ("" if test else " (no test/DCM folder)"))
    if meta is not None:
        print(f"meta data: {Path(meta.attrs['path']).name}, {len(meta)} row(s)")
        for line in meta_mapping(meta):
            print(f"  {line}")
    else:
        print("meta data: none (no meta_data.csv or meta_data.xlsx)")

    problems = validate_samples(train + test, decode=args.decode)
    try:
        check_image_names([s.image_path for s in test])  # a submission names test images by bare file name
    except DataFormatError as exc:
        problems.append(exc)
    print(f"validation problems: {len(problems)}")
    for exc in problems:
        print(f"  {exc}")

    try:
        folds = assign_folds(train, n_folds=args.folds, seed=args.seed, stratify=args.stratify, meta=meta)
    except ValueError as exc:
        raise ConfigError("<command line>", "--folds/--stratify", str(exc)) from None
    strat = f", stratified by {args.stratify}" if args.stratify else ""
    print(f"folds: {args.folds} (group K-fold by person, seed {args.seed}{strat})")
    print(fold_summary(train, folds, meta=meta, stratify=args.stratify))
    if args.save is not None:
        save_folds(args.save, folds)
        print(f"folds saved to {args.save}")
    if problems:
        raise DataFormatError(args.data, f"{len(problems)} file(s) failed validation (listed above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
