"""The report's run configuration section: what ``dice.json`` recorded of the checkpoint, the engine, the
validation split, the input, blending, thresholds, post-processing and hand normalisation, as a key-value table."""

from __future__ import annotations

from typing import Any

from evaluator.html_parts import esc
from handseg.inference.hand_norm import describe_reference
from handseg.model.checkpoint import read_info
from handseg.runtime.errors import HandSegError


def _candidate(c) -> str:
    """One candidate checkpoint as ``<code>path</code> (stage 2, recorded Dice 0.9379)``."""
    if not isinstance(c, dict):
        return f"<code>{esc(c)}</code>"
    dice = c.get("mean_dice")
    recorded = f", recorded Dice {dice:.4f}" if isinstance(dice, (int, float)) else ""
    return f"<code>{esc(c.get('checkpoint'))}</code> (stage {esc(c.get('stage', '?'))}{recorded})"


def _kv_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def config_section(dice: dict) -> str:
    """The run's configuration, as ``dice.json`` recorded it: checkpoint, engine, input, thresholds, ..."""
    s = dice.get("settings") or {}
    spec = s.get("input") or {}
    if spec.get("mode") == "tile":
        feed = f"native tiles of {spec.get('tile_size')} px, overlap {spec.get('overlap')}"
    elif spec.get("mode") == "resize":
        feed = f"whole image resized to {spec.get('image_size')} px"
    else:
        feed = "not recorded"
    prior = spec.get("prior")
    if isinstance(prior, dict):
        feed += (f"; cascade: stage 1's probabilities (whole image at {prior.get('image_size')} px) are input "
                 "channels and the base of the output")
    rows = [("checkpoint", f"<code>{esc(s.get('checkpoint', 'not recorded'))}</code>")]
    candidates = s.get("checkpoint_candidates")
    if isinstance(candidates, list) and len(candidates) > 1:
        rows.append(("chosen from", ", ".join(_candidate(c) for c in candidates)))
    info = None
    if s.get("checkpoint"):
        try:
            info = read_info(s["checkpoint"])
        except HandSegError:
            info = None
    if info is not None:
        model = info.get("model") or {}
        rows.append(("model", esc(f"{model.get('arch')} {model.get('preset')}, stage {info.get('stage')}, "
                                 f"{info.get('epoch')} epochs, {info.get('step')} steps")))
        if isinstance(info.get("mean_dice"), (int, float)):
            rows.append(("Dice recorded in training", f"{info['mean_dice']:.4f}"))
    engine = esc(s.get("engine", "not recorded"))
    if s.get("engine_path"):
        engine += f" (<code>{esc(s['engine_path'])}</code>)"
    rows += [
        ("engine", engine),
        ("validation split", esc(f"fold {s.get('fold')} of {s.get('n_folds')} (group K-fold by person), "
                                f"seed {s.get('seed')}; {dice.get('n_images', '?')} images")),
        ("input", esc(feed)),
        ("blending, TTA, tile batch", esc(f"{s.get('blend', '?')}, flip TTA {'on' if s.get('flip_tta') else 'off'}"
                                         f", {s.get('tile_batch', '?')} tiles per call")),
        ("thresholds", esc(_thresholds_text(s.get("thresholds")))),
        ("post-processing", esc(_postprocess_text(s.get("postprocess")))),
        ("hand normalisation", esc(_hand_norm_text(s.get("hand_norm")))),
        ("tile selection", esc(_tile_selection_text(s, spec))),
    ]
    return "<section id=\"configuration\"><h2>Run configuration</h2>" + _kv_table(rows) + "</section>"


def _thresholds_text(value: Any) -> str:
    if isinstance(value, (int, float)):
        return f"{value:g} for every class"
    if isinstance(value, list) and value:
        return f"per class, {min(value):.2f} to {max(value):.2f}"
    if isinstance(value, str):
        return f"tuned per class on the validation fold ({value})"
    return "not recorded"


def _postprocess_text(value: Any) -> str:
    if not isinstance(value, dict):
        return "none"
    lc = [c for c, v in value.items() if isinstance(v, dict) and v.get("largest_component")]
    fh = [c for c, v in value.items() if isinstance(v, dict) and v.get("fill_holes")]
    if not lc and not fh:
        return "none"
    return f"largest component on {len(lc)} classes, hole filling on {len(fh)} (chosen by threshold tuning)"


def _tile_selection_text(settings: dict, spec: dict) -> str:
    """Which tiles a cascade's stage 2 ran on, in words (not recorded by evaluations before the selection)."""
    if not spec.get("prior"):
        return "not a cascade: every tile (or the whole image)"
    if "tile_selection" not in settings:
        return "not recorded"
    chosen = settings["tile_selection"]
    if not chosen:
        return "off: stage 2 on every tile"
    return (f"stage 2 only on tiles within {chosen.get('margin')} px of where stage 1's probability exceeds "
            f"{chosen.get('probability')}; elsewhere stage 1's prediction")


def _hand_norm_text(value: Any) -> str:
    reference = describe_reference(value)
    if reference == "off":
        return reference
    return (f"an image whose hand is far from the validation hands' size or angle ({reference}) is magnified, "
            f"shrunk or rotated towards them for inference, and the masks mapped back")
