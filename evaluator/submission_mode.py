"""Submission mode: masks for every ``test/DCM`` image, RLE-encoded into the competition CSV.

Images are sharded across processes; an unreadable PNG does not stop the others, but the CSV is written
(atomically) only when every image succeeded, otherwise the failures are listed and nothing is written. Beside
the CSV goes ``qc.csv``, the quality control of every image (:mod:`evaluator.qc`), and each image flagged for
review gets its overlay in ``qc_flagged/``, which the report page shows.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from evaluator.context import EvalContext
from evaluator.overlays import prediction_overlay
from evaluator.predict import Predictor
from evaluator.qc.assess import load_quality_control
from evaluator.qc.files import FLAGGED_DIR, QC_CSV, flagged_overlay_name, qc_row, write_qc_csv
from evaluator.report_html import refresh_report
from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image, write_png
from handseg.format.submission import check_image_names, write_submission
from handseg.inference.scoring import gather_rows, shard
from handseg.runtime.errors import DataFormatError, HandSegError


class SubmissionIncompleteError(HandSegError):
    """Some test images could not be predicted; no CSV was written."""


def test_samples(data_root: str | Path) -> list:
    """The test images (sorted by path under ``test/DCM``); a folder without PNGs, or two images with one bare
    file name (which a submission could not tell apart), is a DataFormatError."""
    folder = Path(data_root) / "test" / "DCM"
    if folder.is_dir() and not any(folder.rglob("*.png")):
        raise DataFormatError(folder, "no PNG images found")
    samples = index_split(data_root, "test")
    if not samples:
        raise DataFormatError(folder, "no PNG images found")
    check_image_names([s.image_path for s in samples])
    return samples


def predict_rles(predictor: Predictor, samples: list, progress: bool = True, flagged_dir: Path | None = None):
    """([(rel, name, rles, qc row or None)], [(rel, problem)]): 29 RLE strings per readable image with its
    ``qc.csv`` row (with quality control), and the images that failed; a flagged image's overlay goes to
    ``flagged_dir``."""
    done, failed = [], []
    for sample in tqdm(samples, desc="submission", disable=not progress):
        try:
            image = read_image(sample.image_path)
        except DataFormatError as exc:
            failed.append((sample.rel, exc.problem))
            continue
        masks, qc = predictor.masks_and_qc(image)
        if qc is not None and qc.flag and flagged_dir is not None:
            write_png(flagged_dir / flagged_overlay_name(sample.rel), prediction_overlay(image, masks)[:, :, ::-1],
                      compression=1)
        done.append((sample.rel, sample.name, masks.rle(), None if qc is None else qc_row(sample.rel, qc)))
    return done, failed


def default_sample_submission(cfg: EvalConfig) -> Path | None:
    """The config's sample_submission, else ``<data_root>/sample_submission.csv`` when present."""
    if cfg.sample_submission is not None:
        return Path(cfg.sample_submission)
    path = Path(cfg.data_root) / "sample_submission.csv"
    return path if path.is_file() else None


def run_submission(ctx: EvalContext, accelerator=None) -> dict:
    """Predict every test image with the evaluation ``ctx`` (sharded over ``accelerator``'s processes) and write
    ``<output_dir>/submission.csv`` on the main process."""
    cfg = ctx.cfg
    samples = test_samples(cfg.data_root)
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = accelerator is None or accelerator.is_main_process
    predictor = Predictor.from_context(ctx, load_quality_control(cfg, echo=is_main))
    done, failed = predict_rles(predictor, shard(samples, rank, world), progress=is_main,
                                flagged_dir=Path(cfg.output_dir) / FLAGGED_DIR)
    rows = gather_rows([("ok", *d) for d in done] + [("failed", *f) for f in failed], accelerator)
    if not is_main:
        return {}
    failures = sorted((r[1], r[2]) for r in rows if r[0] == "failed")
    if failures:
        for rel, problem in failures:
            print(f"failed: {rel}: {problem}")
        raise SubmissionIncompleteError(
            f"{len(failures)} of {len(samples)} test images could not be read (listed above); no submission CSV written"
        )
    order = {s.rel: i for i, s in enumerate(samples)}
    ok = sorted((r for r in rows if r[0] == "ok"), key=lambda r: order[r[1]])
    rles = {name: list(codes) for _status, _rel, name, codes, _qc in ok}
    out = Path(cfg.output_dir) / "submission.csv"
    write_submission(out, rles, sample_submission=default_sample_submission(cfg))
    qc = write_qc_csv(out.with_name(QC_CSV), [row for *_, row in ok])
    return {"csv": out, "n_images": len(ok), "qc": qc, "report": refresh_report(cfg.output_dir)}
