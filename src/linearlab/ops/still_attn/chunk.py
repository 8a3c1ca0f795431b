"""Chunked STILL (training / prefill form): the selection is a schedule of exit times, the attention
is banded blocks plus the salient slots plus a linear chunk state.

Exit times. Nothing in the selection depends on the outputs, and every token, once it has left
the window, is decided once and then stays salient until one later boundary evicts it (a
summarised token never comes back). So token ``j`` has one *exit time* ``X_j``, the last query
that gives it a softmax term: query ``i`` gives ``j <= i`` a softmax term iff ``X_j >= i`` and a
linear term iff ``X_j < i``. The work splits in three passes:

1. self-saliency of every token (no gradient, float64): the sliding-window softmax of every query,
   summed down each key's column;
2. the exit times, one small step per chunk (no gradient): because the salient set after a
   boundary is the top-M of *everything* decided so far (``top(top(A) + C) = top(A + C)``), a token
   ``z`` decided at ``D_z`` leaves at ``X_z = max(D_z, the M-th smallest D among the tokens that
   outrank it)``, a ``kthvalue`` over the ``[Z, Z]`` rank matrix of the chunk's candidates
   (the salient set at the chunk start plus the tokens decided in it);
3. the outputs, with matmuls over all chunks at once (autograd).

Layout ("extended" positions ``e``, ``R = b - 1`` pending and ``P = w - 1`` window slots of the
incoming state in front, token ``t`` at ``e = R + P + t``, ``E0 = R + P``). For the chunk of queries
``t in [cC, cC + C)`` every token that is in a window or pending for one of them, or is decided
during the chunk, lies in the block ``e in [cC, cC + C + R + P)`` (``L = C + R + P`` slots). A query
then has softmax/linear terms with

- the block's tokens decided in or after the chunk (``D_e >= E0 + cC``), by ``X_e`` as above;
- the salient set at the chunk start (``M`` slots, gathered per chunk), by ``X`` as above;
- the tokens that exited before the chunk: ``S_c = S0 + sum fk^T [v, 1]`` over them, an exclusive
  cumulative sum of what exits in each chunk (which is always among the chunk's block and slots).

Cost ``O(T (C + w + b + M) D)`` plus ``O((T / C) (M + C + b)^2)`` for the selection;
``chunk_size`` is independent of ``window_size``, ``budget`` and ``block_size``, and does not
change the result (float rounding aside).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from linearlab.ops.still_attn._common import (
    NEVER,
    SCORE_DTYPE,
    Resolved,
    State,
    beats,
    pending_len,
    run_still,
    time_order,
    window_len,
)
from linearlab.ops.utils import check_chunk_size, state_dtype


def _slot_gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x: [B, H, Z, D]``, ``idx: [B, H, ...]`` -> ``[B, H, ..., D]`` (``x[b, h, idx[b, h, ...]]``)."""
    B, H = idx.shape[:2]
    flat = idx.reshape(B, H, idx[0, 0].numel(), 1).expand(B, H, -1, x.shape[-1])
    return x.gather(2, flat).reshape(*idx.shape, x.shape[-1])


