"""Plain dataclass configs with dotted command-line overrides (``--set model.d_model=128``)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) dataclass config."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a (nested) dataclass from ``to_dict`` output; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown field(s) {sorted(unknown)}; allowed: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_value(text: str, current: Any) -> Any:
    """Parse an override value, guided by the type of the value it replaces."""
    if isinstance(current, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    # lists, dicts, None and anything else: JSON, falling back to the raw string
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied.

    Example:
        >>> apply_overrides(cfg, ["model.d_model=128", "train.lr=3e-4"])
    """
    cfg = _deepcopy(cfg)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set: expected key=value, got {item!r}")
        dotted, text = item.split("=", 1)
        parts = dotted.strip().split(".")
        target = cfg
        for i, part in enumerate(parts[:-1]):
            if not dataclasses.is_dataclass(target) or not hasattr(target, part):
                raise ValueError(f"--set {dotted}: no field {'.'.join(parts[: i + 1])!r}")
            target = getattr(target, part)
        leaf = parts[-1]
        if isinstance(target, dict):
            target[leaf] = _parse_value(text, target.get(leaf))
            continue
        if not dataclasses.is_dataclass(target) or leaf not in {f.name for f in dataclasses.fields(target)}:
            allowed = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
            raise ValueError(f"--set {dotted}: no field {leaf!r}; allowed here: {allowed}")
        current = getattr(target, leaf)
        try:
            value = _parse_value(text, current)
        except ValueError as err:
            raise ValueError(f"--set {dotted}={text}: {err}") from None
        setattr(target, leaf, value)
    return cfg


def _deepcopy(cfg: T) -> T:
    import copy

    return copy.deepcopy(cfg)
