"""Time the project's tiled inference against MONAI's ``sliding_window_inference``, in one run.

    python benchmarks/bench_tiling.py [--size 2048] [--tile 512] [--overlap 0.25] [--batch 4]
                                      [--arch segformer] [--preset demo] [--repeats 3] [--threads 0]

Both run the same randomly initialised model on the same image (a phantom hand when ``handseg.phantom`` is
available, otherwise a synthetic gradient with noise) with the same tile size, overlap, tile batch and
Gaussian blending; MONAI's predictor is model -> bilinear upsampling to the tile -> sigmoid, exactly the
project's per-tile step. Prints both times (best of interleaved runs, wall clock and process CPU time, the
latter less sensitive to other load on a shared machine), the ratio and the largest probability difference.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from handseg.inference.engine import eager_engine
from handseg.inference.pipeline import predict_probs
from handseg.inference.settings import InferenceSettings
from handseg.inference.tiling import pad_amounts
from handseg.model.factory import build_model, count_parameters
from handseg.model.io import InputSpec, to_pixel_values
from handseg.model.presets import ModelConfig
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def bench_image(size: int, seed: int) -> tuple[np.ndarray, str]:
    """A (size, size) uint8 test image and where it came from."""
    try:
        from handseg.phantom import render_hand

        image, _ = render_hand(seed=seed, size=size, side="R")
        return image, "phantom hand"
    except ImportError:
        rng = np.random.default_rng(seed)
        ramp = np.linspace(30, 200, size, dtype=np.float32)[None, :] * np.ones((size, 1), np.float32)
        image = np.clip(ramp + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
        return image, "synthetic image (handseg.phantom not importable)"


def monai_probs(engine, image: np.ndarray, settings: InferenceSettings) -> torch.Tensor:
    """MONAI sliding window on the same normalised (black-padded) image; (29, H, W) float32."""
    from monai.inferers import sliding_window_inference

    spec = settings.input
    h, w = image.shape
    (top, bottom), (left, right) = pad_amounts(h, spec.tile_size), pad_amounts(w, spec.tile_size)
    x = to_pixel_values(np.pad(image, ((top, bottom), (left, right))), spec.mean, spec.std)[None]

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        logits = engine(tiles).float()
        return torch.sigmoid(F.interpolate(logits, size=tiles.shape[-2:], mode="bilinear", align_corners=False))

    with torch.inference_mode():
        out = sliding_window_inference(
            x, (spec.tile_size, spec.tile_size), settings.batch_size, predictor,
            overlap=spec.overlap, mode="gaussian", sigma_scale=settings.sigma_scale,
        )
    return out[0, :, top:top + h, left:left + w]


def interleaved_best(fns: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Best wall and CPU (process) seconds of each function, runs interleaved so that load from other
    processes on a shared machine hits both alike; also the last result of each."""
    wall = {name: float("inf") for name in fns}
    cpu = dict(wall)
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn()
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu, results


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = command_parser(__doc__)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--arch", default="segformer", choices=["segformer", "upernet"])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = build_model(ModelConfig(arch=args.arch, preset=args.preset)).eval()
    engine = eager_engine(model)
    image, source = bench_image(args.size, args.seed)
    settings = InferenceSettings(
        input=InputSpec(mode="tile", image_size=args.size, tile_size=args.tile, overlap=args.overlap),
        batch_size=args.batch,
    )
    print(f"image: {source}, {args.size}x{args.size}; model: {args.arch}/{args.preset} "
          f"({count_parameters(model) / 1e6:.2f} M params); tile {args.tile}, overlap {args.overlap}, "
          f"tile batch {args.batch}, threads {torch.get_num_threads()}, best of {args.repeats}")

    wall, cpu, out = interleaved_best({"handseg": lambda: predict_probs(engine, image, settings),
                                       "monai": lambda: monai_probs(engine, image, settings)}, args.repeats)
    diff = (out["handseg"] - out["monai"]).abs().max().item()
    print(f"{'':31s}   wall s/image   CPU s/image")
    print(f"handseg predict_probs          : {wall['handseg']:10.3f}   {cpu['handseg']:10.3f}")
    print(f"monai sliding_window_inference : {wall['monai']:10.3f}   {cpu['monai']:10.3f}")
    print(f"ratio (monai / handseg)        : {wall['monai'] / wall['handseg']:10.2f}x  "
          f"{cpu['monai'] / cpu['handseg']:10.2f}x")
    print(f"max |probability difference|   : {diff:.2e}")


if __name__ == "__main__":
    main()
