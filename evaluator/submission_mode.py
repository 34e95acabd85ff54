"""Submission mode: masks for every ``test/DCM`` image, RLE-encoded into the competition CSV.

Images are sharded across processes; an unreadable PNG does not stop the others, but the CSV is written
(atomically) only when every image succeeded, otherwise the failures are listed and nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from evaluator.config import EvalConfig
from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.submission import check_image_names, write_submission
from handseg.inference.pipeline import PostProcess, predict_masks
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


def predict_rles(engine, samples: list, settings, device: str, thresholds, progress: bool = True,
                 postprocess: PostProcess | None = None):
    """([(rel, name, rles)], [(rel, problem)]): 29 RLE strings per readable image, and the images that failed."""
    done, failed = [], []
    for sample in tqdm(samples, desc="submission", disable=not progress):
        try:
            image = read_image(sample.image_path)
        except DataFormatError as exc:
            failed.append((sample.rel, exc.problem))
            continue
        masks = predict_masks(engine, image, settings, thresholds, device, postprocess)
        done.append((sample.rel, sample.name, masks.rle()))
    return done, failed


def default_sample_submission(cfg: EvalConfig) -> Path | None:
    """The config's sample_submission, else ``<data_root>/sample_submission.csv`` when present."""
    if cfg.sample_submission is not None:
        return Path(cfg.sample_submission)
    path = Path(cfg.data_root) / "sample_submission.csv"
    return path if path.is_file() else None


def run_submission(cfg: EvalConfig, engine, settings, device: str, thresholds, accelerator=None,
                   postprocess: PostProcess | None = None) -> dict:
    """Predict every test image (sharded) and write ``<output_dir>/submission.csv`` on the main process."""
    samples = test_samples(cfg.data_root)
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    is_main = accelerator is None or accelerator.is_main_process
    done, failed = predict_rles(engine, shard(samples, rank, world), settings, device, thresholds, progress=is_main,
                                postprocess=postprocess)
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
    rles = {name: list(codes) for _status, _rel, name, codes in ok}
    out = Path(cfg.output_dir) / "submission.csv"
    write_submission(out, rles, sample_submission=default_sample_submission(cfg))
    return {"csv": out, "n_images": len(ok)}
