"""Token-by-token Gated Linear Attention: the plain definition, used as the test oracle.

``S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t`` and ``o_t = (scale * q_t) S_t``, one step per token.
"""

from __future__ import annotations

import torch

from linearlab.ops.utils import (
    check_cu_seqlens,
    check_initial_state,
    check_log_gate,
    check_qkv,
    check_scale,
    run_varlen,
    state_dtype,
)


def _naive_fixed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = state_dtype(q)
    h = q.new_zeros(B, H, K, V, dtype=dt) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(T):
        q_t = q[:, t].to(dt) * scale
        k_t = k[:, t].to(dt)
        v_t = v[:, t].to(dt)
        decay = gk[:, t].to(dt).exp()
        h = h * decay[..., None] + k_t[..., None] * v_t[..., None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q_t, h))
    o = torch.stack(outs, dim=1).to(q.dtype)
    return o, (h if output_final_state else None)


def naive_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    *,
    scale: float | None = None,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference GLA recurrence, one token at a time (slow; the ground truth for tests).

    Positional order is fla's ``naive_recurrent_gla``; ``scale`` and ``cu_seqlens`` are
    keyword-only extras (fla's reference hard-codes ``K ** -0.5`` and has no varlen).

    Args:
        q, k: ``[B, T, H, K]`` queries and keys.
        v: ``[B, T, H, V]`` values.
        gk: ``[B, T, H, K]`` per-key log-space decay (``<= 0``); ``exp(gk)`` is the forget factor.
        scale: multiplies ``q``; default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the state after the last token.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (needs ``B == 1``).

    Returns:
        ``o: [B, T, H, V]`` in the input dtype, and ``final_state: [N, H, K, V]`` (float32, or
        float64 for float64 inputs) or None.

    Example:
        >>> q = k = torch.randn(1, 8, 2, 4); v = torch.randn(1, 8, 2, 3)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 8, 2, 4))
        >>> o, ht = naive_recurrent_gla(q, k, v, g, output_final_state=True)
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_log_gate("gk", gk, (B, T, H, K), q)
    scale = check_scale(scale, K)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V, q)
    if cu_seqlens is not None:
        return run_varlen(
            lambda q, k, v, gk, **kw: _naive_fixed(q, k, v, gk, scale, **kw),
            {"q": q, "k": k, "v": v, "gk": gk},
            cu_seqlens,
            initial_state,
            output_final_state,
        )
    return _naive_fixed(q, k, v, gk, scale, initial_state, output_final_state)
