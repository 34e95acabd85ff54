"""Build a training stage's cache in one process, before the training processes start.

    python -m trainer.prepare --cfg-path config/train_stage1.yaml [--set key.sub=value ...]

Under several processes the trainer's main process would build the cache while the others wait for it at a
barrier, and on a large data set that wait can outlast the process group's timeout. ``accelerate_train.sh`` runs
this step first (through :mod:`trainer.launch`), with a progress bar; the training processes then find the cache
built and only check it. On several machines with their own ``cache_dir``, each machine's launch builds its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from handseg.data.dataset_index import load_split
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main
from handseg.runtime.overrides import add_set_argument
from trainer.cache import ImageCache
from trainer.config import TrainConfig, check_paths, load_train_config
from trainer.loader import open_cache


def prepare_cache(cfg: TrainConfig, file: str | Path) -> ImageCache:
    """The stage's cache of the whole split (every fold shares it), as the trainer opens it; built when missing."""
    return open_cache(cfg.data, load_split(cfg.data, file).samples, cfg.stage, progress=True)


def describe(cache: ImageCache) -> str:
    state = "built" if cache.built_now else "found"
    return f"cache {state}: {cache.path} ({len(cache)} images)"


@cli_main
def main(argv: list[str] | None = None) -> int:
    parser = command_parser(__doc__)
    parser.add_argument("--cfg-path", required=True, type=Path)
    add_set_argument(parser)
    args = parser.parse_args(argv)
    cfg = load_train_config(args.cfg_path, sets=args.set)
    check_paths(cfg, args.cfg_path)
    print(describe(prepare_cache(cfg, args.cfg_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
