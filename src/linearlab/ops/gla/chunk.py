"""Chunked Gated Linear Attention (the training path): matmuls inside chunks, a short scan across.

The sequence is cut into chunks of ``C`` tokens. Across chunks a state ``[K, V]`` is passed (one
``addcmul`` per chunk); inside a chunk the per-key decay makes the score
``A_ij = sum_k q_ik k_jk exp(l_ik - l_jk)`` (``l``: chunk-local cumsum of ``g``) not a plain
matmul; ``_intra.py`` computes it with GLA's secondary chunking (see README.md).

A custom ``autograd.Function`` with a hand-written backward keeps memory at "inputs + one state
per chunk": intra-chunk tensors are rebuilt segment by segment in the backward pass.
"""

from __future__ import annotations

import torch

from linearlab.ops.common import causal_mask, chunks_per_segment, from_chunks, segments, to_chunks
from linearlab.ops.gla._intra import SUB, Gates, Intra, chunk_cumsum
from linearlab.ops.utils import (
    check_cu_seqlens,
    check_cu_seqlens_cpu,
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

#: Chunks are processed in segments of about this many elements per [B, t, H, D] tensor (2048
#: tokens at B=1, H=4, D=64): bounds the temporaries (the intra-chunk forms hold a few times the
#: segment's inputs) whatever T and the batch size are.
SEGMENT_ELEMENTS = 2**19


def _to_chunks(x: torch.Tensor, t0: int, t1: int, C: int, dt: torch.dtype) -> torch.Tensor:
    """``x[:, t0:t1]: [B, t, H, D]`` -> ``[B, H, n, C, D]`` in dtype ``dt`` (zero-padded in time).

    Chunks sit next to their tokens (dim -3), where :mod:`._intra` expects them; dense, so the
    batched matmuls run without hidden copies.
    """
    return to_chunks(x, C, t0, t1, dt).movedim(0, 2).contiguous()


def _from_chunks(y: torch.Tensor, t: int) -> torch.Tensor:
    """``[B, H, n, C, D]`` -> ``[B, t, H, D]`` (drops the padding)."""
    return from_chunks(y.movedim(2, 0), t)


def _fwd_segment(q, k, v, g, S, scale: float, sub: int):
    """One segment of chunks (``[B, H, n, C, D]``); returns ``(o, S_after, S_before_each_chunk)``."""
    gates = Gates(g, sub)
    U = (k * gates.ek).transpose(-1, -2) @ v  # [.., n, K, V]: keys decayed to the chunk end
    decay = gates.decay.transpose(-1, -2)  # [.., n, K, 1]
    states = []
    for c in range(g.shape[2]):
        states.append(S)
        S = torch.addcmul(U[:, :, c], decay[:, :, c], S)
    S_prev = torch.stack(states, dim=2)
    qs = q * scale
    o = (qs * gates.eq) @ S_prev
    o.add_(Intra(qs, k, gates, qs.dtype).scores() @ v)
    return o, S, S_prev


def _bwd_segment(q, k, v, g, S_prev, do, dS, scale: float, sub: int):
    """Backward of one segment; ``dS`` is the gradient of the state after it. Returns
    ``(dq, dk, dv, dg, dS_before)``."""
    dt = q.dtype
    gates = Gates(g, sub)
    qs = q * scale
    kd = k * gates.ek
    decay = gates.decay.transpose(-1, -2)  # [.., n, K, 1]
    W = (qs * gates.eq).transpose(-1, -2) @ do  # gradient reaching each chunk's incoming state
    grads = []
    for c in range(g.shape[2] - 1, -1, -1):
        grads.append(dS)  # gradient of the state after chunk c
        dS = torch.addcmul(W[:, :, c], decay[:, :, c], dS)
    dS_next = torch.stack(grads[::-1], dim=2)  # [.., n, K, V]
    # Under strong decay the intra part of dg is a telescoping sum whose terms can be e^10 times
    # larger than the result; float32 round-off would dominate, so the (already slow, rarely
    # used) exact form runs its backward in float64.
    wide = torch.float64 if gates.mode == "exact" else dt
    intra = Intra(qs, k, gates, wide)
    A = intra.scores().to(dt)
    C = A.shape[-1]
    dA = do @ v.transpose(-1, -2)
    dA_diag = dA.diagonal(dim1=-2, dim2=-1)[..., None].clone()  # [.., n, C, 1]
    # Diagonal pairs (i == j) have decay exp(0) = 1 whatever g is: they are kept out of the gate
    # gradient (added to dq, dk at the end), as O(1) terms that would cancel only up to round-off.
    strict = causal_mask(C, A.device, diagonal=-1)
    dA.masked_fill_(~strict, 0.0)
    dv = A.transpose(-1, -2) @ do + kd @ dS_next
    dk_state = (v @ dS_next.transpose(-1, -2)) * gates.ek
    dqs_intra, dk_intra = intra.backward(dA.to(wide))
    dqs_inter = (do @ S_prev.transpose(-1, -2)) * gates.eq
    # Gate gradient, summing for each g_t exactly the terms whose decay contains step t (so no
    # O(1) terms cancel): the query factors exp(l_i), i >= t (reverse cumsum); the key factors
    # exp(l_last - l_j), j < t (exclusive cumsum); the chunk decay exp(l_last) (every t); and the
    # intra pairs (i, j), which give +x*dx at i and -x*dx at j (strictly causal pairs only).
    from_queries = qs.to(wide) * dqs_intra - k.to(wide) * dk_intra + (qs * dqs_inter).to(wide)
    dg = chunk_cumsum(from_queries, reverse=True).to(dt)
    dg += chunk_cumsum(k * dk_state, exclusive=True)
    dg += (S_prev * dS_next).sum(-1).unsqueeze(-2) * gates.decay
    dq = (dqs_inter + dqs_intra.to(dt) + dA_diag * k) * scale
    dk = dk_state + dk_intra.to(dt) + dA_diag * qs
    return dq, dk, dv, dg, dS


class _ChunkGLAFunction(torch.autograd.Function):
    """``(q, k, v, g, h0) -> (o, final_state)`` for fixed-length sequences.

    Saves the inputs and the state entering every chunk (``[B, H, T / C, K, V]``); everything else
    is recomputed per segment in ``backward``.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale: float, C: int):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dt = state_dtype(q)
        sub = min(SUB, C)
        per = chunks_per_segment(C, SEGMENT_ELEMENTS, B * H * max(K, V))
        S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
        o = q.new_empty(B, T, H, V)
        saved = []
        for n0, n1 in segments(-(-T // C), per):
            t0, t1 = n0 * C, min(T, n1 * C)
            parts = [_to_chunks(x, t0, t1, C, dt) for x in (q, k, v, g)]
            oc, S, S_prev = _fwd_segment(*parts, S, scale, sub)
            o[:, t0:t1] = _from_chunks(oc, t1 - t0)
            saved.append(S_prev)
        ctx.save_for_backward(q, k, v, g, h0, torch.cat(saved, dim=2))
        ctx.scale, ctx.C, ctx.sub, ctx.per = scale, C, sub, per
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dht):
        q, k, v, g, h0, S_all = ctx.saved_tensors
        C, sub, per, scale = ctx.C, ctx.sub, ctx.per, ctx.scale
        T = q.shape[1]
        dt = S_all.dtype
        dS = dht.to(dt)
        dq, dk, dv, dg = (torch.empty_like(x) for x in (q, k, v, g))
        for n0, n1 in reversed(segments(-(-T // C), per)):
            t0, t1 = n0 * C, min(T, n1 * C)
            parts = [_to_chunks(x, t0, t1, C, dt) for x in (q, k, v, g)]
            S_prev = S_all[:, :, n0:n1]
            doc = _to_chunks(do, t0, t1, C, dt)
            *grads, dS = _bwd_segment(*parts, S_prev, doc, dS, scale, sub)
            for out, gr in zip((dq, dk, dv, dg), grads):
                out[:, t0:t1] = _from_chunks(gr, t1 - t0)
        dh0 = None if h0 is None else dS.to(h0.dtype)
        return dq, dk, dv, dg, dh0, None, None


def _chunk_fixed(q, k, v, g, scale, initial_state, output_final_state, chunk_size):
    o, ht = _ChunkGLAFunction.apply(q, k, v, g, initial_state, scale, chunk_size)
    return o, (ht if output_final_state else None)


def chunk_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    cu_seqlens_cpu: torch.LongTensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated Linear Attention with per-key gates, chunked (fast; the training path).

    ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t`` and ``o_t = (scale q_t) S_t``. Positional order
    is fla 0.6's ``chunk_gla``; ``chunk_size`` is a keyword-only extra.

    Args:
        q, k: ``[B, T, H, K]`` queries and keys.
        v: ``[B, T, H, V]`` values.
        g: ``[B, T, H, K]`` per-key log-space decay (``<= 0``), e.g. ``logsigmoid(x) / 16``.
        scale: multiplies ``q``; default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``);
            ``[N, H, V, K]`` with ``state_v_first``.
        output_final_state: also return the state after the last token.
        state_v_first: states in fla's value-first layout ``[N, H, V, K]`` (the transpose of
            ``[N, H, K, V]``), on input and output.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (needs ``B == 1``).
        cu_seqlens_cpu: fla's precomputed host copy of ``cu_seqlens``; not needed here, accepted
            when it holds the same boundaries.
        chunk_size: tokens per chunk; at most 16 or a multiple of 16 (default 64). The result
            does not depend on it beyond round-off.

    Returns:
        ``o: [B, T, H, V]`` in the input dtype, and ``final_state: [N, H, K, V]`` (``[N, H, V, K]``
        with ``state_v_first``; float32, or float64 for float64 inputs) or None.

    Example:
        >>> q = k = torch.randn(1, 100, 2, 16); v = torch.randn(1, 100, 2, 8)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 100, 2, 16)) / 16
        >>> o, ht = chunk_gla(q, k, v, g, output_final_state=True)
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_log_gate("g", g, (B, T, H, K), q)
    scale = check_scale(scale, K)
    state_v_first = check_flag("state_v_first", state_v_first)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_cu_seqlens_cpu(cu_seqlens_cpu, cu_seqlens)
    check_initial_state(initial_state, N, H, K, V, q, v_first=state_v_first)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if chunk_size > SUB and chunk_size % SUB:
        raise ValueError(f"chunk_size: must be <= {SUB} or a multiple of {SUB}, got {chunk_size}")
    h0 = state_from_v_first(initial_state, state_v_first)
    if cu_seqlens is not None:
        o, ht = run_varlen(
            lambda q, k, v, g, **kw: _chunk_fixed(q, k, v, g, scale, chunk_size=chunk_size, **kw),
            {"q": q, "k": k, "v": v, "g": g},
            cu_seqlens,
            h0,
            output_final_state,
        )
    else:
        o, ht = _chunk_fixed(q, k, v, g, scale, h0, output_final_state, chunk_size)
    return o, state_to_v_first(ht, state_v_first)
