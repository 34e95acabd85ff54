#!/usr/bin/env python
"""Upload a checkpoint folder, with its model card, to the Hugging Face Hub.

    python scripts/push_to_hub.py runs/stage2/best user/hand-bones [--private] [--dry-run]
        [--robustness outputs/eval/robustness/robustness.json] [--efficiency outputs/eval/efficiency/efficiency.json]

The folder is checked first (``config.json`` with the 29 classes, ``model.safetensors``, ``handseg.json``).
Its model card ``README.md`` is written when missing, and rewritten when robustness or efficiency results are
given, so the card on the Hub shows them. ``--dry-run`` stops after listing what would be uploaded; otherwise
the repository is created if needed (``huggingface_hub.create_repo``) and the folder uploaded in one commit
(``upload_folder``), with the token of ``huggingface-cli login`` or ``HF_TOKEN``. Hidden files are not uploaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from handseg.format.result_files import parse_efficiency, parse_robustness, read_json
from handseg.model.card import write_model_card
from handseg.model.checkpoint import README_FILE, read_info
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import DataFormatError, HandSegError, cli_main

IGNORE_PATTERNS = [".*", "**/.*"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("checkpoint", type=Path, help="checkpoint folder, e.g. runs/stage2/best")
    p.add_argument("repo_id", help="Hub repository, e.g. user/hand-bones")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--dry-run", action="store_true", help="check and list the files; upload nothing")
    p.add_argument("--robustness", type=Path, default=None, help="robustness.json to show in the card")
    p.add_argument("--efficiency", type=Path, default=None, help="efficiency.json to show in the card")
    return p.parse_args(argv)


def upload_files(folder: Path) -> list[Path]:
    """The files ``upload_folder`` will send: every file under ``folder`` except hidden ones, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_repo_id(repo_id: str) -> None:
    """A malformed repository id -> HandSegError (before any file is written or sent)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HandSegError(f"{repo_id}: not a valid Hub repository id ({' '.join(str(exc).split())[:200]})") from None


def prepare(folder: Path, robustness: Path | None, efficiency: Path | None) -> tuple[list[Path], str]:
    """Check the folder and make sure its card exists; returns the upload list and what happened to the card."""
    read_info(folder)
    rob = parse_robustness(read_json(robustness), robustness) if robustness else None
    eff = parse_efficiency(read_json(efficiency), efficiency) if efficiency else None
    card = folder / README_FILE
    if rob is not None or eff is not None:
        write_model_card(folder, robustness=rob, efficiency=eff)
        note = f"wrote {card} (with {' and '.join(n for n, v in (('robustness', rob), ('efficiency', eff)) if v)})"
    elif not card.is_file():
        write_model_card(folder)
        note = f"wrote {card} (it was missing)"
    else:
        note = f"kept {card}"
    return upload_files(folder), note


def upload(folder: Path, repo_id: str, private: bool) -> str:
    """Create the repository if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                             ignore_patterns=IGNORE_PATTERNS, commit_message=f"Upload {folder.name} with handseg")
    except Exception as exc:  # network, authentication, permissions: one line, the user's to fix
        raise HandSegError(f"upload to {repo_id} failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    return str(getattr(info, "commit_url", info))


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.checkpoint.is_dir():
        raise DataFormatError(args.checkpoint, "checkpoint folder not found")
    check_repo_id(args.repo_id)
    files, note = prepare(args.checkpoint, args.robustness, args.efficiency)
    print(note)
    total = sum(p.stat().st_size for p in files)
    verb = "would upload" if args.dry_run else "uploading"
    print(f"{verb} {len(files)} file(s), {total / 2**20:.2f} MiB, to https://huggingface.co/{args.repo_id}"
          + (" (private)" if args.private else ""))
    for p in files:
        print(f"  {p.relative_to(args.checkpoint).as_posix():<24} {p.stat().st_size:>12,d} bytes")
    if args.dry_run:
        return 0
    print(f"done: {upload(args.checkpoint, args.repo_id, args.private)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
