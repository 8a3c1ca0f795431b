"""State-passing GLA for decoding: ``fused_recurrent_gla`` with key and/or value gates.

A decoding step (``T == 1``) costs a handful of ``[H, K, V]`` ops, independent of how long the
context was: the whole history lives in the state.
"""

from __future__ import annotations

import torch

from linearlab.ops.utils import (
    check_cu_seqlens,
    check_flag,
    check_initial_state,
    check_log_gate,
    check_qkv,
    check_scale,
    run_varlen,
    state_dtype,
    state_from_v_first,
    state_to_v_first,
)


def _recurrent_fixed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor | None,
    gv: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = state_dtype(q)
    # Convert and exponentiate once for all steps, so the loop body is only the state update.
    qs = q.to(dt) * scale
    kc, vc = k.to(dt), v.to(dt)
    ak = None if gk is None else gk.to(dt).exp()
    av = None if gv is None else gv.to(dt).exp()
    h = q.new_zeros(B, H, K, V, dtype=dt) if initial_state is None else initial_state.to(dt)
    outs: list[torch.Tensor] = [None] * T  # type: ignore[list-item]
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        if ak is not None:
            h = h * ak[:, t, :, :, None]
        if av is not None:
            h = h * av[:, t, :, None, :]
        h = h + kc[:, t, :, :, None] * vc[:, t, :, None, :]
        outs[t] = (qs[:, t, :, None, :] @ h).squeeze(-2)
    o = torch.stack(outs, dim=1).to(q.dtype)
    return o, (h if output_final_state else None)


def fused_recurrent_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA by state passing (the decoding form; correct for any ``T``).

    ``S_t = diag(exp(gk_t)) S_{t-1} diag(exp(gv_t)) + k_t^T v_t``, ``o_t = (scale q_t) S_t``; a
    missing gate means no decay on that side. With ``reverse=True`` time runs right to left
    (``S_t`` is built from tokens ``t..T-1``). Positional order is fla 0.6's.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        gk: optional ``[B, T, H, K]`` per-key log decay (``<= 0``).
        gv: optional ``[B, T, H, V]`` per-value log decay (``<= 0``).
        scale: multiplies ``q``; default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (``[N, H, V, K]`` with ``state_v_first``).
        output_final_state: also return the last state.
        reverse: run from the last token to the first (each packed sequence on its own).
        state_v_first: states in fla's value-first layout ``[N, H, V, K]``, on input and output.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (needs ``B == 1``).

    Returns:
        ``o: [B, T, H, V]`` (input dtype) and ``final_state: [N, H, K, V]`` (``[N, H, V, K]`` with
        ``state_v_first``; float32, float64 for float64 inputs) or None.

    Example:
        >>> q = k = torch.randn(1, 1, 2, 4); v = torch.randn(1, 1, 2, 3)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 1, 2, 4))
        >>> o, state = fused_recurrent_gla(q, k, v, g, output_final_state=True)  # one decode step
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_log_gate("gk", gk, (B, T, H, K), q)
    check_log_gate("gv", gv, (B, T, H, V), q)
    scale = check_scale(scale, K)
    reverse = check_flag("reverse", reverse)
    state_v_first = check_flag("state_v_first", state_v_first)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V, q, v_first=state_v_first)
    h0 = state_from_v_first(initial_state, state_v_first)
    if cu_seqlens is not None:
        o, ht = run_varlen(
            lambda q, k, v, gk, gv, **kw: _recurrent_fixed(q, k, v, gk, gv, scale, reverse=reverse, **kw),
            {"q": q, "k": k, "v": v, "gk": gk, "gv": gv},
            cu_seqlens,
            h0,
            output_final_state,
        )
    else:
        o, ht = _recurrent_fixed(q, k, v, gk, gv, scale, h0, output_final_state, reverse)
    return o, state_to_v_first(ht, state_v_first)
