"""Decoding form of LoLCATs hybrid attention: one token at a time on the fixed-size state."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from linearlab.ops.lolcats_attn._common import Resolved, State, empty_state, run_lolcats
from linearlab.ops.utils import state_dtype


def _outer1(fk: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``fk^T [v, 1]`` per (batch, head): ``[B, H, F], [B, H, V] -> [B, H, F, V + 1]``."""
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
    return fk[..., :, None] * v1[..., None, :]


def _recurrent_core(q, k, v, fq, fk, r: Resolved, state: State | None) -> tuple[torch.Tensor, State]:
    """All batch rows at once; the window tensors shift left by one slot per token."""
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    P = r.window_size - 1
    if state is None:
        state = empty_state(B, H, r.K, r.V, r.F, r.window_size, sd, q.device)
    S = state["linear"]  # [B, H, F, V + 1]
    wk, wv, wfk = state["window_k"], state["window_v"], state["window_fk"]  # [B, H, P, D]
    wl = state["window_len"]
    # slot s is valid iff s >= P - window_len; the new token (slot P) always is
    valid = torch.arange(P + 1, device=q.device)[None, :] >= (P - wl)[:, None]  # [B, P + 1]
    wf = r.window_factor[None, :, None]  # [1, H, 1]
    lf = r.linear_factor[None, :, None]
    outs = []
    for t in range(T):
        qt, kt, vt, fqt, fkt = (x[:, t].to(sd) for x in (q, k, v, fq, fk))  # [B, H, D]
        keys = torch.cat([wk, kt[:, :, None]], dim=2)  # [B, H, P + 1, K]
        vals = torch.cat([wv, vt[:, :, None]], dim=2)
        s = r.scale * torch.einsum("bhk,bhpk->bhp", qt, keys)
        s = s.masked_fill(~valid[:, None, :], float("-inf"))
        a = wf * torch.exp(s - s.amax(dim=-1, keepdim=True))  # [B, H, P + 1]
        lin = lf * torch.einsum("bhf,bhfv->bhv", fqt, S)  # [B, H, V + 1]
        num = torch.einsum("bhp,bhpv->bhv", a, vals) + lin[..., : r.V]
        den = a.sum(-1, keepdim=True) + lin[..., r.V :]
        outs.append(num / den)
        # the oldest slot leaves the window (invalid slots are zeros and add nothing)
        if P > 0:
            S = S + _outer1(wfk[:, :, 0], wv[:, :, 0])
            wk, wv = keys[:, :, 1:], vals[:, :, 1:]
            wfk = torch.cat([wfk[:, :, 1:], fkt[:, :, None]], dim=2)
            valid = torch.cat([valid[:, 1:], valid[:, -1:]], dim=1)
        else:
            S = S + _outer1(fkt, vt)
    o = torch.stack(outs, dim=1)
    final = {
        "linear": S,
        "window_k": wk,
        "window_v": wv,
        "window_fk": wfk,
        "window_len": torch.clamp(wl + T, max=P),
    }
    return o, final


def fused_recurrent_lolcats_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fq: torch.Tensor,
    fk: torch.Tensor,
    window_factor: torch.Tensor,
    window_size: int,
    linear_factor: float | torch.Tensor = 1.0,
    scale: float | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """LoLCATs hybrid attention token by token (decoding); args and returns as in :func:`chunk_lolcats_attn`.

    Each step attends with the softmax-like terms to the cached ``window_size - 1`` tokens plus
    itself and with the linear terms to the state; then the oldest cached token moves into the
    linear state. Memory is constant in the number of tokens.

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``fq, fk: [B, T, H, F]``, ``window_factor: [H]``;
    returns ``(o [B, T, H, V] in q's dtype, final state dict or None)``.

    Example (prefill with the chunk form, then decode one token at a time):
        >>> from linearlab.ops import chunk_lolcats_attn
        >>> H, wf = 2, torch.full((2,), 0.1)
        >>> x, f = torch.randn(1, 10, H, 8), torch.rand(1, 10, H, 4)
        >>> o, s = chunk_lolcats_attn(x, x, x, f, f, wf, 4, output_final_state=True)
        >>> x, f = torch.randn(1, 1, H, 8), torch.rand(1, 1, H, 4)
        >>> o, s = fused_recurrent_lolcats_attn(x, x, x, f, f, wf, 4, initial_state=s, output_final_state=True)
        >>> s["window_k"].shape, s["window_len"].tolist()
        (torch.Size([1, 2, 3, 8]), [3])
    """
    return run_lolcats(
        _recurrent_core,
        q,
        k,
        v,
        fq,
        fk,
        window_factor,
        window_size,
        linear_factor,
        scale,
        initial_state,
        output_final_state,
        cu_seqlens,
    )
