"""Combined perturbations: seeded draws within the ranges, one composite applied in a fixed order, labels moved
with the pixels, and the report rows built from them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluator.combined import APPLY_ORDER, Combination, draw_rows, geometric_matrix
from evaluator.config import load_eval_config
from evaluator.perturb import GEOMETRIC_KINDS, PHOTOMETRIC_KINDS, Perturbation, warp_image
from evaluator.robustness import format_robustness_table, load_sample, run_robustness, summarize_robustness
from evaluator.robustness_config import CombinedConfig, RobustnessConfig, default_ranges
from handseg.format.classes import CLASSES
from handseg.format.rasterize import rasterize
from handseg.phantom import render_hand
from handseg.runtime.errors import ConfigError

from .conftest import write_eval_yaml


def _hand(seed: int = 1, size: int = 192) -> tuple[np.ndarray, list[np.ndarray]]:
    image, polygons = render_hand(seed, size=size)
    return image, [polygons[c] for c in CLASSES]


def test_draws_are_seeded_within_their_ranges_and_independent_per_row_and_image():
    ranges = default_ranges()
    rows = draw_rows(ranges, {"photometric": 3, "photometric+geometric": 2}, n_images=5, seed=7)
    assert [(r.family, r.draw) for r in rows] == [("photometric", 0), ("photometric", 1), ("photometric", 2),
                                                  ("photometric+geometric", 0), ("photometric+geometric", 1)]
    for row in rows:
        assert len(row.combinations) == len(row.seeds) == 5
        for combo in row.combinations:
            kinds = set(combo.as_dict)
            assert kinds == set(PHOTOMETRIC_KINDS) | (set(GEOMETRIC_KINDS) if row.family != "photometric" else set())
            for kind, value in combo.as_dict.items():
                assert ranges[kind][0] <= value <= ranges[kind][1]
            assert float(combo.as_dict["jpeg"]).is_integer()
    again = draw_rows(ranges, {"photometric": 3, "photometric+geometric": 2}, n_images=5, seed=7)
    assert again == rows
    more = draw_rows(ranges, {"photometric": 4, "photometric+geometric": 2}, n_images=6, seed=7)
    assert more[0].combinations[:5] == rows[0].combinations  # adding images or rows keeps the others' draws
    assert len({c for r in rows for c in r.combinations}) == 25  # every (row, image) its own condition
    assert draw_rows(ranges, {"photometric": 1}, 5, seed=8)[0] != rows[0]


def test_a_combination_applies_its_kinds_in_order_and_leaves_labels_of_photometric_kinds():
    image, polygons = _hand()
    strengths = {"gamma": 1.4, "contrast": 0.8, "brightness": 12.0, "noise": 6.0, "blur": 1.5, "jpeg": 60.0}
    combo = Combination(tuple(strengths.items()))
    out, same = combo.apply(image, polygons, seed=3)
    expected = image
    for kind in APPLY_ORDER:
        expected = Perturbation(kind, strengths[kind]).apply(expected, polygons, seed=3)[0]
    assert np.array_equal(out, expected) and not np.array_equal(out, image)
    assert all(a is b for a, b in zip(same, polygons))
    identity = Combination((("gamma", 1.0), ("contrast", 1.0), ("brightness", 0.0), ("noise", 0.0), ("blur", 0.0)))
    assert np.array_equal(identity.apply(image, polygons)[0], image)


def test_geometric_kinds_move_image_and_labels_by_one_matrix():
    image, polygons = _hand()
    combo = Combination((("rotation", 20.0), ("zoom", 0.8), ("translation", 0.05)))
    out, moved = combo.apply(image, polygons)
    matrix = geometric_matrix(image.shape, combo.as_dict)
    assert np.array_equal(out, warp_image(image, matrix))
    centre = np.array([(image.shape[1] - 1) / 2, (image.shape[0] - 1) / 2])
    # The centre is rotated and scaled onto itself, then shifted by 5% of the side.
    assert np.allclose(matrix[:, :2] @ centre + matrix[:, 2], centre + 0.05 * np.array(image.shape[::-1]))
    bone = rasterize(moved, image.shape).any(axis=0)
    fill = out == 0  # outside the moved frame
    assert fill.mean() > 0.1 and bone.mean() > 0.05
    assert bone[fill].sum() < 0.01 * bone.sum()  # the labels moved with the pixels (up to the frame's edge)


def test_combined_rows_summarise_mean_worst_image_and_small_bones():
    cfg = RobustnessConfig(strengths={"noise": [5.0]}, combined=CombinedConfig(draws=1, geometric_draws=1))
    rows = draw_rows(cfg.combined.ranges, cfg.combined.rows, 2)
    counts = np.full((4, 2, 29, 3), 100, np.int64)
    counts[2, 1, CLASSES.index("Pisiform")] = [40, 100, 100]  # photometric row: image 1 loses 0.6 on Pisiform
    counts[3, :, :3] = [99, 100, 100]  # photometric+geometric row: every image loses 0.01 on three classes
    result = summarize_robustness(counts, cfg.perturbations(), ["a.png", "b.png"], cfg, rows)
    photo, both = result["combined"]["rows"]
    assert photo["family"] == "photometric" and photo["drop"] == pytest.approx(0.6 / 29 / 2)
    assert photo["worst_image"] == "b.png" and photo["worst_drop"] == pytest.approx(0.6 / 29)
    assert photo["small_classes"]["Pisiform"] == pytest.approx(0.7, abs=1e-6)
    assert photo["small_drops"]["Pisiform"] == pytest.approx(0.3, abs=1e-6)
    assert photo["tolerance"] == 0.015 and photo["passed"]  # 0.0103 <= 0.015
    assert both["tolerance"] == 0.02 and both["drop"] == pytest.approx(0.03 / 29) and both["passed"]
    assert [im["image"] for im in photo["images"]] == ["a.png", "b.png"] and "gamma" in photo["images"][0]["strengths"]
    assert result["passed"]
    counts[2, 0, :10] = [50, 100, 100]
    failing = summarize_robustness(counts, cfg.perturbations(), ["a.png", "b.png"], cfg, rows)
    assert not failing["combined"]["rows"][0]["passed"] and not failing["passed"]
    json.dumps(failing)
    table = format_robustness_table(failing)
    assert "| photometric | 1 |" in table and "**no**" in table and "1 of 2 combined rows within tolerance" in table
    assert "- photometric 1: `a.png` under rotation" not in table and "- photometric+geometric 1:" in table


def test_run_robustness_scores_each_image_under_its_own_combination(phantom_root):
    from handseg.data.dataset_index import index_split

    samples = index_split(phantom_root, "train")
    seen = []

    def oracle(image, polygons):  # a perfect model: predicts the ground truth it is scored against
        seen.append(image.copy())
        n = rasterize(polygons, image.shape).reshape(29, -1).sum(axis=1)
        return np.stack([n, n, n], axis=1).astype(np.int64)

    combined = CombinedConfig(draws=2, geometric_draws=1)
    cfg = RobustnessConfig(strengths={"gamma": [0.8]}, max_images=2, combined=combined)
    result = run_robustness(oracle, samples, cfg, progress=False)
    assert len(seen) == 2 * (1 + 1 + 3) and len(result["combined"]["rows"]) == 3
    assert all(r["drop"] == 0.0 and r["passed"] for r in result["combined"]["rows"])  # labels moved exactly
    rows = draw_rows(cfg.combined.ranges, cfg.combined.rows, 2)
    first, _ = load_sample(samples[0])
    assert np.array_equal(seen[2], rows[0].combinations[0].apply(first, [], seed=rows[0].seeds[0])[0])


@pytest.mark.parametrize("combined, key", [
    ({"draws": -1}, "robustness.combined.draws"),
    ({"ranges": {"gamma": [1.7, 0.6]}}, "robustness.combined.ranges.gamma"),
    ({"ranges": {"jpeg": [30, 101]}}, "robustness.combined.ranges.jpeg"),
    ({"ranges": {"shear": [0, 1]}}, "robustness.combined.ranges.shear"),
    ({"ranges": {"rotation": [-10, 10]}}, "robustness.combined.ranges"),
    ({"ranges": {"gamma": [0.8, 1.2]}}, "robustness.combined.ranges"),
    ({"tolerance_photometric": 2.0}, "robustness.combined.tolerance_photometric"),
    ({"rows": 3}, "robustness.combined.rows"),
])
def test_bad_combined_settings_name_the_key(tmp_path, tiny_ckpt, engine_dir, combined, key):
    path = write_eval_yaml(tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out",
                           robustness={"combined": combined})
    with pytest.raises(ConfigError) as err:
        load_eval_config(path)
    assert err.value.key == key
