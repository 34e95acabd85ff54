"""Nested training state (an optimiser's or a model's ``state_dict``, RNG states) as safetensors + JSON, never pickle.

``save_tree(folder, name, tree)`` writes ``<name>.safetensors`` (every tensor of the tree) and ``<name>.json``
(everything else: the nesting, numbers, strings, and each tensor's key in the safetensors file). Loading either
file cannot run code, unlike ``torch.load(weights_only=False)`` or :mod:`pickle`. What a tree may hold: dicts,
lists, tuples, tensors, ``int``, ``float`` (also inf and nan), ``str``, ``bool`` and None. In the JSON a dict whose
keys are all strings is an object; a dict with other keys (an optimiser's integer parameter ids), a tuple and a
tensor are one-key objects ``{"__items__": [[key, value], ...]}``, ``{"__tuple__": [...]}`` and
``{"__tensor__": "<key>"}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from handseg.runtime.errors import DataFormatError

_MARKERS = ("__tensor__", "__tuple__", "__items__")


def split_tree(tree: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able skeleton, {key: tensor}) of ``tree``; tensors are detached CPU copies (no shared storage)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().to("cpu", copy=True).contiguous()
            return {"__tensor__": path}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node) and not any(m in node for m in _MARKERS):
                return {k: walk(v, f"{path}/{k}") for k, v in node.items()}
            return {"__items__": [[_key(k), walk(v, f"{path}/{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"{path or '/'}: cannot store a {type(node).__name__} in a state file")

    return walk(tree, ""), tensors


def _key(key: Any) -> Any:
    if key is None or isinstance(key, (bool, int, float, str)):
        return key
    raise TypeError(f"cannot store a dict key of type {type(key).__name__} in a state file")


def join_tree(skeleton: Any, tensors: dict[str, torch.Tensor], where: Path) -> Any:
    """Inverse of :func:`split_tree`; a tensor key missing from ``tensors`` is a DataFormatError naming ``where``."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(v) for v in node]
        if not isinstance(node, dict):
            return node
        if "__tensor__" in node:
            if node["__tensor__"] not in tensors:
                raise DataFormatError(where, f"tensor {node['__tensor__']!r} is missing")
            return tensors[node["__tensor__"]]
        if "__tuple__" in node:
            return tuple(walk(v) for v in node["__tuple__"])
        if "__items__" in node:
            return {k: walk(v) for k, v in node["__items__"]}
        return {k: walk(v) for k, v in node.items()}

    return walk(skeleton)


def tree_nbytes(tree: Any) -> int:
    """Bytes of the tensors in ``tree`` (about the size of its safetensors file)."""
    if isinstance(tree, torch.Tensor):
        return tree.numel() * tree.element_size()
    if isinstance(tree, dict):
        return sum(tree_nbytes(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return sum(tree_nbytes(v) for v in tree)
    return 0


def save_tree(folder: str | os.PathLike, name: str, tree: Any) -> list[Path]:
    """Write ``<name>.safetensors`` and ``<name>.json`` into ``folder``; returns both paths."""
    folder = Path(folder)
    skeleton, tensors = split_tree(tree)
    text = json.dumps(skeleton)  # before any file is written: a bad value fails here
    weights, meta = folder / f"{name}.safetensors", folder / f"{name}.json"
    save_file(tensors, str(weights))
    meta.write_text(text)
    return [weights, meta]


def load_tree(folder: str | os.PathLike, name: str) -> Any:
    """Read a tree written by :func:`save_tree` (tensors on the CPU); a missing, truncated or malformed file is a
    one-line DataFormatError naming it."""
    folder = Path(folder)
    weights, meta = folder / f"{name}.safetensors", folder / f"{name}.json"
    for path in (weights, meta):
        if not path.is_file():
            raise DataFormatError(path, "missing from the saved state")
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors' own error type: truncated or corrupt file
        raise DataFormatError(weights, f"cannot read ({' '.join(str(exc).split())[:200]})") from None
    try:
        skeleton = json.loads(meta.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataFormatError(meta, f"malformed JSON ({exc})") from None
    return join_tree(skeleton, tensors, meta)
