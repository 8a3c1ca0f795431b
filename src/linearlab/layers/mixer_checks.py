"""Argument and input checks every mixer runs: constructor arguments and the input ``x``.

The check of an incoming state is :func:`linearlab.layers.mixer_state.check_state`.
"""

from __future__ import annotations

import torch


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_positive_int(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is an int >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")


def check_choice(name: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def check_mixer_input(x: torch.Tensor, d_model: int) -> tuple[int, int]:
    """Check a mixer input ``x: [B, T, D]`` with ``D == d_model`` and ``T >= 1``; return ``(B, T)``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor [B, T, D], got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x: expected 3 dims [B, T, D] with D = {d_model}, got shape {_shape(x)}")
    if x.shape[-1] != d_model:
        raise ValueError(f"x: last dim must equal d_model = {d_model}, got shape {_shape(x)}")
    if x.shape[1] == 0:
        raise ValueError("x: sequence length T must be at least 1, got 0")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
    return x.shape[0], x.shape[1]
