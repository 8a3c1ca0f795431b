"""Token-by-token reference for STILL: explicit lists of window, pending and salient tokens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from linearlab.ops.still_attn._common import (
    SCORE_DTYPE,
    STATE_KEYS,
    Resolved,
    State,
    pending_len,
    run_still,
    window_len,
)
from linearlab.ops.utils import state_dtype


@dataclass
class _Token:
    k: torch.Tensor  # [K]
    v: torch.Tensor  # [V]
    fk: torch.Tensor  # [F]
    score: torch.Tensor  # float64 scalar, self-saliency accumulated so far
    pos: int  # stream position


def _summarise(S: torch.Tensor, tok: _Token) -> torch.Tensor:
    """``S + fk^T [v, 1]``: the token joins the linear state."""
    v1 = torch.cat([tok.v, tok.v.new_ones(1)])
    return S + tok.fk[:, None] * v1[None, :]


def _slots(ref: torch.Tensor, vals: list[torch.Tensor], right: bool) -> torch.Tensor:
    """``vals`` stacked into ``ref.shape[0]`` slots, zero-padded on the left (``right``) or the right."""
    pad = [ref.new_zeros(ref.shape[1:]) for _ in range(ref.shape[0] - len(vals))]
    vals = pad + vals if right else vals + pad
    return torch.stack(vals) if vals else ref


def _naive_core(q, k, v, fq, fk, r: Resolved, state: State) -> tuple[torch.Tensor, State]:
    """One (batch row, head) at a time, one token at a time."""
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    w, P, R, M, b = r.window_size, r.P, r.R, r.budget, r.block_size
    o = []
    finals: dict[str, list] = {key: [] for key in STATE_KEYS}
    for n in range(B):
        pos0 = int(state["position"][n])
        wl = int(window_len(state["position"][n], w))
        pl = int(pending_len(state["position"][n], w, b))
        o_n, final_n = [], {key: [] for key in STATE_KEYS if key != "position"}
        for h in range(H):
            S = state["linear"][n, h]  # [F, V + 1]
            wf = r.window_factor[h]

            def token(part: str, s: int, pos: int, n=n, h=h) -> _Token:
                return _Token(*(state[f"{part}_{x}"][n, h, s] for x in ("k", "v", "fk", "score")), pos)

            window = [token("window", s, pos0 - P + s) for s in range(P - wl, P)]
            pending = [token("pending", s, pos0 - P - R + s) for s in range(R - pl, R)]
            salient = [
                token("salient", s, int(state["salient_pos"][n, h, s]))
                for s in range(M)
                if state["salient_pos"][n, h, s] >= 0
            ]
            o_nh = []
            for t in range(T):
                p = pos0 + t
                qt, fqt = q[n, t, h].to(sd), fq[n, t, h].to(sd)
                window.append(
                    _Token(
                        k[n, t, h].to(sd),
                        v[n, t, h].to(sd),
                        fk[n, t, h].to(sd),
                        qt.new_zeros((), dtype=SCORE_DTYPE),
                        p,
                    )
                )
                # softmax terms over salient + pending + window, shifted by their max
                soft = salient + pending + window
                s = torch.stack([r.scale * (qt * tok.k).sum() for tok in soft])
                a = wf * torch.exp(s - s.max())
                num = sum(a[j] * tok.v for j, tok in enumerate(soft))
                # linear terms over everything summarised
                lin = fqt @ S  # [V + 1]
                o_nh.append((num + lin[: r.V]) / (a.sum() + lin[r.V]))
                # self-saliency: the window's softmax column each window token receives from query p
                with torch.no_grad():
                    q64 = qt.detach().to(SCORE_DTYPE)
                    s64 = torch.stack(
                        [r.scale * (q64 * tok.k.detach().to(SCORE_DTYPE)).sum() for tok in window]
                    )
                    p64 = torch.softmax(s64, dim=0)
                for j, tok in enumerate(window):
                    tok.score = tok.score + p64[j]
                if len(window) == w:  # the oldest token has its full score and leaves the window
                    pending.append(window.pop(0))
                if (p + 1) % b == 0:  # block boundary: decide every pending token
                    ranked = sorted(
                        salient + pending, key=lambda tok: (tok.score.item(), tok.pos), reverse=True
                    )
                    for tok in ranked[M:]:
                        S = _summarise(S, tok)
                    salient = sorted(ranked[:M], key=lambda tok: tok.pos)
                    pending = []
            o_n.append(torch.stack(o_nh))

            # final state: window and pending right-aligned, salient left-aligned
            assert len(window) <= P and len(pending) <= R and len(salient) <= M
            for part, toks, right in (
                ("window", window, True),
                ("pending", pending, True),
                ("salient", salient, False),
            ):
                for x in ("k", "v", "fk", "score"):
                    final_n[f"{part}_{x}"].append(
                        _slots(state[f"{part}_{x}"][n, h], [getattr(t, x) for t in toks], right)
                    )
            final_n["salient_pos"].append(
                torch.tensor([tok.pos for tok in salient] + [-1] * (M - len(salient)), dtype=torch.int64)
            )
            final_n["linear"].append(S)
        o.append(torch.stack(o_n, dim=1))  # [T, H, V]
        for key, vals in final_n.items():
            finals[key].append(torch.stack(vals))
        finals["position"].append(torch.tensor(pos0 + T, dtype=torch.int64))
    final = {key: torch.stack(vals).to(q.device) for key, vals in finals.items()}
    return torch.stack(o), final


def naive_still_attn(
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
    """STILL as a plain token loop (the ground truth).

    For every (sequence, head) it keeps Python lists of the window, pending and salient tokens and
    the linear state ``S = sum fk^T [v, 1]``. Each query attends with softmax terms to salient +
    pending + window and with linear terms to ``S``; then the window tokens add the query's window
    softmax to their self-saliency, the oldest leaves the window into the pending list, and at a
    block boundary salient + pending are ranked and all but the best ``budget`` are summarised.
    Arguments and returns as in :func:`chunk_still_attn`.
    """
    return run_still(
        _naive_core,
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
