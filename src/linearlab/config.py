"""Plain dataclass configs with dotted command-line overrides (``--set model.d_model=128``).

Override values are parsed by the field's declared type (``int``, ``float``, ``bool``, ``str``,
``list[...]``, ``tuple[...]``, ``dict``, ``X | None``); a value of the wrong type, an unknown key or a
value the dataclass's ``__post_init__`` rejects is a ``ValueError`` that names the key, the value
and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
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


def require_at_least_one(cfg: Any, *names: str) -> None:
    """``ValueError`` naming the first field of ``names`` whose value is below 1 (counts, sizes, steps):
    the check a config's ``__post_init__`` runs on its integer fields."""
    for name in names:
        value = getattr(cfg, name)
        if value < 1:
            raise ValueError(f"{name}: must be >= 1, got {value}")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dataclasses are converted first; lists stay whole)."""
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = to_dict(data)
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def diff_configs(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Dotted keys whose values differ between two config dicts: ``[(key, old, new), ...]``, sorted."""
    a, b = flatten(old), flatten(new)
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        # JSON turns tuples into lists: compare the JSON forms
        if json.dumps(va, default=str) != json.dumps(vb, default=str):
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _parse_scalar(text: str, hint: Any) -> Any:
    if hint is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(f"expected a boolean ({'/'.join(_TRUE[:2])} or {'/'.join(_FALSE[:2])})")
    if hint is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if hint is str:
        return text
    raise ValueError(f"cannot parse a {_type_name(hint)}")


def _check_element(value: Any, hint: Any) -> Any:
    """Check (and coerce int -> float) a JSON-parsed value against ``hint``."""
    origin = typing.get_origin(hint)
    if hint is Any or hint is None:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_element(value, option)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError(errors[0] if errors else f"expected {_type_name(hint)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"expected a list ({_type_name(hint)}), got {json.dumps(value)}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values ({_type_name(hint)}), got {len(value)}")
            return tuple(_check_element(v, a) for v, a in zip(value, args))
        inner = args[0] if args else Any
        items = [_check_element(v, inner) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {json.dumps(value)}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {json.dumps(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {json.dumps(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {json.dumps(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {json.dumps(value)}")
        return value
    return value


def parse_value(text: str, hint: Any) -> Any:
    """Parse the text of an override for a field declared as ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in typing.get_args(hint):
            return None
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        if len(options) == 1:
            return parse_value(text, options[0])
    if hint in (bool, int, float, str):
        return _parse_scalar(text, hint)
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        # a bare comma-separated list is friendlier on a command line than JSON
        if origin in (list, tuple):
            inner = (typing.get_args(hint) or (str,))[0]
            return _check_element(
                [
                    _parse_scalar(t.strip(), inner) if inner in (int, float, bool, str) else t
                    for t in text.split(",")
                ],
                hint,
            )
        if hint is Any:
            return text
        raise ValueError(f"expected {_type_name(hint)} as JSON") from None
    if origin in (list, tuple) and not isinstance(value, list):
        value = [value]
    return _check_element(value, hint)


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Return a copy of ``cfg`` with ``key.sub=value`` overrides applied and re-validated.

    Example:
        >>> apply_overrides(cfg, ["model.d_model=128", "train.lr=3e-4"])
    """
    cfg = copy.deepcopy(cfg)
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
            target[leaf] = parse_value(text, Any)
            continue
        names = [f.name for f in dataclasses.fields(target)] if dataclasses.is_dataclass(target) else []
        if leaf not in names:
            raise ValueError(f"--set {dotted}: no field {leaf!r}; allowed here: {', '.join(names)}")
        hint = typing.get_type_hints(type(target)).get(leaf, Any)
        try:
            value = parse_value(text, hint)
        except ValueError as err:
            raise ValueError(f"--set {dotted}={text}: {err}") from None
        setattr(target, leaf, value)
    _revalidate(cfg)
    return cfg


def _revalidate(cfg: Any) -> None:
    """Run ``__post_init__`` checks again (innermost first) after fields were set."""
    if not dataclasses.is_dataclass(cfg):
        return
    for f in dataclasses.fields(cfg):
        _revalidate(getattr(cfg, f.name))
    post_init = getattr(cfg, "__post_init__", None)
    if callable(post_init):
        post_init()
