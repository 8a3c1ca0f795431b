"""Token-by-token reference for (optionally normalised) causal linear attention."""

from __future__ import annotations

import torch

from linearlab.ops.linear_attn._common import NORMALIZE_EPS, check_normalize, reject_state_tuple
from linearlab.ops.simple_gla._common import validate
from linearlab.ops.utils import run_varlen, state_dtype


def _naive_one(q, k, v, scale, initial_state, output_final_state, normalize):
    B, T, H, K = q.shape
    V = v.shape[-1]
    sd = state_dtype(q)
    if initial_state is None:
        S = q.new_zeros(B, H, K, V, dtype=sd)
        z = q.new_zeros(B, H, K, dtype=sd)
    else:
        S = initial_state[..., :V].to(sd)
        z = initial_state[..., V].to(sd) if normalize else None
    outs = []
    for qt, kt, vt in zip(q.unbind(1), k.unbind(1), v.unbind(1)):
        qt, kt, vt = qt.to(sd), kt.to(sd), vt.to(sd)
        S = S + kt[..., :, None] * vt[..., None, :]
        num = scale * torch.einsum("bhk,bhkv->bhv", qt, S)
        if normalize:
            z = z + kt
            den = scale * (qt * z).sum(-1, keepdim=True)
            num = num / (den + NORMALIZE_EPS)
        outs.append(num)
    o = torch.stack(outs, dim=1)
    if not output_final_state:
        return o, None
    return o, (torch.cat([S, z[..., None]], dim=-1) if normalize else S)


def naive_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    normalize: bool = False,
    *,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Plain loop: ``S_t = S_{t-1} + k_t^T v_t``, ``o_t = scale q_t S_t`` (``/ (scale q_t z_t + eps)``
    when ``normalize``, with ``z_t = z_{t-1} + k_t``).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        scale: default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``, or ``[N, H, K, V + 1]`` when ``normalize`` (last column = z).
        output_final_state: return the final state (same shape as ``initial_state``).
        normalize: Katharopoulos denominator.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1); keyword-only, after
            fla's positional order ``(q, k, v, scale, initial_state, output_final_state, normalize)``.

    Returns:
        ``(o [B, T, H, V] in q's dtype, final_state or None)``.
    """
    normalize = check_normalize(normalize)
    reject_state_tuple(initial_state)
    V = v.shape[-1] if isinstance(v, torch.Tensor) and v.dim() == 4 else None
    scale = validate(
        q,
        k,
        v,
        None,
        None,
        scale,
        initial_state,
        cu_seqlens,
        state_v=V + 1 if normalize and V is not None else None,
    )

    def one(q, k, v, initial_state, output_final_state):
        return _naive_one(q, k, v, scale, initial_state, output_final_state, normalize)

    if cu_seqlens is None:
        o, ht = one(q, k, v, initial_state, output_final_state)
    else:
        o, ht = run_varlen(one, {"q": q, "k": k, "v": v}, cu_seqlens, initial_state, output_final_state)
    return o.to(q.dtype), ht
