"""Typed, validated YAML configs built from dataclasses.

A schema is a (possibly nested) dataclass whose fields carry type hints. :func:`load_config` reads a YAML
file and builds the dataclass, rejecting unknown keys, missing required keys and wrong types with a
:class:`~handseg.runtime.errors.ConfigError` that names the file and the dotted key, before any work starts.
A dataclass may define ``check(self) -> None`` for value checks that need no disk: it raises
:class:`FieldError` naming the field (or a dotted path below it) and the problem; the loader adds the file name
and the prefix of nested sections. Checks never change the object; defaults that depend on the disk are
resolved by an explicit step after loading.

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``Path``, ``Literal[...]``, ``X | None``,
``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Any`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import Any, Literal, Sequence, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from handseg.runtime.errors import ConfigError
from handseg.runtime.overrides import apply_overrides, blame, merge_dicts, parse_overrides

T = TypeVar("T")


class FieldError(ValueError):
    """A config value is wrong: ``key`` is the field (dotted below the checked object), ``problem`` says why."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}")


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or malformed YAML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, "<file>", "config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(path, "<file>", f"malformed YAML{where}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "<file>", f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(path: str | Path, schema: type[T], overrides: dict | None = None, sets: Sequence[str] = ()) -> T:
    """Load ``path`` into the dataclass ``schema``; ``overrides`` (a nested dict) is merged on top, then the
    command line's ``--set key.sub=value`` strings (:mod:`handseg.runtime.overrides`), and the result is checked
    as a whole; a problem with a key a ``--set`` gave says so."""
    data = load_yaml(path)
    if overrides:
        data = merge_dicts(data, overrides)
    given = parse_overrides(sets, path)
    try:
        return from_dict(schema, apply_overrides(data, given), file=path)
    except ConfigError as exc:
        raise blame(exc, given) from None


def from_dict(schema: type[T], data: Any, *, file: str | Path = "<config>", prefix: str = "") -> T:
    """Build dataclass ``schema`` from a mapping, validating keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(file, prefix or "<root>", f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = _join(prefix, str(unknown[0]))
        raise ConfigError(file, key, f"unknown key (allowed: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], file, key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(file, key, "required key is missing")
    try:
        obj = schema(**kwargs)
        check = getattr(obj, "check", None)
        if callable(check):
            check()
    except FieldError as exc:
        raise ConfigError(file, _join(prefix, exc.key), exc.problem) from None
    except ValueError as exc:
        raise ConfigError(file, prefix or "<root>", str(exc)) from None
    return obj


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-serialisable) form of a config dataclass: Paths become strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, file, key: str) -> Any:
    """``value`` checked against the type hint ``tp`` (and converted: a Path from a string, a float from an int);
    ConfigError naming ``key`` otherwise."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(get_args(tp), value, file, key)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(file, key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, file=file, prefix=key)
    if origin in (list, tuple):
        return _convert_sequence(origin, get_args(tp), value, file, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {k: _convert(vt, v, file, f"{key}.{k}") for k, v in value.items()}
    if tp in _SCALARS:
        accepts, convert, expected = _SCALARS[tp]
        if not accepts(value):
            raise ConfigError(file, key, f"expected {expected}, got {value!r}")
        return convert(value)
    raise ConfigError(file, key, f"unsupported schema type {_type_name(tp)}")


# Scalar field types: (which values are accepted, conversion, what the error says was expected). bool is an int in
# Python, so ints and floats refuse it explicitly.
_SCALARS = {
    bool: (lambda v: isinstance(v, bool), lambda v: v, "true/false"),
    int: (lambda v: isinstance(v, int) and not isinstance(v, bool), lambda v: v, "an integer"),
    float: (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), float, "a number"),
    str: (lambda v: isinstance(v, str), lambda v: v, "a string"),
    Path: (lambda v: isinstance(v, (str, Path)), Path, "a path"),
}


def _convert_union(args: tuple, value: Any, file, key: str) -> Any:
    """``X | Y | None``: null where allowed, else the first member type that takes the value."""
    if value is None and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, file, key)
        except ConfigError as exc:
            errors.append(exc.problem)
    raise ConfigError(file, key, " or ".join(errors) or "null is not allowed")


def _convert_sequence(origin: type, args: tuple, value: Any, file, key: str) -> list | tuple:
    """``list[X]``, ``tuple[X, ...]`` or a fixed ``tuple[X, Y]``, item by item (keys ``key[i]``)."""
    if not isinstance(value, (list, tuple)):
        raise ConfigError(file, key, f"expected a list, got {type(value).__name__} {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            raise ConfigError(file, key, f"expected {len(args)} items, got {len(value)}")
        return tuple(_convert(a, v, file, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    item = args[0] if args else Any
    items = [_convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items


__all__ = ["FieldError", "load_config", "load_yaml", "from_dict", "to_dict", "merge_dicts"]
