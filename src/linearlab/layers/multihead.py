"""Head sizes and the ``[B, T, H * D] <-> [B, T, H, D]`` reshapes shared by the multi-head mixers.

(Output heads of a model, such as the Fourier head, live in :mod:`linearlab.layers.heads`.)
"""

from __future__ import annotations

import torch

from linearlab.layers.mixer_checks import check_positive_int


def check_heads(d_model: int, num_heads: int) -> int:
    """Return the head dim ``d_model / num_heads``, with a clear error when ``num_heads`` does not divide it."""
    if num_heads < 1 or d_model % num_heads:
        raise ValueError(f"num_heads: must be >= 1 and divide d_model = {d_model}, got {num_heads}")
    return d_model // num_heads


def head_dims(d_model: int, num_heads: int, expand_k: float, expand_v: float) -> tuple[int, int]:
    """Per-head key and value sizes ``(d_model * expand_k / H, d_model * expand_v / H)``.

    Raises a ValueError naming ``num_heads``, ``expand_k`` or ``expand_v`` when a width is not a
    positive integer divisible by the number of heads.
    """
    check_positive_int("num_heads", num_heads)
    dims = []
    for name, expand in (("expand_k", expand_k), ("expand_v", expand_v)):
        total = d_model * expand
        if expand <= 0 or total != int(total) or int(total) % num_heads:
            raise ValueError(
                f"{name}: d_model * {name} = {d_model} * {expand} = {total:g} must be a positive integer "
                f"divisible by num_heads = {num_heads}"
            )
        dims.append(int(total) // num_heads)
    return dims[0], dims[1]


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, T, H * D] -> [B, T, H, D]``."""
    return t.unflatten(-1, (num_heads, -1))


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, D] -> [B, T, H * D]``."""
    return t.flatten(-2)
