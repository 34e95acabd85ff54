"""evaluate_efficiency.py on a tiny config: every requested engine measured, JSON / table / chart written."""

from __future__ import annotations

import json

from .conftest import write_eval_yaml


def test_efficiency_writes_json_and_table(aoti_engine, tiny_ckpt, engine_dir, tmp_path, capsys):
    import evaluate_efficiency

    cfg = write_eval_yaml(
        tmp_path / "eval.yaml", tiny_ckpt, engine_dir, tmp_path / "out",
        efficiency={"warmup": 1, "iters": 3, "batch_sizes": [2], "image_size": 128, "image_iters": 1,
                    "backends": ["eager_fp32", "eager_autocast", "aot_inductor"], "compile_missing": False},
    )
    evaluate_efficiency.main(["--cfg-path", str(cfg)])
    out = tmp_path / "out" / "efficiency"
    result = json.loads((out / "efficiency.json").read_text())
    rows = {r["engine"]: r for r in result["results"]}
    assert set(rows) == {"eager_fp32", "eager_autocast_bf16", "aot_inductor_fp32"}
    assert all(r["batch"] == 2 for r in rows.values())
    assert rows["eager_fp32"]["max_abs_diff_logits"] == 0.0 and rows["eager_fp32"]["mask_dice_min"] == 1.0
    assert rows["aot_inductor_fp32"]["mask_dice_min"] >= 0.999
    for r in rows.values():
        assert r["tile_ms_p50"] <= r["tile_ms_p90"] <= r["tile_ms_p99"]
        assert r["image_ms"] > 0 and r["peak_mem_mib"] > 0 and r["images_per_s"] > 0
    for r in rows.values():  # the split of one whole image's time, phase by phase
        phases = [r[k] for k in ("decode_ms", "preprocess_ms", "stage1_ms", "stage2_ms", "blend_ms",
                                 "threshold_rle_ms")]
        assert all(p >= 0 for p in phases) and r["stage2_ms"] > 0 and 0 < r["model_share"] <= 1
        assert r["engine_ms"] == r["stage1_ms"] + r["stage2_ms"] and r["tiles_run"] == r["tiles_possible"] == 9
    # Each row is measured in a process of its own: the compiled engine's holds no modelling code.
    assert not rows["aot_inductor_fp32"]["model_code_loaded"] and rows["eager_fp32"]["model_code_loaded"]
    assert "VmHWM" in result["memory_method"]
    assert [g["engine"] for g in result["compiled_gain"]] == ["aot_inductor_fp32"]
    table = (out / "efficiency.md").read_text()
    assert "aot_inductor_fp32" in table and "eager_fp32" in table and "threshold + RLE ms" in table
    assert "tiles run" in table and "whole-image gain" in table
    assert (out / "efficiency.png").stat().st_size > 1000
    assert "aot_inductor_fp32" in capsys.readouterr().out
