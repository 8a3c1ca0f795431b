"""Non-causal linear attention in ``O(T)``: contract keys with values first (``K^T V``), then queries."""

from __future__ import annotations

import torch

from linearlab.ops.noncausal_linear_attn._common import DEFAULT_EPS, validate
from linearlab.ops.utils import state_dtype


def fused_noncausal_linear_attn(
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
    """Non-causal (bidirectional) linear attention; same maths as :func:`naive_noncausal_linear_attn`.

    ``S = c K^T V: [B, H, K, V]`` and ``z = c sum_j k_j: [B, H, K]`` (``c = 1/T`` if ``mean``) are
    formed once, then ``o_i = scale q_i S`` (``/ (scale q_i . z + eps)`` when ``normalize``). Cost
    ``O(T K V)`` time and an ``O(K V)`` state per head, so the token count can grow freely (images at
    2x or 4x the training resolution). Gradients flow through plain autograd (two einsums).

    Args:
        q, k: ``[B, T, H, K]`` (features already applied); v: ``[B, T, H, V]``.
        scale: default ``K ** -0.5`` (it cancels in the normalised form except against ``eps``).
        normalize: divide by the attention mass (LinFusion); False gives the un-normalised sum/mean.
        mean: use means over the T keys (LinFusion) instead of sums.
        eps: added to the denominator (LinFusion: 1e-4).
        cu_seqlens: not supported (ValueError).

    Returns:
        ``o: [B, T, H, V]`` in q's dtype; there is no state to return (nothing is carried over).

    Example:
        >>> q = k = torch.relu(torch.randn(2, 64, 4, 16)); v = torch.randn(2, 64, 4, 16)
        >>> fused_noncausal_linear_attn(q, k, v).shape
        torch.Size([2, 64, 4, 16])
    """
    scale = validate(q, k, v, scale, normalize, mean, eps, cu_seqlens)
    sd = state_dtype(q)
    qs, ks, vs = q.to(sd), k.to(sd), v.to(sd)
    c = 1.0 / q.shape[1] if mean else 1.0
    S = torch.einsum("bthk,bthv->bhkv", ks, vs) * (c * scale)
    o = torch.einsum("bthk,bhkv->bthv", qs, S)
    if normalize:
        z = ks.sum(1) * (c * scale)  # [B, H, K]
        o = o / (torch.einsum("bthk,bhk->bth", qs, z)[..., None] + eps)
    return o.to(q.dtype)
