"""Token-by-token reference for scalar-decay linear attention (the ground truth for the fast forms)."""

from __future__ import annotations

import torch

from linearlab.ops.simple_gla._common import total_gate, validate
from linearlab.ops.utils import run_varlen, state_dtype


def _naive_one(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    sd = state_dtype(q)
    S = q.new_zeros(B, H, K, V, dtype=sd) if initial_state is None else initial_state.to(sd)
    gs = [None] * T if g is None else g.unbind(1)
    outs = []
    for qt, kt, vt, gt in zip(q.unbind(1), k.unbind(1), v.unbind(1), gs):
        if gt is not None:
            S = S * torch.exp(gt)[:, :, None, None]
        S = S + kt.to(sd)[..., :, None] * vt.to(sd)[..., None, :]
        outs.append(scale * torch.einsum("bhk,bhkv->bhv", qt.to(sd), S))
    o = torch.stack(outs, dim=1)
    return o, (S if output_final_state else None)


def naive_recurrent_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain loop over tokens: ``S_t = exp(g_t) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` per-token log decay (<= 0) or None.
        g_gamma: ``[H]`` constant per-head log decay (<= 0) or None; added to ``g``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or number of sequences with ``cu_seqlens``).
        output_final_state: return the final state ``[N, H, K, V]`` (float32; float64 for float64).
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1).

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    scale = validate(q, k, v, g, g_gamma, scale, initial_state, cu_seqlens)
    gate = total_gate(g, g_gamma, q)
    if cu_seqlens is not None:
        o, ht = run_varlen(
            lambda q, k, v, g, initial_state, output_final_state: _naive_one(
                q, k, v, g, scale, initial_state, output_final_state
            ),
            {"q": q, "k": k, "v": v, "g": gate},
            cu_seqlens,
            initial_state,
            output_final_state,
        )
    else:
        o, ht = _naive_one(q, k, v, gate, scale, initial_state, output_final_state)
    return o.to(q.dtype), ht
