"""Recurrent (decoding) form of causal linear attention: one ``[H, K, V]`` state update per token."""

from __future__ import annotations

import torch

from linearlab.ops.linear_attn._common import run_linear_attn
from linearlab.ops.simple_gla.recurrent import recurrent_scalar_decay


def fused_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    normalize: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal linear attention, token by token; args and returns as in ``chunk_linear_attn``.

    Example (decode one token with a carried state):
        >>> q = k = v = torch.randn(1, 1, 2, 8)
        >>> o, s = fused_recurrent_linear_attn(q, k, v, output_final_state=True)
        >>> o, s = fused_recurrent_linear_attn(q, k, v, initial_state=s, output_final_state=True)
    """
    return run_linear_attn(
        recurrent_scalar_decay, q, k, v, scale, initial_state, output_final_state, normalize, cu_seqlens
    )