def _chunk_core(
    q, k, v, fq, fk, r: Resolved, state: State, chunk_size: int, need_final: bool = True
) -> tuple[torch.Tensor, State | None]:
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    dev = q.device
    V, w, P, R, M, b = r.V, r.window_size, r.P, r.R, r.budget, r.block_size
    C = min(chunk_size, T)  # a chunk longer than the sequence is only padding
    n = -(-T // C)
    E0 = R + P
    E = E0 + n * C  # extended length (front slots, tokens, padding)
    L = C + R + P  # block of one chunk
    pos0 = state["position"]  # [B]

    def extended(part: str, x: torch.Tensor) -> torch.Tensor:
        """``[B, E, H, D]``: pending slots, window slots, the T tokens, zero padding."""
        front = torch.cat([state[f"pending_{part}"], state[f"window_{part}"]], dim=2).transpose(1, 2)
        pad = x.new_zeros(B, n * C - T, H, x.shape[-1], dtype=sd)
        return torch.cat([front, x.to(sd), pad], dim=1)

    kx, vx, fkx = extended("k", k), extended("v", v), extended("fk", fk)
    # [v, 1]: the ones column gives the denominators (1 on padding too: padded queries see padding)
    vx1 = torch.cat([vx, vx.new_ones(B, E, H, 1)], dim=-1)

    # per extended slot: stream position, used (padding counts as used: only padding sees it),
    # real token, and D = the query (extended index) whose block boundary decides it
    e = torch.arange(E, device=dev)
    spos = pos0[:, None] - E0 + e[None, :]  # [B, E]
    n_front = window_len(pos0, w) + pending_len(pos0, w, b)
    used = e[None, :] >= (E0 - n_front)[:, None]
    real = used & (e[None, :] < E0 + T)
    D = e[None, :] + (w - 1) + torch.remainder(-(spos + w), b)  # first boundary at or after leaving

    def blocks(x: torch.Tensor) -> torch.Tensor:  # [B, E, ...] -> [B, n, ..., L]
        return x.unfold(1, L, C)

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, n, C, H, D]
        x = x.to(sd)
        x = torch.cat([x, x.new_zeros(B, n * C - T, *x.shape[2:])], dim=1)
        return x.reshape(B, n, C, H, x.shape[-1])

    qc, fqc = chunks(q), chunks(fq)
    kb = blocks(kx)  # [B, n, H, K, L]
    row = torch.arange(C, device=dev)[:, None]
    col = torch.arange(L, device=dev)[None, :]
    qext = E0 + torch.arange(n, device=dev)[:, None] * C + row.T  # [n, C] extended query index
    qlo = (E0 + torch.arange(n, device=dev) * C)[:, None]  # [n, 1] first query of each chunk
    s = r.scale * torch.einsum("bnchk,bnhkl->bnhcl", qc, kb)  # [B, n, H, C, L]

    # ---- 1. self-saliency (float64, no gradient) -----------------------------------------------
    with torch.no_grad():
        if sd == SCORE_DTYPE:
            s64 = s.detach()
        else:
            q64 = torch.cat([q.detach(), q.new_zeros(B, n * C - T, H, q.shape[-1])], 1).to(SCORE_DTYPE)
            s64 = r.scale * torch.einsum(
                "bnchk,bnhkl->bnhcl", q64.reshape(B, n, C, H, -1), kb.detach().to(SCORE_DTYPE)
            )
        in_window = (col >= row + R) & (col <= row + R + P)  # [C, L]
        win = in_window & blocks(used)[:, :, None, :]  # [B, n, C, L] (the query itself is always used)
        p64 = torch.softmax(s64.masked_fill(~win[:, :, None], float("-inf")), dim=-1)
        p64 = p64 * (qext < E0 + T)[None, :, None, :, None]  # padded queries give no saliency
        colsum = p64.sum(dim=-2)  # [B, n, H, L]
        sal = torch.zeros(B, H, E, dtype=SCORE_DTYPE, device=dev)
        sal[:, :, :R] = state["pending_score"]
        sal[:, :, R:E0] = state["window_score"]
        where = (torch.arange(n, device=dev)[:, None] * C + col).flatten()  # [n L]
        sal.index_add_(2, where, colsum.permute(0, 2, 1, 3).reshape(B, H, n * L))

    # ---- 2. exit times (no gradient), one step per chunk ----------------------------------------
    # token ids: 0 .. M - 1 the incoming salient slots, M + e the extended slots, M + E a dummy
    DUMMY = M + E
    with torch.no_grad():
        all_score = torch.cat([state["salient_score"], sal, sal.new_zeros(B, H, 1)], dim=-1)
        all_pos = torch.cat(
            [state["salient_pos"], spos[:, None].expand(B, H, E), spos.new_full((B, H, 1), -1)], dim=-1
        )
        X = torch.full((B, H, M + E + 1), NEVER, dtype=torch.int64, device=dev)
        s_ok = state["salient_pos"] >= 0  # [B, H, M]
        s_id = torch.where(s_ok, torch.arange(M, device=dev), DUMMY)
        hist_id, hist_ok = [], []
        U = C + R  # candidates of a chunk: e in [cC, cC + C + R)
        for c in range(n):
            hist_id.append(s_id)
            hist_ok.append(s_ok)
            lo, hi = E0 + c * C, min(E0 + (c + 1) * C, E0 + T)
            Du = D[:, c * C : c * C + U]
            decided = real[:, c * C : c * C + U] & (Du >= lo) & (Du < hi)  # [B, U]
            if not bool(decided.any()):  # no boundary in this chunk
                continue
            z_id = torch.cat([s_id, (M + c * C + torch.arange(U, device=dev)).expand(B, H, U)], dim=-1)
            z_ok = torch.cat([s_ok, decided[:, None].expand(B, H, U)], dim=-1)  # [B, H, Z]
            z_D = torch.cat([torch.full_like(s_id, -1), Du[:, None].expand(B, H, U)], dim=-1)
            above = beats(all_score.gather(-1, z_id), all_pos.gather(-1, z_id), z_ok)  # [B, H, Z, Z]
            if M == 0:
                leaves, exit_at = z_ok, z_D
            else:
                leaves = z_ok & (above.sum(-1) >= M)
                kth = torch.where(above, z_D[..., None, :], NEVER).kthvalue(M, dim=-1).values
                exit_at = torch.maximum(z_D, kth)
            X.scatter_(-1, torch.where(leaves, z_id, DUMMY), exit_at)
            stays = z_ok & ~leaves  # at most M per (row, head): the new salient set, in time order
            order = time_order(all_pos.gather(-1, z_id), stays, M)
            s_ok = stays.gather(-1, order)
            s_id = torch.where(s_ok, z_id.gather(-1, order), DUMMY)
        X[..., DUMMY] = NEVER
        hid = torch.stack(hist_id, dim=2)  # [B, H, n, M]: salient set at each chunk start
        hok = torch.stack(hist_ok, dim=2)

    # ---- 3. outputs ------------------------------------------------------------------------------
    def all_tokens(part: str, x: torch.Tensor) -> torch.Tensor:  # [B, H, M + E + 1, D]
        st = state[f"salient_{part}"]
        return torch.cat([st, x.transpose(1, 2), st.new_zeros(B, H, 1, x.shape[-1])], dim=2)

    k_all, v1_all, fk_all = all_tokens("k", kx), None, all_tokens("fk", fkx)
    sv = state["salient_v"]
    v1_all = torch.cat([torch.cat([sv, sv.new_ones(B, H, M, 1)], -1), vx1.transpose(1, 2)], dim=2)
    v1_all = torch.cat([v1_all, v1_all.new_zeros(B, H, 1, V + 1)], dim=2)
    # the salient slots at each chunk start: [B, n, H, M, D]
    kS, fkS, v1S = (_slot_gather(x, hid).transpose(1, 2) for x in (k_all, fk_all, v1_all))
    XS = X.gather(-1, hid.flatten(2)).reshape(B, H, n, M).transpose(1, 2)  # [B, n, H, M]
    okS = hok.transpose(1, 2)
    Xb = X[..., M : M + E].unfold(-1, L, C).transpose(1, 2)  # [B, n, H, L]
    Db, usedb = blocks(D), blocks(used)  # [B, n, L]
    mine = usedb & (Db >= qlo)  # block tokens not decided before the chunk (the others are in S or linear)

    qx = qext[None, :, None, :, None]  # [1, n, 1, C, 1]
    soft_b = mine[:, :, None, None, :] & (col <= row + R + P) & (Xb[:, :, :, None, :] >= qx)
    lin_b = mine[:, :, None, None, :] & (Xb[:, :, :, None, :] < qx)
    soft_S = okS[:, :, :, None, :] & (XS[:, :, :, None, :] >= qx)
    lin_S = okS[:, :, :, None, :] & (XS[:, :, :, None, :] < qx)

    sS = r.scale * torch.einsum("bnchk,bnhmk->bnhcm", qc, kS)
    s_all = torch.cat([s, sS], dim=-1).masked_fill(~torch.cat([soft_b, soft_S], dim=-1), float("-inf"))
    a = r.window_factor[:, None, None] * torch.exp(s_all - s_all.amax(dim=-1, keepdim=True))
    fs = torch.cat(
        [torch.einsum("bnchf,bnhfl->bnhcl", fqc, blocks(fkx)), torch.einsum("bnchf,bnhmf->bnhcm", fqc, fkS)],
        dim=-1,
    )
    lin = fs * torch.cat([lin_b, lin_S], dim=-1)
    vals = torch.cat([blocks(vx1), v1S.transpose(-1, -2)], dim=-1)  # [B, n, H, V + 1, L + M]
    out = torch.einsum("bnhcl,bnhvl->bnchv", a + lin, vals)

    # what exits during each chunk enters the linear state of the later chunks
    exit_b = (mine[:, :, None] & (Xb >= qlo[None, :, :, None]) & (Xb < qlo[None, :, :, None] + C)).to(sd)
    exit_S = (okS & (XS >= qlo[None, :, :, None]) & (XS < qlo[None, :, :, None] + C)).to(sd)
    kv = torch.einsum("bnhfl,bnhvl->bnhfv", blocks(fkx) * exit_b[:, :, :, None], blocks(vx1))
    kv = kv + torch.einsum("bnhmf,bnhmv->bnhfv", fkS * exit_S[..., None], v1S)
    S0 = state["linear"][:, None]
    Sc = torch.cat([torch.zeros_like(kv[:, :1]), kv[:, :-1].cumsum(dim=1)], dim=1) + S0
    out = out + torch.einsum("bnchf,bnhfv->bnchv", fqc, Sc)

    o = out[..., :V] / out[..., V:]
    o = o.reshape(B, n * C, H, V)[:, :T]
    if not need_final:
        return o, None

    # ---- final state ---------------------------------------------------------------------------
    final = {"linear": state["linear"] + kv.sum(dim=1)}
    end = E0 + T
    for part, lo, slots, keep in (
        ("window", end - P, P, real[:, end - P : end]),
        ("pending", end - P - R, R, real[:, end - P - R : end - P] & (D[:, end - P - R : end - P] >= end)),
    ):
        keep_h = keep[:, None, :]  # [B, 1, slots]
        for name, x in (("k", kx), ("v", vx), ("fk", fkx)):
            final[f"{part}_{name}"] = torch.where(
                keep_h[..., None], x[:, lo : lo + slots].transpose(1, 2), 0.0
            )
        final[f"{part}_score"] = torch.where(keep_h, sal[:, :, lo : lo + slots], 0.0)
    final["salient_k"] = _slot_gather(k_all, s_id)
    final["salient_v"] = _slot_gather(v1_all, s_id)[..., :V]
    final["salient_fk"] = _slot_gather(fk_all, s_id)
    final["salient_score"] = torch.where(s_ok, all_score.gather(-1, s_id), 0.0)
    final["salient_pos"] = torch.where(s_ok, all_pos.gather(-1, s_id), -1)
    final["position"] = pos0 + T
    return o, final


