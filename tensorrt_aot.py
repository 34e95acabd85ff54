"""Compile the best checkpoint into a deployable engine (Torch-TensorRT on NVIDIA GPUs, AOTInductor elsewhere).

    python tensorrt_aot.py [--cfg-path config/eval.yaml] [--backend tensorrt|aot_inductor]

Loads the checkpoint named in the config, exports its logits at the static tile shape (batch_size_eval, 3, tile,
tile), compiles it, measures agreement with eager fp32 on a phantom/validation image and writes the engine and its
manifest to ``engine_dir`` (trt_models/).
"""

from __future__ import annotations

import argparse

from evaluator.agreement import sample_image
from evaluator.backends import COMPILED
from evaluator.build_engine import build_engine
from evaluator.config import load_eval_config
from evaluator.engines import load_eval_checkpoint
from handseg.inference.engine import DTYPES
from handseg.runtime.errors import cli_main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cfg-path", default="config/eval.yaml")
    p.add_argument("--backend", choices=[*COMPILED, "auto"], default=None)
    p.add_argument("--precision", choices=list(DTYPES), default=None)
    p.add_argument("--batch", type=int, default=None, help="static tile batch (default: batch_size_eval)")
    return p.parse_args(argv)


@cli_main
def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_eval_config(args.cfg_path)
    backend = args.backend or ("aot_inductor" if cfg.backend == "eager" else cfg.backend)
    ckpt = load_eval_checkpoint(cfg, file=args.cfg_path)
    image, where = sample_image(cfg.data_root, size=max(256, 2 * ckpt.spec.model_size))
    path, manifest = build_engine(
        cfg, ckpt, image, backend=backend, batch=args.batch, precision=args.precision, source=args.cfg_path
    )
    agree = manifest["agreement_vs_eager_fp32"]
    print(
        f"{manifest['backend']} engine ({manifest['precision']}, input {tuple(manifest['input_shape'])}) -> {path}\n"
        f"manifest -> {path.with_suffix('.json')}\n"
        f"agreement vs eager fp32 on {where}: max |logit diff| {agree['max_abs_diff_logits']:.3g}, "
        f"mask Dice min {agree['mask_dice_min']:.6f} mean {agree['mask_dice_mean']:.6f}"
    )


if __name__ == "__main__":
    main()
