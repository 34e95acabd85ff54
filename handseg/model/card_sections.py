"""The sections of a model card (:mod:`handseg.model.card`), each rendered from a checkpoint record
(``handseg.json``) or a result file; a field that is missing is written as "not recorded"."""

from __future__ import annotations

from typing import Any

from handseg.format.classes import CLASSES, describe_bone
from handseg.format.markdown import markdown_table
from handseg.format.result_files import describe_strength, parse_efficiency, parse_robustness
from handseg.model.presets import MODEL_CLASSES

NOT_RECORDED = "not recorded"


def hf_class(arch: str | None, default: str) -> str:
    """The transformers class name the project builds for ``arch`` (``default`` for an unknown one)."""
    return MODEL_CLASSES.get(arch, default)



def record_get(d: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def fmt(v: Any, spec: str = "") -> str:
    if v is None:
        return NOT_RECORDED
    if isinstance(v, float) and spec:
        return format(v, spec)
    return str(v)


def fields(rows: list[list[str]]) -> str:
    """Key-value lines as a markdown list."""
    return "\n".join(f"- **{key}**: {value}" for key, value in rows)


def model_name(info: dict) -> str:
    run = record_get(info, "config", "run_name")
    arch, preset = record_get(info, "model", "arch", default="?"), record_get(info, "model", "preset", default="?")
    return str(run) if run else f"handseg-{arch}-{preset}"


def model_section(info: dict, n_parameters: int | None) -> str:
    model, spec = info.get("model") or {}, info.get("input") or {}
    arch = model.get("arch")
    if spec.get("mode") == "tile":
        feed = (f"native-resolution tiles of {spec.get('tile_size')} px (overlap {spec.get('overlap')}), "
                "blended with Gaussian weights")
    elif spec.get("mode") == "resize":
        feed = f"the whole image resized to {spec.get('image_size')} x {spec.get('image_size')} px"
    else:
        feed = NOT_RECORDED
    rows = [
        ["architecture", f"{arch} (`{hf_class(arch, '?')}`), preset `{model.get('preset')}`"],
        ["parameters", f"{n_parameters / 1e6:.2f} M" if n_parameters else NOT_RECORDED],
        ["initialisation", str(model.get("pretrained") or record_get(info, "config", "ckpt") or "random")],
        ["input", (f"{feed}; grayscale {intensity_text(spec)}, replicated to 3 channels, normalised with mean "
                   f"{spec.get('mean')} and std {spec.get('std')}")],
        ["output", ("29 logit maps, one per bone (sigmoid, multi-label: overlapping bones stay overlapping), "
                    "upsampled to the original size and thresholded")],
    ]
    return "## Model\n\n" + fields(rows) + "\n"


def intensity_text(spec: dict) -> str:
    """How the input spec standardises grey levels, in words (``none`` or absent: scaled to [0, 1])."""
    intensity = spec.get("intensity") or {}
    method = intensity.get("method", "none")
    if method == "none":
        return "scaled to [0, 1]"
    keys = {"percentile": ("low", "high", "region"), "zscore": ("low", "high", "region"), "equalize": ("region",),
            "clahe": ("clip_limit", "grid")}.get(method, ())
    params = "".join(f", {k} {intensity.get(k)}" for k in keys)
    return (f"standardised per image (`{method}`{params}; `handseg.model.intensity.intensity_map` fits it to the "
            "whole image)")


def data_section(info: dict, phantom: bool | None) -> str:
    data = record_get(info, "config", "data", default={}) or {}
    if phantom:
        source = ("**synthetic phantom hand X-rays** made by `handseg.phantom` (anatomically plausible hands with "
                  "exact outlines; no patient data)")
    elif phantom is False:
        source = "hand X-rays with polygon annotations of 29 bones in the competition layout"
    else:
        source = "not known here (the data folder was not available when this card was written)"
    rows = [
        ["source", source],
        ["data root", f"`{data.get('data_root', NOT_RECORDED)}`"],
        ["split", f"group K-fold by person (a person's two hands stay together): fold {data.get('fold')} of "
                  f"{data.get('n_folds')}, seed {data.get('seed')}"
                  + (f", stratified by `{data['stratify']}`" if data.get("stratify") else "")],
        ["validation images", fmt(record_get(info, "validation", "n_images"))],
        ["data fingerprint", f"`{info.get('data_fingerprint') or NOT_RECORDED}`"],
    ]
    return "## Training data\n\n" + fields(rows) + "\n"


def recipe_section(info: dict) -> str:
    cfg = info.get("config") or {}
    data, optim, sched, loss = (cfg.get(k) or {} for k in ("data", "optim", "schedule", "loss"))
    stage = info.get("stage")
    size = (f"whole images at {data.get('image_size')} px" if stage == 1
            else f"native crops of {data.get('crop_size')} px" if stage == 2 else NOT_RECORDED)
    terms = " + ".join(f"{t.get('weight')} x {t.get('name')}" for t in loss.get("terms") or []) or NOT_RECORDED
    augs = ", ".join(a.get("name", "?") for a in data.get("augmentations") or []) or "none"
    ema = cfg.get("ema") or {}
    rows = [
        ["stage", f"{fmt(stage)} ({size})"],
        ["trained", (f"{fmt(info.get('epoch'))} epochs, {fmt(info.get('step'))} optimiser steps "
                     f"(of {fmt(cfg.get('epochs'))} epochs configured)")],
        ["batch", (f"{fmt(data.get('batch_size'))} per process, gradient accumulation "
                   f"{fmt(cfg.get('grad_accum_steps'))}")],
        ["optimiser", (f"{optim.get('name', NOT_RECORDED)}, lr {fmt(optim.get('lr'))}, weight decay "
                       f"{fmt(optim.get('weight_decay'))}; gradient clipping {fmt(cfg.get('clip_grad_norm'))}")],
        ["schedule", f"{sched.get('name', NOT_RECORDED)}, warm-up {fmt(sched.get('warmup_steps'))} steps"],
        ["loss", f"{terms} (Dice mode {loss.get('dice_mode', NOT_RECORDED)})"],
        ["augmentations", augs],
        ["EMA of weights", f"decay {ema.get('decay')}" if ema.get("enabled") else "no"],
        ["seed", fmt(cfg.get("seed"))],
    ]
    return "## Training recipe\n\n" + fields(rows) + "\n"


def dice_section(info: dict) -> str:
    dice, mean = info.get("dice"), info.get("mean_dice")
    if not isinstance(dice, dict) or not isinstance(mean, (int, float)):
        return "## Validation Dice\n\nNot validated at this save (no Dice recorded).\n"
    val = info.get("validation") or {}
    lowest = ", ".join(f"{c} {dice[c]:.4f}" for c in sorted((c for c in CLASSES if c in dice), key=dice.get)[:3])
    rows = [[str(i + 1), f"`{c}`", describe_bone(c), f"{dice[c]:.4f}" if c in dice else NOT_RECORDED]
            for i, c in enumerate(CLASSES)]
    rows.append(["", "**mean**", "", f"**{mean:.4f}**"])
    return (
        "## Validation Dice\n\n"
        f"Mean Dice **{mean:.4f}** over the 29 classes on {fmt(val.get('n_images'))} validation images, "
        f"computed per image and class as `(2|P∩G| + 1e-4) / (|P| + |G| + 1e-4)` at the original image size "
        f"after thresholding at {fmt(val.get('threshold'))}; mean over images per class, then over classes. "
        f"Lowest: {lowest}.\n\n"
        + markdown_table(["#", "class", "bone", "Dice"], rows, "rllr") + "\n"
    )


def robustness_section(robustness: dict | None) -> str:
    if robustness is None:
        return ("## Robustness\n\nNot measured for this checkpoint (mean Dice under rotation, zoom, exposure, "
                "noise, blur and JPEG perturbations).\n")
    rob = parse_robustness(robustness)
    rows = []
    for kind, points in rob.by_kind.items():
        for strength, dice in points:
            rows.append([kind, describe_strength(strength, rob.units[kind]), f"{dice:.4f}",
                         f"{dice - rob.clean_mean_dice:+.4f}"])
    n = f" on {rob.n_images} validation images" if rob.n_images is not None else ""
    return (f"## Robustness\n\nMean Dice{n} under perturbations of growing strength; unperturbed "
            f"**{rob.clean_mean_dice:.4f}**.\n\n"
            + markdown_table(["perturbation", "strength", "mean Dice", "change"], rows, "lrrr") + "\n")


def efficiency_section(efficiency: dict | None) -> str:
    if efficiency is None:
        return "## Efficiency\n\nNot measured for this checkpoint (`python evaluate_efficiency.py`).\n"
    eff = parse_efficiency(efficiency)
    rows = [[str(r["engine"]), str(r["batch"]), f"{r['tile_ms_p50']:.2f}", f"{r['image_ms']:.1f}",
             f"{r['images_per_s']:.2f}", f"{r['peak_mem_mib']:.0f}",
             f"{r['mask_dice_min']:.5f}" if isinstance(r.get("mask_dice_min"), (int, float)) else "-"]
            for r in eff["results"]]
    size = eff.get("image_size", "?")
    return (
        f"## Efficiency\n\nMeasured with `evaluate_efficiency.py` on {eff.get('device', '?')} "
        f"({eff.get('device_name', '?')}, {eff.get('torch_threads', '?')} threads): one {size} x {size} image, "
        "whole-image time including tiling, blending, thresholds and RLE; peak memory: "
        f"{eff.get('memory_method', NOT_RECORDED)}; mask Dice against eager fp32.\n\n"
        + markdown_table(["engine", "tile batch", "tile p50 ms", "image ms", "images/s", "peak MiB", "mask Dice min"],
                 rows, "lrrrrrr") + "\n"
    )


def usage_section(info: dict) -> str:
    arch = record_get(info, "model", "arch")
    spec = info.get("input") or {}
    cls = hf_class(arch, "AutoModel")
    if spec.get("mode") == "tile":
        side = spec.get("tile_size")
        feed = (f"x = gray[:{side}, :{side}].astype(np.float32) / 255  # one native-resolution tile; "
                "whole images: handseg's tiled inference\n")
        size = f"({side}, {side})"
    else:
        side = spec.get("image_size")
        feed = f"x = cv2.resize(gray, ({side}, {side}), interpolation=cv2.INTER_AREA).astype(np.float32) / 255\n"
        size = "gray.shape"
    return (
        "## How to use\n\n"
        "With the handseg project (tiled full-resolution inference, compiled engines, Dice and submissions), set "
        "`checkpoint:` in `config/eval.yaml` to this folder, then:\n\n"
        "```\npython tensorrt_aot.py --cfg-path config/eval.yaml\n"
        "sh accelerate_eval.sh --mode validation --cfg-path config/eval.yaml\n```\n\n"
        "With `transformers` alone (the folder is a standard model folder; preprocessing as recorded above):\n\n"
        "```python\nimport cv2, numpy as np, torch\n"
        f"from transformers import {cls}\n\n"
        f"model = {cls}.from_pretrained(\"path/to/this/folder\").eval()\n"
        "gray = cv2.imread(\"hand.png\", cv2.IMREAD_GRAYSCALE)\n"
        + feed
        + ("# this model standardises grey levels per image first: handseg.model.io.model_input does both\n"
           if (spec.get("intensity") or {}).get("method", "none") != "none" else "")
        + f"mean, std = np.array({spec.get('mean')}), np.array({spec.get('std')})\n"
        "x = (np.stack([x] * 3) - mean[:, None, None]) / std[:, None, None]\n"
        "with torch.no_grad():\n"
        "    logits = model(pixel_values=torch.from_numpy(x[None]).float()).logits  # (1, 29, h, w)\n"
        f"probs = torch.sigmoid(torch.nn.functional.interpolate(logits, size={size}, mode=\"bilinear\"))\n"
        "masks = probs[0] > 0.5  # (29, H, W) bool, channel order = config.json id2label\n```\n"
    )


def limitations_section(phantom: bool | None) -> str:
    lines = [
        "## Intended use and limitations\n",
        ("- Intended for research on hand radiographs: segmenting the 29 bones (19 finger bones numbered from the "
         "thumb, 8 carpals, radius and ulna) for morphometry, bone-age research and pre-labelling of annotations "
         "that a person then corrects."),
        "- **Not a medical device.** It has not been validated for diagnosis or any clinical decision.",
    ]
    if phantom:
        lines.append("- **These weights were trained on synthetic phantom images only. They are not for clinical "
                     "use and are not expected to work on real radiographs without training on real data.**")
    elif phantom is None:
        lines.append("- The training data could not be identified when this card was written; if it was the "
                     "phantom data set, the weights are not for clinical use and not expected to work on real "
                     "radiographs.")
    lines += [
        ("- The Dice above comes from one validation fold of the training data; acquisition devices, exposure, "
         "children's hands (open growth plates), fractures, implants, casts and unusual poses that the training "
         "data did not contain can lower it without warning."),
        ("- The small bones (finger-16, Trapezoid, Pisiform) and overlapping carpals are the hardest classes; "
         "check them first."),
        "- Outputs are 29 independent masks, not a label map: a pixel can belong to several bones.",
    ]
    return "\n".join(lines) + "\n"