def chunk_still_attn(
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
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """STILL intra-layer hybrid attention: softmax over the window, the pending and the salient
    tokens, linear attention over every other older token, one shared normaliser.

    With ``s_ij = scale q_i . k_j`` and, for query ``i``, the softmax set ``A_i`` (window
    ``{j : i - w < j <= i}`` + salient + pending tokens) and the linear set ``L_i`` (every other
    ``j < i``), ``c_i = max_{j in A_i} s_ij``::

        o_i = (sum_{A_i} wf exp(s_ij - c_i) v_j + sum_{L_i} (fq_i . fk_j) v_j)
              / (sum_{A_i} wf exp(s_ij - c_i)   + sum_{L_i}  fq_i . fk_j)

    Token ``j``'s self-saliency is the window-softmax mass the ``w`` queries that see it in their
    window give it. When it leaves the window it waits in the pending buffer; at every block
    boundary (after a position ``p`` with ``(p + 1) % block_size == 0``) pending + salient are
    ranked by self-saliency (ties: the later position wins), the best ``budget`` stay salient and the
    others are summarised into the linear state for good. See the family README.md.

    Args:
        q, k: ``[B, T, H, K]`` (softmax part, rotated); v: ``[B, T, H, V]``.
        fq, fk: ``[B, T, H, F]``, the feature-mapped q and k (linear part).
        window_factor: ``[H]``, values in ``(0, 1]``, the weight of every softmax term.
        window_size: ``w >= 1``, the query plus the ``w - 1`` previous tokens.
        budget: ``M >= 0``, the most salient tokens kept per sequence and head.
        block_size: ``b >= 1``, tokens between two selection boundaries (counted over the stream).
        scale: default ``K ** -0.5``.
        initial_state: a state dict (None: empty)::

            {"linear": [N, H, F, V + 1],
             "window_k"/"window_v"/"window_fk": [N, H, w - 1, K/V/F], "window_score": [N, H, w - 1],
             "pending_k"/...: [N, H, b - 1, K/V/F], "pending_score": [N, H, b - 1],
             "salient_k"/...: [N, H, M, K/V/F], "salient_score": [N, H, M], "salient_pos": [N, H, M],
             "position": [N]}

            see ``still_attn._common`` for alignment and dtypes.
        output_final_state: return the final state (same layout).
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1).
        chunk_size: queries per chunk (any positive int; does not change the result).

    Returns:
        ``(o [B, T, H, V] in q's dtype, final state dict or None)``.

    Example:
        >>> B, T, H, K, F = 1, 40, 2, 8, 16
        >>> q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, K)
        >>> fq, fk = torch.rand(B, T, H, F), torch.rand(B, T, H, F)  # feature-mapped q, k
        >>> wf = torch.full((H,), 0.5)
        >>> o, state = chunk_still_attn(q, k, v, fq, fk, wf, 8, 4, 4, output_final_state=True)
        >>> o.shape, state["salient_pos"].shape, state["linear"].shape
        (torch.Size([1, 40, 2, 8]), torch.Size([1, 2, 4]), torch.Size([1, 2, 16, 9]))
    """
    chunk_size = check_chunk_size(chunk_size)
    return run_still(
        _chunk_core,
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
        chunk_size=chunk_size,
        need_final=output_final_state,
    )
