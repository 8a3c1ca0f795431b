"""Chunked LoLCATs hybrid attention (training form): banded window blocks plus a linear chunk state.

Let ``P = window_size - 1``. The ``Pb <= P`` cached tokens of the state that can still matter are put
in front of the sequence ("extended" positions ``e``; token ``t`` sits at ``e = Pb + t``). Query
``t`` then sees

- window keys at ``e in [t, t + Pb]`` (itself and the ``Pb`` previous slots),
- linear keys at ``e < t`` (plus the incoming linear state ``S0``).

For a chunk of queries ``t in [cC, cC + C)`` both sets inside the extended sequence lie in one block
of ``L = C + Pb`` slots ``e in [cC, cC + L)``: with ``r`` the query's row and ``j`` the block
column, the window is the band ``r <= j <= r + Pb`` and the in-block linear keys are ``j < r``. The
blocks of all chunks are gathered at once with ``unfold`` (one ``[C, L]`` score matrix per chunk, so
``O(T (C + w) D)`` work and memory), and the linear keys before the block come from
``S_c = S0 + sum_{e < cC} fk_e^T [v_e, 1]``, an exclusive cumulative sum of per-chunk outer
products. Gradients come from autograd.

``Pb = min(P, max(window_len) + T - 1)``: a query never looks further back than the first
cached token or the start of the sequence, so a window longer than everything seen (``w > T``)
costs ``O(T (C + T))``, not ``O(T w)``. Invalid cache slots (``window_len < P``) are zeros (no
linear contribution) and masked out of the window.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from linearlab.ops.common import pad_time
from linearlab.ops.lolcats_attn._common import Resolved, State, empty_state, run_lolcats
from linearlab.ops.utils import check_chunk_size, state_dtype


def _chunk_core(
    q, k, v, fq, fk, r: Resolved, state: State | None, chunk_size: int, need_final: bool = True
) -> tuple[torch.Tensor, State | None]:
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    dev = q.device
    V, C, P = r.V, chunk_size, r.window_size - 1
    if state is None:
        state = empty_state(B, H, r.K, V, r.F, r.window_size, sd, dev)
    wl = state["window_len"]
    Pb = min(P, int(wl.max()) + T - 1)
    n = -(-T // C)
    L = C + Pb

    def extended(cache: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``[B, Pb + n C, H, D]``: the last Pb cache slots, the T tokens, zero padding."""
        front = cache[:, :, P - Pb :].transpose(1, 2)  # [B, Pb, H, D]
        return pad_time(torch.cat([front, x.to(sd)], dim=1), n * C + Pb)

    kx = extended(state["window_k"], k)
    vx = extended(state["window_v"], v)
    # [v, 1]: the ones column gives the denominators. It is 1 on every slot, padding included, so
    # padded queries (which only see padding) get a nonzero denominator and no 0/0 in the backward;
    # unused cache slots and padding have zero fk and are masked out of the window, so add nothing.
    vx = torch.cat([vx, vx.new_ones(*vx.shape[:-1], 1)], dim=-1)
    fkx = extended(state["window_fk"], fk)
    # a slot is valid unless it is an unused cache slot (padding at the end is seen by padding only)
    e = torch.arange(n * C + Pb, device=dev)
    valid = e[None, :] >= (Pb - wl)[:, None]  # [B, E]

    def blocks(x: torch.Tensor) -> torch.Tensor:  # [B, E, H, D] -> [B, n, H, D, L]
        return x.unfold(1, L, C)

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [B, T, H, D] -> [B, n, C, H, D]
        return pad_time(x.to(sd), C).reshape(B, n, C, H, x.shape[-1])

    qc, fqc = chunks(q), chunks(fq)
    row = torch.arange(C, device=dev)[:, None]
    col = torch.arange(L, device=dev)[None, :]
    band = (col >= row) & (col <= row + Pb)  # [C, L]
    win = band & valid.unfold(1, L, C)[:, :, None, :]  # [B, n, C, L]
    below = (col < row).to(sd)  # in-block linear keys

    # window terms: wf * exp(s - max over the window)
    s = r.scale * torch.einsum("bnchk,bnhkl->bnhcl", qc, blocks(kx))
    s = s.masked_fill(~win[:, :, None], float("-inf"))
    a = r.window_factor[:, None, None] * torch.exp(s - s.amax(dim=-1, keepdim=True))
    # in-block linear terms: lf * fq . fk for the keys just before the query (zeros where invalid)
    lin = r.linear_factor[:, None, None] * torch.einsum("bnchf,bnhfl->bnhcl", fqc, blocks(fkx)) * below
    out = torch.einsum("bnhcl,bnhvl->bnchv", a + lin, blocks(vx))  # [B, n, C, H, V + 1]

    # linear terms before the block: S_c = S0 + sum over earlier chunks of fk^T [v, 1]
    kv = torch.einsum("bnchf,bnchv->bnhfv", chunks(fkx[:, : n * C]), chunks(vx[:, : n * C]))
    Sc = torch.cat([torch.zeros_like(kv[:, :1]), kv[:, :-1].cumsum(dim=1)], dim=1) + state["linear"][:, None]
    out = out + r.linear_factor[:, None] * torch.einsum("bnchf,bnhfv->bnchv", fqc, Sc)

    o = out[..., :V] / out[..., V:]
    o = o.reshape(B, n * C, H, V)[:, :T]
    if not need_final:
        return o, None

    # final state: slots e < lo = Pb + T - P have left the window; slots lo .. hi - 1 are the new cache
    lo, hi = Pb + T - P, Pb + T
    S = state["linear"]
    if lo > 0:
        S = S + torch.einsum("bthf,bthv->bhfv", fkx[:, :lo], vx[:, :lo])

    def cache(x: torch.Tensor) -> torch.Tensor:  # [B, E, H, D] -> [B, H, P, D]
        x = x[:, max(lo, 0) : hi]
        if lo < 0:
            x = torch.cat([x.new_zeros(B, -lo, H, x.shape[-1]), x], dim=1)
        return x.transpose(1, 2)

    final = {
        "linear": S,
        "window_k": cache(kx),
        "window_v": cache(vx[..., :V]),
        "window_fk": cache(fkx),
        "window_len": torch.clamp(wl + T, max=P),
    }
    return o, final


