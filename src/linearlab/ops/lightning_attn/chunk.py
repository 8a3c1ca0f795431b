"""Lightning Attention-2 in chunked form = chunked simple GLA with a fixed per-head decay."""

from __future__ import annotations

import torch

from linearlab.ops.lightning_attn._common import lightning_attn_decay
from linearlab.ops.simple_gla.chunk import chunk_simple_gla
from linearlab.ops.utils import check_qkv, state_dtype


def chunk_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layer_idx: int,
    num_layers: int,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention: ``S_t = lambda_h S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t``.

    ``log lambda_h = lightning_attn_decay(H, layer_idx, num_layers)[h]``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        layer_idx: 0-based index of this layer, in ``[0, num_layers)``.
        num_layers: number of layers of the model.
        scale, initial_state ``[N, H, K, V]``, output_final_state, cu_seqlens ``[N + 1]``, chunk_size:
            as in :func:`linearlab.ops.simple_gla.chunk_simple_gla`.

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state [N, H, K, V] or None)``.

    Example:
        >>> q = k = v = torch.randn(1, 16, 4, 8)
        >>> o, _ = chunk_lightning_attn(q, k, v, layer_idx=0, num_layers=2)
    """
    H = check_qkv(q, k, v)[2]
    g_gamma = lightning_attn_decay(H, layer_idx, num_layers, dtype=state_dtype(q), device=q.device)
    return chunk_simple_gla(
        q,
        k,
        v,
        g_gamma=g_gamma,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        chunk_size=chunk_size,
    )
