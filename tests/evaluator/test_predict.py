"""predict.py: overlays, annotation JSON that reads back, masks, areas, and bad images skipped with one line."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
from scipy import ndimage

import predict as predict_cli
from evaluator.config import load_eval_config
from evaluator.predict import Predictor, input_images, load_predictor, predict_paths
from handseg.data.dataset_index import index_split
from handseg.data.image_io import read_image
from handseg.format.annotations import polygons_in_order, read_annotation
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.inference.postprocess import PostProcessing
from handseg.runtime.errors import DataFormatError
from tests.evaluator.conftest import write_eval_yaml

ALL = (True,) * len(CLASSES)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, tiny_ckpt, engine_dir) -> Predictor:
    root = tmp_path_factory.mktemp("predict_cfg")
    cfg = load_eval_config(write_eval_yaml(root / "eval.yaml", tiny_ckpt, engine_dir, root / "out", backend="eager"))
    return load_predictor(cfg, echo=False)


@pytest.fixture(scope="module")
def images(tmp_path_factory, phantom_root):
    """A folder of X-rays in every accepted form (8-bit gray in a sub-folder, 16-bit, RGB, odd size) and one
    broken PNG."""
    folder = tmp_path_factory.mktemp("xrays")
    samples = index_split(phantom_root, "test")
    gray = read_image(samples[0].image_path)
    (folder / "ID9").mkdir()
    shutil.copy(samples[0].image_path, folder / "ID9" / "gray8.png")
    cv2.imwrite(str(folder / "gray16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "rgb.png"), np.repeat(read_image(samples[1].image_path)[..., None], 3, axis=2))
    cv2.imwrite(str(folder / "odd.png"), cv2.resize(gray, (200, 150), interpolation=cv2.INTER_AREA))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def test_input_images_lists_pngs_recursively_and_refuses_nothing_to_do(images, tmp_path):
    root, found = input_images(images)
    assert root == images
    assert [p.relative_to(images).as_posix() for p in found] == [
        "ID9/gray8.png", "broken.png", "gray16.png", "odd.png", "rgb.png"]
    assert input_images(images / "odd.png") == (images, [images / "odd.png"])
    (tmp_path / "notes.txt").write_text("x")
    for bad in (tmp_path, tmp_path / "notes.txt", tmp_path / "missing"):
        with pytest.raises(DataFormatError):
            input_images(bad)


def test_folder_prediction_writes_overlay_annotation_masks_and_areas(predictor, images, tmp_path, capsys):
    out = tmp_path / "out"
    result = predict_paths(predictor, images, out, masks_format="npz", pixel_spacing=0.1, progress=False)

    assert [p.name for p, _ in result.failed] == ["broken.png"]
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {images / 'broken.png'}: {result.failed[0][1]}"]
    assert sorted(result.written) == ["ID9/gray8", "gray16", "odd", "rgb"]

    rows = {r["image"]: r for r in csv.DictReader((out / "areas_mm2.csv").open())}
    assert sorted(rows) == sorted(result.written)
    for rel in result.written:
        image = read_image(next(images.glob(rel + ".png")))
        masks = predictor.masks(image)
        saved = np.load(out / f"{rel}.masks.npz")
        assert list(saved["classes"]) == list(CLASSES)
        assert np.array_equal(saved["masks"], masks.to_dense().numpy())  # exactly what the evaluator predicts
        for c, name in enumerate(CLASSES):
            assert float(rows[rel][name]) == pytest.approx(saved["masks"][c].sum() * 0.01, abs=1e-3)

        overlay = cv2.imread(str(out / f"{rel}.overlay.png"))
        assert overlay.shape[0] >= image.shape[0] and overlay.shape[1] > image.shape[1]  # image + legend panel

        ann = read_annotation(out / f"{rel}.json", image_hw=image.shape, require_all=False)
        assert ann.filename == f"{rel.split('/')[-1]}.png" and ann.hw == image.shape
        assert list(ann.polygons) == [n for n, a in zip(CLASSES, masks.areas()) if a > 0]

    assert np.array_equal(np.load(out / "gray16.masks.npz")["masks"], np.load(out / "ID9/gray8.masks.npz")["masks"])


def test_polygons_of_post_processed_predictions_read_back_with_dice_0995(predictor, phantom_root, tmp_path):
    """With largest-component and hole filling on, a predicted mask is one region, so its polygon must give it
    back: Dice >= 0.995 for every predicted class of the phantom's validation-like training images."""
    pp = Predictor(replace(predictor.call, device="cpu", thresholds=[0.5] * len(CLASSES),
                           postprocess=PostProcessing(ALL, ALL)))
    folder = tmp_path / "train"
    folder.mkdir()
    for sample in index_split(phantom_root, "train")[:4]:
        shutil.copy(sample.image_path, folder / sample.name)
    result = predict_paths(pp, folder, tmp_path / "out", progress=False)
    checked = 0
    for rel in result.written:
        masks = pp.masks(read_image(folder / f"{rel}.png")).to_dense().numpy()
        ann = read_annotation(tmp_path / "out" / f"{rel}.json", image_hw=masks.shape[1:], require_all=False)
        back = rasterize(polygons_in_order(ann), ann.hw).astype(bool)
        for c in range(len(CLASSES)):
            if masks[c].any():
                assert ndimage.label(masks[c], structure=np.ones((3, 3)))[1] == 1
                assert dice(back[c], masks[c]) >= 0.995, (rel, CLASSES[c])
                checked += 1
            else:
                assert not back[c].any()
    assert checked >= 20


