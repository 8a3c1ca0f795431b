"""Query-by-query reference for non-causal linear attention (the ground truth of ``fused.py``)."""

from __future__ import annotations

import torch

from linearlab.ops.noncausal_linear_attn._common import DEFAULT_EPS, validate
from linearlab.ops.utils import state_dtype


def naive_noncausal_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    normalize: bool = True,
    mean: bool = True,
    eps: float = DEFAULT_EPS,
    *,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Every query against every key, one query token at a time (``O(T^2)``; ground truth).

    With ``a_ij = scale * q_i . k_j`` and ``c = 1/T`` if ``mean`` else ``1``:

    - ``normalize=True``:  ``o_i = (c sum_j a_ij v_j) / (c sum_j a_ij + eps)`` (LinFusion's
      attention normalisation; the output scale does not depend on ``T``),
    - ``normalize=False``: ``o_i = c sum_j a_ij v_j`` (with ``mean=False``, the Mamba2-like sum
      whose magnitude grows with ``T``).

    Feature maps (ReLU, elu + 1) are applied by the caller; with ``normalize=True`` use
    non-negative features so the denominator stays positive.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        scale: default ``K ** -0.5``.
        normalize: divide by the attention mass ``c sum_j a_ij + eps``.
        mean: average over keys (``c = 1/T``) instead of summing.
        eps: added to the denominator (LinFusion: 1e-4).
        cu_seqlens: not supported (ValueError): non-causal attention over a packed row would mix
            sequences.

    Returns:
        ``o: [B, T, H, V]`` in q's dtype (computed in float32, float64 for float64 inputs).
    """
    scale = validate(q, k, v, scale, normalize, mean, eps, cu_seqlens)
    sd = state_dtype(q)
    T = q.shape[1]
    c = 1.0 / T if mean else 1.0
    k, v = k.to(sd), v.to(sd)
    outs = []
    for qi in q.to(sd).unbind(1):  # qi: [B, H, K]
        a = scale * torch.einsum("bhk,bthk->bth", qi, k)  # this query's scores on every key
        num = c * torch.einsum("bth,bthv->bhv", a, v)
        if normalize:
            num = num / (c * a.sum(1)[..., None] + eps)
        outs.append(num)
    return torch.stack(outs, dim=1).to(q.dtype)