def chunk_lolcats_attn(
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
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """LoLCATs hybrid attention: sliding-window softmax and linear attention sharing one normaliser.

    With ``W_i = {j : i - w < j <= i}``, ``L_i = {j : j <= i - w}``, ``s_ij = scale q_i . k_j`` and
    ``c_i = max_{j in W_i} s_ij``::

        a_ij = window_factor[h] * exp(s_ij - c_i)   (j in W_i)
        b_ij = linear_factor[h] * fq_i . fk_j       (j in L_i)
        o_i  = (sum_W a_ij v_j + sum_L b_ij v_j) / (sum_W a_ij + sum_L b_ij)

    (HazyResearch/lolcats ``hybrid_attention_quadratic``; ``c_i`` only shifts the window terms, so
    it is part of the result.) Tokens of ``initial_state`` count as earlier positions. Chunked form
    in ``O(T (chunk_size + w) D)``; ``chunk_size`` and ``window_size`` are independent.

    Args:
        q, k: ``[B, T, H, K]`` (softmax part); v: ``[B, T, H, V]``.
        fq, fk: ``[B, T, H, F]``, the feature-mapped q and k (non-negative features, e.g. Hedgehog).
        window_factor: ``[H]``, values in ``(0, 1]`` (apply the sigmoid before).
        window_size: ``w >= 1``, the query plus the ``w - 1`` previous tokens.
        linear_factor: float or ``[H]`` tensor, finite and ``>= 0``.
        scale: default ``K ** -0.5``.
        initial_state: a state dict (None: empty)::

            {"linear": [N, H, F, V + 1],   # sum fk^T v over tokens out of the window; z = last column
             "window_k": [N, H, w - 1, K], "window_v": [N, H, w - 1, V], "window_fk": [N, H, w - 1, F],
             "window_len": [N] int64}      # valid slots, right-aligned (slot w - 2 = newest token)

            floating entries float32 (float64 for float64 inputs); see ``lolcats_attn._common``.
        output_final_state: return the final state (same layout).
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1).
        chunk_size: queries per chunk (any positive int).

    Returns:
        ``(o [B, T, H, V] in q's dtype, final state dict or None)``.

    Example:
        >>> B, T, H, K, F = 1, 20, 2, 8, 16
        >>> q, k, v = torch.randn(B, T, H, K), torch.randn(B, T, H, K), torch.randn(B, T, H, K)
        >>> fq, fk = torch.rand(B, T, H, F), torch.rand(B, T, H, F)  # feature-mapped q, k
        >>> wf = torch.sigmoid(torch.full((H,), -2.197))  # LoLCATs' init, ~0.1
        >>> o, state = chunk_lolcats_attn(q, k, v, fq, fk, wf, window_size=8, output_final_state=True)
        >>> o.shape, state["linear"].shape, state["window_k"].shape
        (torch.Size([1, 20, 2, 8]), torch.Size([1, 2, 16, 9]), torch.Size([1, 2, 7, 8]))
    """
    chunk_size = check_chunk_size(chunk_size)
    return run_lolcats(
        _chunk_core,
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
        chunk_size=chunk_size,
        need_final=output_final_state,
    )
