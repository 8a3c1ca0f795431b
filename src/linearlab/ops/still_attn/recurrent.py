"""Decoding form of STILL: one token at a time on the fixed-size state."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from linearlab.ops.still_attn._common import (
    SCORE_DTYPE,
    Resolved,
    State,
    keep_top,
    pending_len,
    run_still,
    time_order,
    window_len,
)
from linearlab.ops.utils import state_dtype


def _right_used(used: torch.Tensor, slots: int) -> torch.Tensor:
    """``[B, slots]``: right-aligned slot ``s`` is used iff ``s >= slots - used``."""
    return torch.arange(slots, device=used.device)[None, :] >= (slots - used)[:, None]


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, h, idx[b, h, m]]`` for ``x: [B, H, Z, ...]`` and ``idx: [B, H, M]``."""
    return x.gather(2, idx.reshape(*idx.shape, *([1] * (x.dim() - 3))).expand(*idx.shape, *x.shape[3:]))


def _over(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``mask`` (``[B]`` or ``[B, H, Z]``) with singleton dims appended to broadcast against ``x``."""
    return mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))


def _recurrent_core(q, k, v, fq, fk, r: Resolved, state: State) -> tuple[torch.Tensor, State]:
    """All batch rows and heads at once; every row has its own position (and so its own boundaries)."""
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    dev = q.device
    w, P, R, M, b = r.window_size, r.P, r.R, r.budget, r.block_size
    S = state["linear"]  # [B, H, F, V + 1]
    win = {x: state[f"window_{x}"] for x in ("k", "v", "fk", "score")}  # [B, H, P, ...]
    pend = {x: state[f"pending_{x}"] for x in ("k", "v", "fk", "score")}  # [B, H, R, ...]
    sal = {x: state[f"salient_{x}"] for x in ("k", "v", "fk", "score", "pos")}  # [B, H, M, ...]
    pos = state["position"]  # [B]
    wf = r.window_factor[None, :, None]  # [1, H, 1]
    ones = torch.ones(B, H, 1, dtype=torch.bool, device=dev)
    outs = []
    for t in range(T):
        qt, kt, vt, fqt, fkt = (x[:, t].to(sd) for x in (q, k, v, fq, fk))  # [B, H, D]
        win_used = _right_used(window_len(pos, w), P)[:, None].expand(B, H, P)
        pend_used = _right_used(pending_len(pos, w, b), R)[:, None].expand(B, H, R)
        sal_used = sal["pos"] >= 0
        # the window after appending the current token: P + 1 slots
        cur = {"k": kt, "v": vt, "fk": fkt, "score": kt.new_zeros(B, H, dtype=SCORE_DTYPE)}
        wx = {x: torch.cat([win[x], cur[x][:, :, None]], dim=2) for x in cur}
        wx_used = torch.cat([win_used, ones], dim=-1)

        # softmax terms over salient + pending + window (+ the query itself), linear terms over S
        keys = torch.cat([sal["k"], pend["k"], wx["k"]], dim=2)
        vals = torch.cat([sal["v"], pend["v"], wx["v"]], dim=2)
        used = torch.cat([sal_used, pend_used, wx_used], dim=-1)
        s = r.scale * torch.einsum("bhk,bhpk->bhp", qt, keys)
        s = s.masked_fill(~used, float("-inf"))
        a = wf * torch.exp(s - s.amax(dim=-1, keepdim=True))
        lin = torch.einsum("bhf,bhfv->bhv", fqt, S)  # [B, H, V + 1]
        num = torch.einsum("bhp,bhpv->bhv", a, vals) + lin[..., : r.V]
        outs.append(num / (a.sum(-1, keepdim=True) + lin[..., r.V :]))

        # self-saliency: each window token gets its column of this query's window softmax
        with torch.no_grad():
            s64 = r.scale * torch.einsum("bhk,bhpk->bhp", qt.to(SCORE_DTYPE), wx["k"].to(SCORE_DTYPE))
            p64 = torch.softmax(s64.masked_fill(~wx_used, float("-inf")), dim=-1)
            wx["score"] = wx["score"] + p64.masked_fill(~wx_used, 0.0)

        # the oldest window slot (position pos - w + 1) leaves the window for the pending buffer
        win = {x: wx[x][:, :, 1:] for x in wx}
        px = {x: torch.cat([pend[x], wx[x][:, :, :1]], dim=2) for x in wx}  # [B, H, R + 1 = b, ...]
        px_used = torch.cat([pend_used, wx_used[..., :1]], dim=-1)
        px_pos = pos[:, None] - P - R + torch.arange(R + 1, device=dev)[None, :]  # [B, b]
        pos = pos + 1
        at_boundary = pos % b == 0  # [B]
        # between boundaries the pending buffer holds < b tokens: its oldest slot is empty
        pend = {x: px[x][:, :, 1:] for x in px}
        if not bool(at_boundary.any()):
            continue

        # block boundary: rank salient + pending, keep the best M, summarise the rest
        zx = {x: torch.cat([sal[x], px[x]], dim=2) for x in px}
        z_pos = torch.cat([sal["pos"], px_pos[:, None].expand(B, H, b)], dim=-1)
        z_used = torch.cat([sal_used, px_used], dim=-1)
        keep = keep_top(zx["score"], z_pos, z_used, M)
        drop = (z_used & ~keep).to(sd)
        v1 = torch.cat([zx["v"], torch.ones_like(zx["v"][..., :1])], dim=-1)
        S_new = S + torch.einsum("bhz,bhzf,bhzv->bhfv", drop, zx["fk"], v1)
        order = time_order(z_pos, keep, M)
        kept = keep.gather(-1, order)
        new_sal = {x: torch.where(_over(kept, zx[x]), _gather(zx[x], order), 0.0) for x in zx}
        new_sal["pos"] = torch.where(kept, z_pos.gather(-1, order), -1)
        # only the rows at a boundary take the new values
        S = torch.where(_over(at_boundary, S), S_new, S)
        sal = {x: torch.where(_over(at_boundary, y), new_sal[x], y) for x, y in sal.items()}
        pend = {x: torch.where(_over(at_boundary, y), 0.0, y) for x, y in pend.items()}

    o = torch.stack(outs, dim=1)
    final = {"linear": S}
    final.update({f"window_{x}": y for x, y in win.items()})
    final.update({f"pending_{x}": y for x, y in pend.items()})
    final.update({f"salient_{x}": y for x, y in sal.items()})
    final["position"] = pos
    return o, final


def fused_recurrent_still_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fq: torch.Tensor,
    fk: torch.Tensor,
    window_factor: torch.Tensor,
    window_size: int,
    budget: int,
    block_size: int,
    scale: float | None = None,
    initial_state: Mapping[str, torch.Tensor] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """STILL token by token (decoding); args and returns as in :func:`chunk_still_attn`.

    Each step attends with softmax terms to the salient slots, the pending buffer, the
    ``window_size - 1`` cached tokens and itself, and with linear terms to the state; the window
    tokens add this query's window softmax to their self-saliency; the oldest one moves to the
    pending buffer; at a block boundary salient + pending are ranked, the best ``budget`` stay and
    the rest enter the linear state. Memory is constant in the number of tokens.

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``fq, fk: [B, T, H, F]``, ``window_factor: [H]``;
    returns ``(o [B, T, H, V] in q's dtype, final state dict or None)``.

    Example (prefill with the chunk form, then decode one token at a time):
        >>> from linearlab.ops import chunk_still_attn
        >>> H, wf = 2, torch.full((2,), 0.5)
        >>> x, f = torch.randn(1, 30, H, 8), torch.rand(1, 30, H, 4)
        >>> o, s = chunk_still_attn(x, x, x, f, f, wf, 4, 6, 5, output_final_state=True)
        >>> x, f = torch.randn(1, 1, H, 8), torch.rand(1, 1, H, 4)
        >>> o, s = fused_recurrent_still_attn(x, x, x, f, f, wf, 4, 6, 5, initial_state=s, output_final_state=True)
        >>> s["salient_k"].shape, s["pending_k"].shape, s["position"].tolist()
        (torch.Size([1, 2, 6, 8]), torch.Size([1, 2, 4, 8]), [31])
    """
    return run_still(
        _recurrent_core,
        q,
        k,
        v,
        fq,
        fk,
        window_factor,
        window_size,
        budget,
        block_size,
        scale,
        initial_state,
        output_final_state,
        cu_seqlens,
    )
