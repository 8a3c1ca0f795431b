"""Mixer registry: ``register_mixer`` / ``create_mixer`` / ``list_mixers`` on one :class:`~linearlab.registry.Registry`.

Unknown names raise :class:`~linearlab.registry.UnknownNameError` (a ``KeyError`` and a
``ValueError``) listing the registered mixers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from linearlab.registry import Registry


def _load_mixers() -> None:
    # importing the package imports every mixer module, whose decorators fill the registry
    import linearlab.layers.mixers  # noqa: F401


MIXERS: Registry[type[nn.Module]] = Registry("mixer", loader=_load_mixers)

# the registry's name -> class dict; tests register a test-only mixer into it with monkeypatch.setitem
_MIXERS = MIXERS._items


def _ensure_loaded() -> None:
    """Import every mixer module (kept for callers that fill ``_MIXERS`` by hand)."""
    MIXERS._ensure_loaded()


def register_mixer(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a mixer creatable by ``name`` (sets ``cls.mixer_name``)."""

    def wrap(cls: type[nn.Module]) -> type[nn.Module]:
        MIXERS.register(name, cls)
        cls.mixer_name = name
        return cls

    return wrap


def list_mixers() -> list[str]:
    """Names of all registered mixers, sorted."""
    return MIXERS.names()


def create_mixer(name: str, d_model: int, **kwargs: Any) -> nn.Module:
    """Build the mixer registered as ``name``.

    Example:
        >>> mixer = create_mixer("gla", d_model=64, num_heads=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
    """
    return MIXERS.create(name, d_model=d_model, **kwargs)
