"""Evaluation entry point, run under ``accelerate launch`` by ``accelerate_eval.sh``.

    python -m evaluator.run_eval --mode validation|submission [...] [--cfg-path config/eval.yaml] [--set key.sub=value]

validation: per-class and mean Dice on the training run's validation fold (dice.md/.csv/.json, chart, overlays).
submission: the competition CSV for ``test/DCM``. ``--mode validation submission`` runs both, in that order, on
one loaded engine. Images are sharded across processes (process i takes [i::n]) and
the results gathered on the main process. ``output_dir`` is locked while the run writes it: a second evaluation
on the same folder is refused with one line naming the folder and the holder's PID. At start the main process
prints one line: every process's device, the world size, the engine's precision and the effective tile batch; a
``device: cuda...`` where CUDA is not usable stops before any work (``--set device=cpu`` runs on the CPU).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from accelerate import Accelerator
from accelerate.utils import gather_object

from evaluator.backends import BACKEND_CHOICES
from evaluator.config import EvalConfig, load_eval_config
from evaluator.context import build_context
from evaluator.submission_mode import run_submission, test_samples
from evaluator.validation_mode import run_validation
from handseg.runtime.cli import command_parser
from handseg.runtime.devices import device_label, require_device, start_line
from handseg.runtime.errors import cli_main
from handseg.runtime.overrides import add_set_argument
from handseg.runtime.run_lock import locked_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--mode", choices=MODES, nargs="+", required=True,
                   help="validation, submission, or both (in the order given, one engine load)")
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None)
    p.add_argument("--output-dir", default=None)
    add_set_argument(p)
    return p.parse_args(argv)


def process_device(cfg_device: str, accelerator) -> str:
    """The config's device; with several GPU processes, each process's own GPU."""
    if cfg_device == "cpu" or accelerator.num_processes == 1:
        return cfg_device
    return str(accelerator.device)


MODES = ("validation", "submission")


def run(mode: str, cfg: EvalConfig, accelerator=None, file: str = "<config>") -> dict:
    """Run one mode (:data:`MODES`) for a loaded config; returns the written outputs (main process) or {}."""
    return run_modes([mode], cfg, accelerator, file)[0]


def run_modes(modes: list[str], cfg: EvalConfig, accelerator=None, file: str = "<config>",
              done: Callable[[dict], None] | None = None) -> list[dict]:
    """Run each mode of ``modes`` in turn on one evaluation context (checkpoint, engine, settings loaded once);
    returns each mode's written outputs (main process) or {}, each also handed to ``done`` as its mode ends."""
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown mode {unknown[0]!r}; choose from {', '.join(MODES)}")
    device = process_device(cfg.device, accelerator) if accelerator is not None else cfg.device
    ctx = build_context(cfg, file, device, echo=accelerator is None or accelerator.is_main_process)
    outs = []
    for mode in modes:
        outs.append(run_validation(ctx, accelerator) if mode == "validation" else run_submission(ctx, accelerator))
        if done is not None:
            done(outs[-1])
    return outs


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {k: v for k, v in {"backend": args.backend, "output_dir": args.output_dir}.items() if v}
    cfg = load_eval_config(args.cfg_path, overrides=overrides, sets=args.set)
    require_device(cfg.device, args.cfg_path)
    modes = list(dict.fromkeys(args.mode))
    if "submission" in modes:
        test_samples(cfg.data_root)  # missing, empty or name-colliding test images: refused before any work or write
    accelerator = Accelerator(cpu=cfg.device == "cpu")
    devices = gather_object([device_label(process_device(cfg.device, accelerator))])
    if accelerator.is_main_process:
        print(start_line(devices, cfg.precision, cfg.batch_size_eval, what="tiles"), flush=True)
    with locked_folder(cfg.output_dir, "evaluation", accelerator):
        run_modes(modes, cfg, accelerator, args.cfg_path,
                  done=(lambda out: print_outputs(out, cfg)) if accelerator.is_main_process else None)
    accelerator.wait_for_everyone()
    return 0


def print_outputs(out: dict, cfg: EvalConfig) -> None:
    """One line per written output of a mode (and the validation's mean Dice)."""
    out = dict(out)
    summary = out.pop("summary", None)
    if summary is not None:
        print(f"mean Dice {summary.mean:.4f} over {summary.n_images} validation images")
    for key, value in out.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)} files in {value[0].parent if value else cfg.output_dir}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    sys.exit(main())
