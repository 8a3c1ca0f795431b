"""State-passing (recurrent) form of scalar-decay linear attention, for decoding.

One step costs ``O(H K V)`` whatever the context length: the whole past lives in the state.
"""

from __future__ import annotations

import torch

from linearlab.ops.simple_gla._common import retention_decay, total_gate, validate
from linearlab.ops.utils import (
    check_flag,
    check_qkv,
    run_varlen,
    state_dtype,
    state_from_v_first,
    state_to_v_first,
)


def recurrent_scalar_decay_fixed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Step loop on one fixed-length batch; ``o`` is returned in the state dtype.

    ``reverse`` runs the steps from ``t = T - 1`` down to 0 (``S_t`` then holds tokens ``t..T-1``).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    sd = state_dtype(q)
    # [B*H] batches of tiny matmuls: one bmm for the read-out, one baddbmm for the update.
    # unbind (not indexing per step): its backward is one stack, an index's is a full-size zero grad
    qf = (q.to(sd) * scale).transpose(1, 2).reshape(B * H, T, 1, K).unbind(1)
    kf = k.to(sd).transpose(1, 2).reshape(B * H, T, K, 1).unbind(1)
    vf = v.to(sd).transpose(1, 2).reshape(B * H, T, 1, V).unbind(1)
    a = None if g is None else torch.exp(g).transpose(1, 2).reshape(B * H, T, 1, 1).unbind(1)
    if initial_state is None:
        S = q.new_zeros(B * H, K, V, dtype=sd)
    else:
        S = initial_state.to(sd).reshape(B * H, K, V)
    outs: list[torch.Tensor] = [None] * T  # type: ignore[list-item]
    for t in range(T - 1, -1, -1) if reverse else range(T):
        S = torch.baddbmm(S if a is None else S * a[t], kf[t], vf[t])
        outs[t] = torch.bmm(qf[t], S)
    o = torch.cat(outs, dim=1).reshape(B, H, T, V).transpose(1, 2)
    return o, (S.reshape(B, H, K, V) if output_final_state else None)


def recurrent_scalar_decay(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    reverse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated-input entry shared by the scalar-decay families (``o`` in the state dtype).

    With ``cu_seqlens`` and ``reverse`` each packed sequence runs backwards on its own, from its
    own initial state (as fla's kernels do).
    """
    if cu_seqlens is None:
        return recurrent_scalar_decay_fixed(q, k, v, g, scale, initial_state, output_final_state, reverse)
    return run_varlen(
        lambda q, k, v, g, initial_state, output_final_state: recurrent_scalar_decay_fixed(
            q, k, v, g, scale, initial_state, True, reverse
        ),
        {"q": q, "k": k, "v": v, "g": g},
        cu_seqlens,
        initial_state,
        output_final_state,
    )


def fused_recurrent_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA, one state update per token (decoding form; any T works).

    Args and returns as in :func:`linearlab.ops.simple_gla.chunk_simple_gla` (no ``chunk_size``):
    q, k ``[B, T, H, K]``, v ``[B, T, H, V]``, g ``[B, T, H]``, g_gamma ``[H]``,
    initial_state ``[N, H, K, V]`` (``[N, H, V, K]`` with ``state_v_first``) ->
    ``(o [B, T, H, V], final_state or None)``. Positional order is fla 0.6's.

    ``reverse=True`` runs from the last token to the first: ``S_t = exp(g_t) S_{t+1} + k_t^T v_t``
    (each packed sequence on its own), so ``o_t`` reads tokens ``t..T-1`` and the final state is
    the one after token 0.

    Example (one decoding step with a carried state):
        >>> q = k = v = torch.randn(2, 1, 4, 16)
        >>> o, state = fused_recurrent_simple_gla(q, k, v, output_final_state=True)
        >>> o, state = fused_recurrent_simple_gla(q, k, v, initial_state=state, output_final_state=True)
    """
    scale = validate(q, k, v, g, g_gamma, scale, initial_state, cu_seqlens, state_v_first=state_v_first)
    reverse = check_flag("reverse", reverse)
    gate = total_gate(g, g_gamma, q)
    h0 = state_from_v_first(initial_state, state_v_first)
    o, ht = recurrent_scalar_decay(q, k, v, gate, scale, h0, output_final_state, cu_seqlens, reverse)
    return o.to(q.dtype), state_to_v_first(ht, state_v_first)


def fused_recurrent_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RetNet retention in recurrent form (``g_gamma[h] = log(1 - 2**(-5 - h))``); see ``chunk_retention``.

    ``reverse`` and ``state_v_first`` as in :func:`fused_recurrent_simple_gla`; positional order is
    fla 0.6's.
    """
    H = check_qkv(q, k, v)[2]
    gamma = retention_decay(H, dtype=state_dtype(q), device=q.device)
    return fused_recurrent_simple_gla(
        q,
        k,
        v,
        g_gamma=gamma,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        reverse=reverse,
        state_v_first=state_v_first,
        cu_seqlens=cu_seqlens,
    )
