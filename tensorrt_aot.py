"""Compile the best checkpoint into a deployable engine (Torch-TensorRT on NVIDIA GPUs, AOTInductor elsewhere).

    python tensorrt_aot.py [--cfg-path config/eval.yaml] [--backend tensorrt|aot_inductor] [--set key.sub=value ...]

Loads the checkpoint named in the config, exports its logits at the static tile shape (batch, 3, tile, tile) for
every tile batch a later step loads (``batch_size_eval`` and the efficiency benchmark's ``batch_sizes``; ``--batch``
builds one), compiles it, measures agreement with eager fp32 on a phantom/validation image and writes each engine
and its manifest to ``engine_dir`` (trt_models/). ``backend: auto`` uses TensorRT where it can run and AOTInductor
otherwise, saying why when it passes TensorRT over on a GPU.
"""

from __future__ import annotations

import argparse
import sys

from evaluator.agreement import sample_image
from evaluator.backends import COMPILED
from evaluator.build_engine import EngineRequest, build_engine
from evaluator.config import load_eval_config
from evaluator.engines import engine_batches, load_eval_checkpoint
from handseg.inference.engine import DTYPES
from handseg.runtime.cli import command_parser
from handseg.runtime.devices import device_label, require_device, start_line
from handseg.runtime.errors import cli_main
from handseg.runtime.overrides import add_set_argument


def parse_args(argv=None) -> argparse.Namespace:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--backend", choices=[*COMPILED, "auto"], default=None)
    p.add_argument("--precision", choices=list(DTYPES), default=None)
    p.add_argument("--batch", type=int, default=None, help="one static tile batch (default: every one needed)")
    add_set_argument(p)
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = load_eval_config(args.cfg_path, sets=args.set)
    require_device(cfg.device, args.cfg_path)
    backend = args.backend or ("aot_inductor" if cfg.backend == "eager" else cfg.backend)
    batches = [args.batch] if args.batch else engine_batches(cfg)
    print(start_line([device_label(cfg.device)], args.precision or cfg.precision, max(batches), what="tiles"),
          flush=True)
    ckpt = load_eval_checkpoint(cfg, file=args.cfg_path)
    image, where = sample_image(cfg.data_root, size=max(256, 2 * ckpt.spec.model_size))
    for batch in batches:
        request = EngineRequest(backend=backend, batch=batch, precision=args.precision, source=args.cfg_path)
        path, manifest = build_engine(cfg, ckpt, image, request)
        agree = manifest["agreement_vs_eager_fp32"]
        print(
            f"{manifest['backend']} engine ({manifest['precision']}, input {tuple(manifest['input_shape'])}) -> "
            f"{path}\nmanifest -> {path.with_suffix('.json')}\n"
            f"agreement vs eager fp32 on {where}: max |logit diff| {agree['max_abs_diff_logits']:.3g}, "
            f"mask Dice min {agree['mask_dice_min']:.6f} mean {agree['mask_dice_mean']:.6f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
