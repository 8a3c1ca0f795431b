"""Chunked causal linear attention (no decay): the scalar-decay chunk engine with the gate dropped."""

from __future__ import annotations

import torch

from linearlab.ops.linear_attn._common import run_linear_attn
from linearlab.ops.simple_gla.chunk import chunk_scalar_decay
from linearlab.ops.utils import check_chunk_size


def chunk_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    normalize: bool = True,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal linear attention ``o_t = scale q_t sum_{s<=t} k_s^T v_s`` in chunked form.

    ``normalize=True`` (the default, as in fla) divides by ``scale q_t z_t + eps`` with
    ``z_t = sum_{s<=t} k_s`` (Katharopoulos); ``normalize=False`` is TransNormer's NormAttention
    core (apply your output norm after). Note that ``fused_recurrent_linear_attn`` defaults to
    ``normalize=False``, as fla's does: pass it explicitly when mixing the two forms.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``, or ``[N, H, K, V + 1]`` with ``normalize`` (last column = z;
            fla's ``(kv_state, z_state)`` tuple is refused with a ValueError showing the conversion).
        output_final_state: return the final state (same shape as ``initial_state``; float32/float64).
        normalize: add the denominator (see above).
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1).
        chunk_size: tokens per chunk.

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.

    Example:
        >>> phi = lambda x: torch.nn.functional.elu(x) + 1
        >>> q, k, v = phi(torch.randn(1, 12, 2, 8)), phi(torch.randn(1, 12, 2, 8)), torch.randn(1, 12, 2, 4)
        >>> o, state = chunk_linear_attn(q, k, v, normalize=True, output_final_state=True)
        >>> state.shape  # z rides along as the last value column
        torch.Size([1, 2, 8, 5])
    """
    chunk_size = check_chunk_size(chunk_size)
    return run_linear_attn(
        chunk_scalar_decay,
        q,
        k,
        v,
        scale,
        initial_state,
        output_final_state,
        normalize,
        cu_seqlens,
        chunk_size=chunk_size,
    )
