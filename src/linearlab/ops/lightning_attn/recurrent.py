"""Lightning attention in recurrent (decoding) form = recurrent simple GLA with a fixed decay."""

from __future__ import annotations

import torch

from linearlab.ops.lightning_attn._common import lightning_attn_decay
from linearlab.ops.simple_gla.recurrent import fused_recurrent_simple_gla
from linearlab.ops.utils import check_qkv, state_dtype


def fused_recurrent_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention token by token; args and returns as in ``chunk_lightning_attn``.

    ``reverse=True`` runs from the last token to the first (see ``fused_recurrent_simple_gla``).
    Positional order is fla 0.6's.
    """
    H = check_qkv(q, k, v)[2]
    g_gamma = lightning_attn_decay(H, layer_idx, num_layers, dtype=state_dtype(q), device=q.device)
    return fused_recurrent_simple_gla(
        q,
        k,
        v,
        g_gamma=g_gamma,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        reverse=reverse,
        cu_seqlens=cu_seqlens,
    )
