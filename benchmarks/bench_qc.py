"""Time predict.py's work per image with and without the quality control, in one run, on the same engine.

    python benchmarks/bench_qc.py [--cfg-path config/demo/eval.yaml] [--images data/phantom/test/DCM]
                                  [--max-images 4] [--repeats 2]

Per image, alternately: ``predict_image`` without QC (inference, overlay, annotation JSON) and with QC (the
same, plus the probes, signals, predicted Dice, findings and ``attributes.qc``), best of ``--repeats`` each;
and the inference alone (``Predictor.masks`` against ``Predictor.masks_and_qc``). Prints both, the share QC
adds, and QC's own work timed inside the prediction (the ``qc`` phase: probe, comparisons, signals, model,
findings), which a busy machine disturbs far less than the difference of two wall times. Needs the engines
and, for a predicted Dice, ``qc_model.json`` beside the thresholds file.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from evaluator.config import load_eval_config
from evaluator.predict import input_images, load_predictor, predict_image
from evaluator.qc.assess import predict_with_qc
from handseg.data.image_io import read_image
from handseg.inference.phase_timer import PhaseTimer
from handseg.runtime.cli import command_parser
from handseg.runtime.errors import cli_main


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


@cli_main
def main(argv=None) -> int:
    p = command_parser(__doc__)
    p.add_argument("--cfg-path", default="config/demo/eval.yaml")
    p.add_argument("--images", default="data/phantom/test/DCM")
    p.add_argument("--max-images", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    cfg = load_eval_config(args.cfg_path)
    checkpoints = cfg.checkpoint if isinstance(cfg.checkpoint, list) else [cfg.checkpoint]
    if not any(Path(c).is_dir() for c in checkpoints) or not Path(args.images).is_dir():
        print(f"bench_qc: skipped, it needs the trained demo (run `make demo`): no {checkpoints[0]} or {args.images}")
        return 0
    with_qc = load_predictor(cfg, file=args.cfg_path)
    without = replace(with_qc, qc=None)
    paths = input_images(args.images)[1][: args.max_images]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for path in paths:
            image = read_image(path)
            predict_image(with_qc, path, out / "warm")  # warm-up: first calls, allocations
            row = []
            for predictor, name in ((without, "plain"), (with_qc, "qc")):
                row.append(best(lambda: predict_image(predictor, path, out / name / path.stem), args.repeats))
            row.append(best(lambda: without.masks(image), args.repeats))
            row.append(best(lambda: with_qc.masks_and_qc(image), args.repeats))
            row.append(min(own_work(with_qc, image) for _ in range(args.repeats)))
            rows.append(row)
            print(f"{path.name}: predict.py {1000 * row[0]:.0f} -> {1000 * row[1]:.0f} ms, "
                  f"inference {1000 * row[2]:.0f} -> {1000 * row[3]:.0f} ms, QC's own work {1000 * row[4]:.0f} ms")
    mean = 1000 * np.mean(rows, axis=0)
    print()
    print(f"| per image (mean of {len(rows)} images, best of {args.repeats}) | without QC ms | with QC ms | QC adds "
          "| QC's own work |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(f"| predict.py (inference, overlay, annotation JSON) | {mean[0]:.0f} | {mean[1]:.0f} | "
          f"{100 * (mean[1] / mean[0] - 1):+.1f}% | {mean[4]:.0f} ms = {100 * mean[4] / mean[1]:.1f}% |")
    print(f"| inference alone (masks) | {mean[2]:.0f} | {mean[3]:.0f} | {100 * (mean[3] / mean[2] - 1):+.1f}% | "
          f"{100 * mean[4] / mean[3]:.1f}% |")
    return 0


def own_work(predictor, image) -> float:
    """Seconds of QC's own work in one prediction (the ``qc`` phase: probe, comparisons, signals, model,
    findings)."""
    timer = PhaseTimer(predictor.call.device)
    predict_with_qc(predictor.call, image, predictor.qc, timer)
    return timer.seconds.get("qc", 0.0)


if __name__ == "__main__":
    main()
