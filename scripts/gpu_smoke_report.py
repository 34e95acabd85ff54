"""The GPU smoke run's record: ``gpu_smoke.json`` (everything) and ``gpu_smoke.md`` (the tables a person reads)."""

from __future__ import annotations

import json
from pathlib import Path

from handseg.format.markdown import markdown_table
from handseg.runtime.atomic import atomic_write_text

EVERY = "images_per_s_check_every_step"


def write_report(result: dict, out: Path) -> None:
    atomic_write_text(out / "gpu_smoke.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out / "gpu_smoke.md", markdown(result))


def fmt(value, spec: str = "{}") -> str:
    return "n/a" if value is None else spec.format(value)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table (:func:`handseg.format.markdown.markdown_table`)."""
    return markdown_table(header, rows).splitlines()


def markdown(result: dict) -> str:
    env, parts = result["environment"], result["parts"]
    lines = [f"# GPU smoke run ({env['mode']} mode)", "",
             f"torch {env['torch']} (CUDA {env['cuda']}); GPUs: {', '.join(env['gpus']) or 'none'}; "
             f"torch_tensorrt: {env['torch_tensorrt']}; {result.get('seconds')} s so far.", ""]
    for section in (steps_section, costs_section, chain_section, multi_section):
        lines += section(parts)
    return "\n".join(lines) + "\n"


def steps_section(parts: dict) -> list[str]:
    rows = []
    for name in ("stage1_bf16", "stage2_fp16", "stage2_bf16"):
        p = parts.get(name)
        if p is None:
            continue
        if p.get("status") != "ok":
            rows.append([name, p.get("status", ""), str(p.get("why") or p.get("error")), "", "", "", ""])
            continue
        deferred = next(v for k, v in p.items() if k.startswith("images_per_s_check_every_") and k != EVERY)
        rows.append([name, f"{p['preset']}, {p['side']} px, batch {p['batch']} x {p['grad_accum_steps']} accum",
                     p["precision"], fmt(p[EVERY], "{:.2f}"), fmt(deferred, "{:.2f}"),
                     fmt(p["peak_allocated_mib"], "{:.0f}"), f"{p['peak_used_mib']:.0f} ({p['used_memory']})"])
    if not rows:
        return []
    header = ["part", "model and input", "precision", "images/s (flags every step)", "images/s (flags every 10)",
              "peak allocated MiB", "peak used MiB"]
    return ["## Training steps at the GPU configs' sizes", "", *table(header, rows), ""]


def costs_section(parts: dict) -> list[str]:
    c = parts.get("costs")
    if not c:
        return []
    if c.get("status") != "ok":
        return ["## Per-step costs (finding 8)", "", f"failed: {c.get('error')}", ""]
    rows = []
    for name in ("stage1_bf16", "stage2_bf16"):
        p = parts.get(name, {})
        if p.get("status") == "ok":
            deferred = next(v for k, v in p.items() if k.startswith("images_per_s_check_every_") and k != EVERY)
            rows.append([f"{name}: loss and stop flags checked after every optimiser step / every 10",
                         f"{p[EVERY]:.2f} images/s", f"{deferred:.2f} images/s", ""])
    r, v = c["resampling"], c["validation"]
    rows.append([f"stage-1 prior over {r['windows']} crops of {r['crop']} px: per window / batched",
                 f"{r['per_window_ms']:.1f} ms", f"{r['batched_ms']:.1f} ms", f"identical: {r['identical']}"])
    rows.append([f"one validation image ({v['image_side']} px, cascade): fp32 / bf16", f"{v['fp32_ms']:.0f} ms",
                 f"{v['bf16_ms']:.0f} ms", f"mask Dice min bf16 vs fp32: {v['mask_dice_min_bf16_vs_fp32']:.4f}"])
    for p in c["padding"]:
        rows.append([f"tile batch {p['batch']}: {p['tiles_per_image']} tiles per image", f"{p['padded_slots']} padded",
                     f"{p['padded_share']:.0%} of the slots", ""])
    return ["## Per-step costs (finding 8)", "", *table(["cost", "before / A", "after / B", "note"], rows), ""]


def chain_section(parts: dict) -> list[str]:
    c = parts.get("chain")
    if not c:
        return []
    lines = ["## The chain (README GPU section)", "", *table(
        ["step", "exit", "seconds", "said"],
        [[s["step"], str(s["exit"]), f"{s['seconds']:.1f}", "; ".join(s["lines"] + s["tail"]).replace("|", "/")]
         for s in c["steps"]]), ""]
    engines = [[e["file"], e["backend"], e["precision"], str(e["input_shape"]),
                fmt((e["agreement_vs_eager_fp32"] or {}).get("max_abs_diff_logits"), "{:.3g}"),
                fmt((e["agreement_vs_eager_fp32"] or {}).get("mask_dice_min"), "{:.5f}")] for e in c["engines"]]
    if engines:
        header = ["engine", "backend", "precision", "input", "max abs logit diff", "mask Dice min"]
        lines += ["Engines (agreement with eager fp32 on a phantom image):", "", *table(header, engines), ""]
    eff = c.get("efficiency")
    if eff:
        rows = [[r["engine"], str(r["batch"]), f"{r['image_ms']:.1f}", f"{r['images_per_s']:.2f}",
                 f"{r['engine_ms']:.1f}", f"{r['model_share']:.0%}", f"{r['peak_mem_mib']:.0f}",
                 fmt(r.get("device_mem_peak_mib"), "{:.0f}"), f"{r['max_abs_diff_logits']:.2e}",
                 f"{r['mask_dice_min']:.5f}"] for r in eff["results"]]
        lines += [f"evaluate_efficiency.py ({eff['image_size']} px image on {eff['device_name']}; {eff['timing']}):",
                  "", *table(["engine", "batch", "image ms", "images/s", "engine ms", "engine share", "peak MiB",
                              "device MiB", "max abs diff", "mask Dice min"], rows), ""]
    lines += [f"validation mean Dice (a few training steps: a plumbing check, not a result): "
              f"{fmt(c.get('validation_mean_dice'), '{:.4f}')}", ""]
    return lines


def multi_section(parts: dict) -> list[str]:
    m = parts.get("multi")
    if not m:
        return []
    if m.get("status") != "ok":
        return ["## 2-process evaluation", "", f"{m.get('status')}: {m.get('why') or m.get('tail')}", ""]
    return ["## 2-process evaluation", "", f"{m['seconds']} s; mean Dice {fmt(m['mean_dice_2_processes'], '{:.4f}')} "
            f"(1 process: {fmt(m['mean_dice_1_process'], '{:.4f}')}); {'; '.join(m['lines'])}", ""]
