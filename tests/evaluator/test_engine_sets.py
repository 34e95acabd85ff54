"""What tensorrt_aot.py builds is what the later steps load, and how the efficiency benchmark counts GPU memory."""

from __future__ import annotations

import itertools

from evaluator.config import load_eval_config
from evaluator.efficiency import format_table
from evaluator.engines import efficiency_batches, engine_batches
from evaluator.memory_peak import PeakSampler


def test_every_batch_the_benchmark_times_has_an_engine(repo_root):
    cfg_path = repo_root / "config/eval.yaml"
    cfg = load_eval_config(cfg_path)
    assert efficiency_batches(cfg) == [3] and engine_batches(cfg) == [3]  # 9 tiles of 1024: no padded slot
    for sets in (["efficiency.batch_sizes=[1]"], ["efficiency.batch_sizes=[1, 8]", "batch_size_eval=2"]):
        cfg = load_eval_config(cfg_path, sets=sets)
        assert set(efficiency_batches(cfg)) <= set(engine_batches(cfg))
        assert cfg.batch_size_eval in engine_batches(cfg)


def test_peak_sampler_sees_what_happens_between_reads():
    """The device's used memory (mem_get_info on CUDA, here a fake reading) is sampled while the block runs: a
    peak inside it is caught, and so is the value on exit."""
    readings = itertools.chain([100, 100, 900, 300], itertools.repeat(200))
    with PeakSampler(lambda: next(readings), interval_s=0.001) as used:
        while used.peak < 900:
            pass
    assert used.base == 100 and used.peak == 900


def test_gpu_rows_show_the_devices_memory_beside_the_allocators():
    row = {"engine": "tensorrt_fp16", "batch": 3, "tile_ms_p50": 1.0, "tile_ms_p90": 1.0, "tile_ms_p99": 1.0,
           "image_ms": 50.0, "images_per_s": 20.0, "peak_mem_mib": 900.0, "device_mem_peak_mib": 2500.0,
           "max_abs_diff_logits": 1e-3, "mask_dice_min": 0.999, "decode_ms": 5.0, "preprocess_ms": 5.0,
           "engine_ms": 30.0, "blend_ms": 5.0, "threshold_rle_ms": 5.0, "model_share": 0.6, "tiles_run": 7.0,
           "tiles_possible": 9.0, "stage1_ms": 4.0, "stage2_ms": 26.0, "postprocess_ms": 10.0}
    result = {"results": [row], "image_size": 2048, "device": "cuda:0", "device_name": "H100", "torch_threads": 8,
              "memory_method": "m", "timing": "tile latency from a float32 tile batch already on the device"}
    table = format_table(result)
    assert "| peak MiB | device MiB |" in table and "| 900 | 2500 |" in table
    assert "already on the device" in table
    cpu = format_table({**result, "results": [{**row, "device_mem_peak_mib": None}]})
    assert "device MiB" not in cpu
