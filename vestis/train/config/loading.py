"""Reading a config: YAML, ``--set`` overrides, and typed construction that names every bad key."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from vestis.errors import VestisError
from vestis.train.config.runs import CONFIG_CLASSES, RUN_KINDS, RunConfig


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections, or a clear error."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise VestisError(f"cannot read config {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise VestisError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise VestisError(f"{path}: a config is a YAML mapping of sections (data, head, train, ...)")
    return loaded


def config_from_dict(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """The validated run config of a mapping (a file's, or a checkpoint's), of the dataclass of its
    ``kind``; ``where`` names the mapping in errors."""
    kinds = "; ".join(f"{name} ({what})" for name, what in RUN_KINDS.items())
    if "stage" in raw:
        raise VestisError(f"{where}: say what the run trains with `kind:` instead of `stage:` (stage 1 is "
                          f"`kind: embedding`, stage 2 `kind: finetune`); the kinds: {kinds}")
    kind = raw.get("kind")
    if kind is None:
        raise VestisError(f"{where}: no `kind:`; a config declares what it trains, one of: {kinds}")
    if kind not in CONFIG_CLASSES:
        raise VestisError(f"{where}: kind {kind!r} is not one of: {kinds}")
    return _build(CONFIG_CLASSES[kind], raw, "").validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config of any kind, apply ``key=value`` overrides and validate."""
    raw = read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    raw.setdefault("name", Path(path).stem)
    return config_from_dict(raw, str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested dict ``raw``."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise VestisError(f"an override is key=value with a dotted key, e.g. head.kind=arcface (got {item!r})")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise VestisError(f"override {item!r}: the value is not valid YAML ({e})") from e
    *parents, leaf = key.strip().split(".")
    node = raw
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise VestisError(f"override {item!r}: {p} is not a section")
        node = child
    node[leaf] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    """Make dataclass ``cls`` from a mapping, checking keys and value types."""
    if not isinstance(raw, dict):
        raise VestisError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise VestisError(f"unknown config key {where}{unknown[0]} (known in this section: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{where}{name}"
        kwargs[name] = _build(hint, value, key + ".") if dataclasses.is_dataclass(hint) else _check(hint, value, key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise VestisError(f"{where.rstrip('.') or 'config'}: {e}") from e


def _check(hint: Any, value: Any, key: str) -> Any:
    """``value`` converted to the annotated type (int or numeric text -> float and number -> str allowed), or a clear error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise VestisError(f"{key}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value)]
        return [_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise VestisError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)  # PyYAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads version: 2 as a number
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise VestisError(f"{key}: expected {hint.__name__}, got {value!r}")
