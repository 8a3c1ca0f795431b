"""Token-by-token reference for LoLCATs hybrid attention: an explicit window list and linear state."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from linearlab.ops.lolcats_attn._common import Resolved, State, empty_state, run_lolcats
from linearlab.ops.utils import state_dtype


def _naive_core(q, k, v, fq, fk, r: Resolved, state: State | None) -> tuple[torch.Tensor, State]:
    """One batch row at a time, one token at a time; the window is a Python list of tokens."""
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    P = r.window_size - 1
    if state is None:
        state = empty_state(B, H, r.K, r.V, r.F, r.window_size, sd, q.device)
    wf, lf = r.window_factor, r.linear_factor
    outs, finals = [], []
    for b in range(B):
        S = state["linear"][b]  # [H, F, V + 1]
        n_cached = int(state["window_len"][b])
        # (k, v, fk) per cached token, oldest first; each is [H, D]
        window = [
            (state["window_k"][b, :, s], state["window_v"][b, :, s], state["window_fk"][b, :, s])
            for s in range(P - n_cached, P)
        ]
        o_b = []
        for t in range(T):
            qt, kt, vt, fqt, fkt = (x[b, t].to(sd) for x in (q, k, v, fq, fk))
            window.append((kt, vt, fkt))
            if len(window) > r.window_size:  # the oldest token leaves the window for the linear state
                k_old, v_old, fk_old = window.pop(0)
                v1 = torch.cat([v_old, v_old.new_ones(H, 1)], dim=-1)
                S = S + fk_old[:, :, None] * v1[:, None, :]
            # softmax part: a_j = wf * exp(s_j - max_j s_j) over the window
            s = torch.stack([r.scale * (qt * kj).sum(-1) for kj, _, _ in window])  # [n, H]
            c = s.amax(dim=0)
            a = wf * torch.exp(s - c)  # [n, H]
            num = sum(a[j][:, None] * vj for j, (_, vj, _) in enumerate(window))
            den = a.sum(0)
            # linear part over the tokens that left the window
            lin = lf[:, None] * torch.einsum("hf,hfv->hv", fqt, S)  # [H, V + 1]
            o_b.append((num + lin[:, : r.V]) / (den + lin[:, r.V])[:, None])
        outs.append(torch.stack(o_b))
        if len(window) > P:  # the final state caches the last P tokens only
            k_old, v_old, fk_old = window.pop(0)
            v1 = torch.cat([v_old, v_old.new_ones(H, 1)], dim=-1)
            S = S + fk_old[:, :, None] * v1[:, None, :]
        final = {"linear": S, "window_len": torch.tensor(len(window), device=q.device)}
        for i, key in enumerate(("window_k", "window_v", "window_fk")):
            D = state[key].shape[-1]
            pad = [S.new_zeros(H, D)] * (P - len(window))
            final[key] = torch.stack(pad + [tok[i] for tok in window], dim=1) if P > 0 else state[key][b]
        finals.append(final)
    o = torch.stack(outs)
    return o, {key: torch.stack([f[key] for f in finals]) for key in finals[0]}


def naive_lolcats_attn(
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
    """LoLCATs hybrid attention as a plain token loop (the ground truth).

    Keeps the last ``window_size`` tokens in a list and the older ones in the linear state
    ``S = sum fk^T [v, 1]``; each query computes its softmax-like window terms and linear terms and
    divides by their shared sum. Arguments and returns as in :func:`chunk_lolcats_attn`:

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``, ``fq, fk: [B, T, H, F]``, ``window_factor: [H]``;
    returns ``(o [B, T, H, V] in q's dtype, final state dict or None)``.
    """
    return run_lolcats(
        _naive_core,
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