def test_cli_reports_bad_images_and_exits_1(predictor, images, tiny_ckpt, engine_dir, tmp_path, capsys):
    cfg = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "eval_out")
    code = predict_cli.main([str(images), "--cfg-path", str(cfg), "--out", str(tmp_path / "p"), "--backend", "eager"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: {images / 'broken.png'}: " in err and "1 of 5 image(s) could not be read" in err
    assert (tmp_path / "p" / "odd.overlay.png").is_file() and not (tmp_path / "p" / "areas_mm2.csv").exists()
    assert predict_cli.main([str(images / "odd.png"), "--cfg-path", str(cfg), "--out", str(tmp_path / "q"),
                             "--backend", "eager", "--pixel-spacing", "0.1", "0.2"]) == 0
    row = next(csv.DictReader((tmp_path / "q" / "areas_mm2.csv").open()))
    assert row["image"] == "odd"
    with pytest.raises(SystemExit):
        predict_cli.parse_args([str(images), "--pixel-spacing", "0"])


def test_inputs_that_would_write_the_same_outputs_are_one_line_before_any_work(images, tmp_path, capsys):
    """x.png and x.PNG (or names equal but for case) would write the same x.json and x.overlay.png; an input
    named like another's output would be overwritten: one line naming both, exit 2, and nothing written, not
    even the output folder (the config's checkpoint is not even looked at)."""
    folder = tmp_path / "in"
    (folder / "ID1").mkdir(parents=True)
    for name in ("image200.png", "ID1/image200.png", "ID1/IMAGE200.PNG"):
        shutil.copy(images / "odd.png", folder / name)
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="2"):
        predict_cli.main([str(folder), "--cfg-path", str(tmp_path / "none.yaml"), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {folder / 'ID1/image200.png'}: would write the same output files as "
                   f"{folder / 'ID1/IMAGE200.PNG'} ({out / 'ID1/image200'}.json, ...); rename one or predict them "
                   "into separate --out folders"], err
    assert not out.exists()
    (folder / "ID1" / "IMAGE200.PNG").unlink()
    shutil.copy(images / "odd.png", folder / "image200.overlay.png")
    with pytest.raises(SystemExit, match="2"):
        predict_cli.main([str(folder), "--cfg-path", str(tmp_path / "none.yaml"), "--out", str(folder)])
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'image200.overlay.png'}: would be overwritten by the output ")
    assert f"of {folder / 'image200.png'}" in err
    assert sorted(p.name for p in folder.rglob("*")) == ["ID1", "image200.overlay.png", "image200.png", "image200.png"]


def test_a_missing_checkpoint_names_the_configs_that_have_one(images, tiny_ckpt, tmp_path, monkeypatch, capsys):
    """`python predict.py x.png` after `make demo`: config/eval.yaml names a GPU run that is not there; its one
    line says which config would work (the demo's), and without any trained checkpoint how to get one."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config" / "demo").mkdir(parents=True)
    (tmp_path / "config" / "eval.yaml").write_text("checkpoint: runs/stage2/best\n")
    demo = tmp_path / "config" / "demo" / "eval.yaml"
    demo.write_text("checkpoint: [runs/demo_stage2/best, runs/demo_stage1/best]\n")
    (tmp_path / "config" / "demo" / "train_stage2.yaml").write_text("ckpt: runs/demo_stage1/best\n")
    for stage in ("demo_stage1", "demo_stage2"):
        shutil.copytree(tiny_ckpt, tmp_path / "runs" / stage / "best")
    with pytest.raises(SystemExit, match="2"):
        predict_cli.main([str(images / "odd.png")])
    assert capsys.readouterr().err.splitlines() == [
        "error: config/eval.yaml: checkpoint: folder not found: runs/stage2/best; configs whose checkpoints exist "
        "here: --cfg-path config/demo/eval.yaml"]
    shutil.rmtree(tmp_path / "runs" / "demo_stage2")
    with pytest.raises(SystemExit, match="2"):
        predict_cli.main([str(images / "odd.png"), "--cfg-path", str(demo)])
    assert capsys.readouterr().err.splitlines() == [
        f"error: {demo}: checkpoint: folder not found: runs/demo_stage2/best; no config under config/ has a trained "
        "checkpoint here yet (`make demo` trains config/demo/eval.yaml's)"]
