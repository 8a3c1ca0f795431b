"""Mixer registry: ``register_mixer`` / ``create_mixer`` / ``list_mixers`` (small, explicit, timm-like)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_MIXERS: dict[str, Callable[..., nn.Module]] = {}


def register_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a mixer creatable by ``name``."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _MIXERS and _MIXERS[name] is not cls:
            raise RuntimeError(f"mixer name {name!r} is registered twice")
        _MIXERS[name] = cls
        cls.mixer_name = name
        return cls

    return wrap


def _ensure_loaded() -> None:
    # importing the package imports every mixer module, which registers it
    import linearlab.layers.mixers  # noqa: F401


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    _ensure_loaded()
    return sorted(_MIXERS)


def create_mixer(name: str, d_model: int, **kwargs: Any) -> nn.Module:
    """Build the mixer registered as ``name``.

    Example:
        >>> mixer = create_mixer("gla", d_model=64, num_heads=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
    """
    _ensure_loaded()
    if name not in _MIXERS:
        raise KeyError(f"unknown mixer {name!r}; registered mixers: {', '.join(sorted(_MIXERS))}")
    return _MIXERS[name](d_model=d_model, **kwargs)
