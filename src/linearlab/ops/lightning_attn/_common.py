"""Lightning attention's fixed per-head decay (TransNormerLLM / fla convention)."""

from __future__ import annotations

import torch


def _check_layer(layer_idx: int, num_layers: int) -> None:
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers: expected a positive int, got {num_layers!r}")
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or not 0 <= layer_idx < num_layers:
        raise ValueError(
            f"layer_idx: expected an int in [0, num_layers) = [0, {num_layers}) (0-based), got {layer_idx!r}"
        )


def lightning_attn_decay(
    num_heads: int,
    layer_idx: int,
    num_layers: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-head log decays ``[H]``: ``g_gamma[h] = -(8 / H) * (1 - layer_idx / num_layers) * h``.

    This is fla's ``chunk_lightning_attn`` formula (``layer_idx`` 0-based, ``h = 0 .. H-1``), so head 0
    never decays and deeper layers decay less. The Lightning-2 repo instead uses ALiBi slopes
    ``2**(-8 h / H)`` for ``h = 1 .. H`` times ``1 - l / (L - 1)``; we follow fla (see README.md).

    Example:
        >>> lightning_attn_decay(4, 0, 2)
        tensor([-0., -2., -4., -6.])
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    _check_layer(layer_idx, num_layers)
    rate = 8.0 / num_heads * (1.0 - layer_idx / num_layers)
    return -rate * torch.arange(num_heads, dtype=dtype, device=device)
