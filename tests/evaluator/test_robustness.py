"""Robustness report: config, summary arithmetic, and a run with the tiny checkpoint on phantom data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator.config import RobustnessConfig, load_eval_config
from evaluator.perturb import KINDS, Perturbation
from evaluator.robustness import (
    evaluate_robustness,
    format_robustness_table,
    run_robustness,
    summarize_robustness,
)
from evaluator.robustness_config import CombinedConfig
from handseg.format.classes import CLASSES
from handseg.runtime.errors import ConfigError

from .conftest import write_eval_yaml

SMALL = {"rotation": [0.0, 20.0], "zoom": [1.0, 1.2], "gamma": [1.0, 1.5]}


def test_defaults_cover_the_targets():
    cfg = RobustnessConfig()
    cfg.check()
    s = cfg.strengths
    assert set(s) == set(KINDS)
    assert {-30.0, 30.0} <= set(s["rotation"]) and {0.75, 1.25} <= set(s["zoom"])
    assert {0.6, 1.7} <= set(s["gamma"]) and min(s["jpeg"]) == 30.0
    assert cfg.tolerance("rotation") == cfg.tolerance("translation") == 0.03
    assert cfg.tolerance("gamma") == cfg.tolerance("jpeg") == 0.02
    assert len(cfg.perturbations()) == sum(len(v) for v in s.values())


@pytest.mark.parametrize("robustness, key", [
    ({"strengths": {"zoom": [0.0]}}, "robustness.strengths.zoom"),
    ({"strengths": {"shear": [1.0]}}, "robustness.strengths.shear"),
    ({"strengths": {"jpeg": [30.5]}}, "robustness.strengths.jpeg"),
    ({"strengths": {"blur": [1.0, 1.0]}}, "robustness.strengths.blur"),
    ({"strengths": {}}, "robustness.strengths"),
    ({"max_images": 0}, "robustness.max_images"),
    ({"tolerance_photometric": "small"}, "robustness.tolerance_photometric"),
    ({"kinds": ["blur"]}, "robustness.kinds"),
])
def test_bad_robustness_settings_name_the_key(tmp_path, tiny_ckpt, engine_dir, robustness, key):
    path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out", robustness=robustness)
    with pytest.raises(ConfigError) as err:
        load_eval_config(path)
    assert err.value.key == key


def test_yaml_strengths_replace_the_defaults(tmp_path, tiny_ckpt, engine_dir):
    path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out",
                           robustness={"strengths": {"jpeg": [50], "rotation": [-10, 10]}, "max_images": 3})
    cfg = load_eval_config(path).robustness
    assert cfg.perturbations() == [Perturbation("jpeg", 50.0), Perturbation("rotation", -10.0),
                                   Perturbation("rotation", 10.0)]
    assert cfg.max_images == 3


def test_summary_drop_and_pass():
    # Two images; unperturbed Dice 1 everywhere; a geometric perturbation losing 0.02 passes (tolerance 0.03),
    # a photometric one losing 0.025 fails (tolerance 0.02).
    cfg = RobustnessConfig(strengths={"rotation": [10.0], "noise": [5.0]})
    perturbations = cfg.perturbations()
    counts = np.zeros((3, 2, 29, 3), np.int64)
    counts[:, :, :, :] = [100, 100, 100]
    counts[1, :, 0] = [50, 100, 100]  # class 0 Dice 0.5 -> mean over 29 classes drops by 0.5 / 29 = 0.0172
    counts[2, 0, :2] = [64, 100, 100]  # classes 0, 1 of image 0 at 0.64 -> drop 2 * 0.36 / 2 / 29 = 0.0124
    counts[2, 1, :2] = [50, 100, 100]  # ... and of image 1 at 0.5 -> total drop (0.36 + 0.5) / 29 = 0.0297
    result = summarize_robustness(counts, perturbations, ["a.png", "b.png"], cfg)
    assert result["unperturbed"]["mean_dice"] == pytest.approx(1.0)
    rot, noise = result["perturbations"]
    assert (rot["kind"], rot["strength"], rot["geometric"]) == ("rotation", 10.0, True)
    assert rot["unit"].startswith("degrees")
    assert rot["drop"] == pytest.approx(0.5 / 29) and rot["passed"] and rot["tolerance"] == 0.03
    assert rot["per_class"][CLASSES[0]] == pytest.approx(0.5)
    assert noise["drop"] == pytest.approx(0.86 / 29) and not noise["passed"] and noise["tolerance"] == 0.02
    assert result["passed"] is False and result["n_images"] == 2
    json.dumps(result)  # JSON-ready
    table = format_robustness_table(result)
    assert "| rotation | 10 | degrees, + counter-clockwise | 0.9828 | +0.0172 | 0.03 | yes |" in table
    assert "**no**" in table and "1 of 2 perturbations within tolerance" in table


def test_run_robustness_applies_each_perturbation_to_each_image(phantom_root):
    from handseg.data.dataset_index import index_split
    from handseg.format.rasterize import rasterize

    samples = index_split(phantom_root, "train")
    seen = []

    def oracle(image, polygons):  # a perfect model: predicts the ground truth it is scored against
        seen.append((image.copy(), [np.asarray(p).copy() for p in polygons]))
        masks = rasterize(polygons, image.shape)
        n = masks.reshape(29, -1).sum(axis=1)
        return np.stack([n, n, n], axis=1).astype(np.int64)

    cfg = RobustnessConfig(strengths={"noise": [10.0], "translation": [0.9]}, max_images=2, seed=4,
                           combined=CombinedConfig(draws=0, geometric_draws=0))
    result = run_robustness(oracle, samples, cfg, progress=False)
    assert len(seen) == 2 * 3 and result["images"] == [s.rel for s in samples[:2]]
    assert result["combined"]["rows"] == []
    assert result["unperturbed"]["mean_dice"] == 1.0 and result["passed"]
    first_noise, second_noise = seen[1][0].astype(int) - seen[0][0], seen[4][0].astype(int) - seen[3][0]
    assert not np.array_equal(first_noise, second_noise)  # seed + image index: a new pattern per image
    assert all(len(p) == 0 for p in seen[2][1])  # translated out of the frame: every class empty


def test_robustness_with_the_tiny_checkpoint(tmp_path, tiny_ckpt, engine_dir, phantom_root):
    path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out", data_root=phantom_root,
                           backend="eager", robustness={"strengths": SMALL, "max_images": 2,
                                                        "combined": {"draws": 1, "geometric_draws": 1}})
    result, paths = evaluate_robustness(load_eval_config(path), progress=False)
    assert set(paths) == {"json", "markdown", "chart"}
    assert all(p.parent == tmp_path / "out" / "robustness" and p.stat().st_size > 0 for p in paths.values())
    data = json.loads(paths["json"].read_text())
    assert data["n_images"] == 2 and data["settings"]["engine"] == "eager_fp32"
    got = {(r["kind"], r["strength"]) for r in data["perturbations"]}
    assert got == {(k, s) for k, values in SMALL.items() for s in values}
    base = data["unperturbed"]
    assert 0.0 < base["mean_dice"] < 1.0
    for r in data["perturbations"]:
        assert set(r["per_class"]) == set(CLASSES)
        if r["strength"] in (0.0, 1.0):  # identity strengths: exactly the unperturbed result
            assert r["mean_dice"] == base["mean_dice"] and r["drop"] == 0.0 and r["passed"]
            assert r["per_class"] == base["per_class"]
    md = paths["markdown"].read_text()
    assert "| none |" in md and "| zoom | 1.2 |" in md
    assert "| photometric | 1 |" in md and "| photometric+geometric | 1 |" in md
    combined = data["combined"]["rows"]
    assert [r["family"] for r in combined] == ["photometric", "photometric+geometric"]
    assert all(set(r["small_classes"]) == {"finger-16", "Trapezoid", "Pisiform"} for r in combined)
    assert result["perturbations"] == data["perturbations"]
    # Two worker processes, each with its own engine, share the images: the same report, row for row.
    shared, _ = evaluate_robustness(load_eval_config(path, overrides={"output_dir": str(tmp_path / "two")}),
                                    progress=False, workers=2)
    assert {k: v for k, v in shared.items() if k != "settings"} == {k: v for k, v in result.items() if k != "settings"}
    # The file is what model cards and report pages read.
    from handseg.format.result_files import parse_robustness

    parsed = parse_robustness(data, paths["json"])
    assert parsed.clean_mean_dice == base["mean_dice"] and parsed.n_images == 2
    assert sum(len(points) for points in parsed.by_kind.values()) == len(data["perturbations"])
