"""Plain masked-softmax attention: explicit scores, mask and softmax (the reference)."""

from __future__ import annotations

import torch

from linearlab.ops.softmax_attn._common import allowed_mask, split_varlen, validate
from linearlab.ops.utils import state_dtype


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    window_size: int | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """``softmax(scale q k^T + mask) v`` computed explicitly in float32 (float64 for float64 inputs).

    Args and returns as in :func:`linearlab.ops.softmax_attn.attention`.
    """
    scale = validate(q, k, v, causal, window_size, scale, cu_seqlens)
    sd = state_dtype(q)

    def one(q, k, v):
        T = q.shape[1]
        scores = torch.einsum("bihd,bjhd->bhij", q.to(sd), k.to(sd)) * scale
        mask = allowed_mask(T, T, causal, window_size, q.device)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        p = torch.softmax(scores, dim=-1)
        return torch.einsum("bhij,bjhd->bihd", p, v.to(sd))

    o = one(q, k, v) if cu_seqlens is None else split_varlen(one, q, k, v, cu_seqlens)
    return o.to(q.dtype)
