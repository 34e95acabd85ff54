"""Dotted overrides on the command line: ``--set key.sub=value`` (repeatable), merged into a YAML before it is checked.

One config serves a dry run and a real run without a copy: ``--set data.batch_size=2 --set epochs=1``. The value
is parsed as YAML, so ``--set model.pretrained=null``, ``--set data.augmentations=[]`` and
``--set 'val={batch_size: 3}'`` give None, an empty list and a mapping (a mapping merges key by key into the
file's). The merged mapping is checked exactly like the file; a problem with a key given here (an unknown or
misspelt key, a wrong type, a bad value) names the key and says which ``--set`` gave it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml

from handseg.runtime.errors import ConfigError

SET_HELP = ("override a config key, the value in YAML: --set data.batch_size=2 --set model.pretrained=null "
            "(repeatable)")


@dataclass(frozen=True)
class Override:
    """One ``--set``: the dotted ``key``, its parsed ``value`` and the ``text`` as given."""

    key: str
    value: Any
    text: str


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) on a command's parser; the strings land in ``args.set``."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def parse_override(text: str, file: str | Path = "<command line>") -> Override:
    """``key.sub=value`` -> Override; a malformed one is a ConfigError naming ``--set``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not all(part.strip() for part in key.split(".")):
        raise ConfigError(file, "--set", f"{text!r}: expected key.sub=value, e.g. --set data.batch_size=2")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(file, key, f"--set {text!r}: the value is not valid YAML") from None
    return Override(key, value, text)


def parse_overrides(texts: Sequence[str], file: str | Path = "<command line>") -> list[Override]:
    return [parse_override(t, file) for t in texts]


def apply_overrides(data: dict, overrides: Sequence[Override]) -> dict:
    """``data`` with each override set at its dotted path (in order; a later one wins). A mapping value merges into
    the mapping already there; any other value replaces what was there. ``data`` is not changed."""
    out = dict(data)
    for o in overrides:
        *parents, last = o.key.split(".")
        node = out
        for name in parents:
            child = node.get(name)
            node[name] = dict(child) if isinstance(child, dict) else {}
            node = node[name]
        if isinstance(o.value, dict) and isinstance(node.get(last), dict):
            node[last] = merge_dicts(node[last], o.value)
        else:
            node[last] = o.value
    return out


def merge_dicts(base: dict, update: dict) -> dict:
    """Recursive dict merge: values of ``update`` win; nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out


def _related(error_key: str, override_key: str) -> bool:
    """Whether an error about ``error_key`` concerns what ``override_key`` set (either lies inside the other)."""
    def inside(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or a.startswith(b + "[")

    return inside(error_key, override_key) or inside(override_key, error_key)


def blame(exc: ConfigError, overrides: Sequence[Override]) -> ConfigError:
    """``exc`` saying which ``--set`` gave the key it names (the last one that did); unchanged when none did."""
    culprit = next((o for o in reversed(overrides) if _related(exc.key, o.key)), None)
    if culprit is None:
        return exc
    return ConfigError(exc.file, exc.key, f"{exc.problem} (from --set {culprit.text})")


__all__ = ["Override", "SET_HELP", "add_set_argument", "parse_override", "parse_overrides", "apply_overrides", "blame",
           "merge_dicts"]
