"""Chunked (matmul-based) scalar-decay linear attention: the training path.

The sequence is cut into chunks of ``C`` tokens. Everything inside a chunk is one batched matmul over
all chunks at once; only a ``[H, K, V]`` state update per chunk is sequential. Forward and backward
are written by hand (``_ChunkScalarDecay``) so autograd never records the per-chunk scan.
See ``README.md`` in this folder for the equations.

Numerics: every exponent used here is ``<= 0``. ``b`` is the cumulative log decay *local to its
chunk*, so ``exp(b_i)``, ``exp(b_C - b_j)`` and ``exp(b_i - b_j)`` (j <= i, masked to -inf above the
diagonal before the exp) are all in ``[0, 1]``; strong gates underflow to 0 instead of overflowing.
Decay factors below ``exp(LOG_TINY)`` are set to exactly 0 (see ``_decay``): CPUs compute on
subnormal floats tens of times slower, and strong fixed decays (Lightning's -6 per step) would
otherwise fill whole chunks with them.
"""

from __future__ import annotations

import torch

from linearlab.ops.simple_gla._common import (
    check_chunk_size,
    retention_decay,
    run_packed,
    total_gate,
    validate,
)
from linearlab.ops.utils import check_qkv, pad_time, state_dtype

#: log-decays below this are treated as -inf (factor exactly 0). exp(-60) ~ 1e-26 in float32 and
#: exp(-600) ~ 1e-261 in float64 stay far above the subnormal range even after one more product,
#: and a dropped term is < 1e-26 of the diagonal term (factor 1) of its row: below rounding.
LOG_TINY = {torch.float32: -60.0, torch.float64: -600.0}


def _decay(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` in place for log-decays ``x <= 0``, flushing tiny factors to exactly 0."""
    return x.masked_fill_(x < LOG_TINY[x.dtype], float("-inf")).exp_()


def _state_scan(a: torch.Tensor | None, U: torch.Tensor, S: torch.Tensor) -> None:
    """Fill ``S[1:]`` in place: ``S[c+1] = a_c S[c] + U_c`` (``a: [n, B, H]``, None: no decay).

    ``S: [n + 1, B, H, K, V]`` with ``S[0]`` already set. The chunk dim comes first, so each
    ``S[c]`` is contiguous and every step writes in place; ``n`` is at most the chunks of one
    segment, and on CPU this loop beats a cumsum along the outer dim (no decay) by a wide margin.
    """
    a5 = None if a is None else a[..., None, None]
    for c in range(U.shape[0]):
        if a5 is None:
            torch.add(U[c], S[c], out=S[c + 1])
        else:
            torch.addcmul(U[c], S[c], a5[c], out=S[c + 1])


def _grad_scan(a: torch.Tensor | None, R: torch.Tensor, G: torch.Tensor) -> None:
    """Fill ``G[:-1]`` in place, backwards: ``G[c] = R_c + a_c G[c+1]`` (``G[-1]`` already set).

    ``G[c]`` is dL/dS^(c), the gradient of the state entering chunk c; ``R_c`` is the gradient
    from chunk c's reads of it.
    """
    a5 = None if a is None else a[..., None, None]
    for c in range(R.shape[0] - 1, -1, -1):
        if a5 is None:
            torch.add(R[c], G[c + 1], out=G[c])
        else:
            torch.addcmul(R[c], G[c + 1], a5[c], out=G[c])


def _gate_grad(W: torch.Tensor, r: torch.Tensor, dlog: torch.Tensor, dend: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the per-token gate ``g_t`` of a chunk, ``[n, B, H, C]``.

    With ``b = cumsum(g)`` inside the chunk, each decay factor depends on a *sum of gates over a
    range*, so ``dg_t`` collects exactly the terms whose range contains t:
      - intra ``exp(b_i - b_j)`` (j < i, range j+1..i): ``sum_{i >= t > j} W_ij``, W = dA * A;
      - inter read ``exp(b_i)`` (range 0..i): ``sum_{i >= t} r_i``;
      - state write ``exp(b_C - b_j)`` (range j+1..C-1): ``sum_{j < t} dlog_j``;
      - chunk decay ``exp(b_C)`` (whole chunk): ``dend``.
    Summing only the terms that contain t (instead of differentiating b and then cumsum-ing) avoids
    adding and subtracting O(1) values whose difference is tiny under strong gates.
    """
    # P[i, t] = sum_{j < t} W_ij as one matmul with a strictly-upper ones matrix (faster than a
    # cumsum along the last dim on CPU), then keep rows i >= t and sum over i
    C = W.shape[-1]
    upper = torch.ones(C, C, dtype=W.dtype, device=W.device).triu_(1)
    P = W @ upper
    keep = torch.ones(C, C, dtype=torch.bool, device=W.device).tril_()
    dg = P.masked_fill_(~keep, 0.0).sum(-2)
    dg += r.flip(-1).cumsum(-1).flip(-1)
    dg[..., 1:] += dlog[..., :-1].cumsum(-1)
    dg += dend[..., None]
    return dg


def _mm(
    a: torch.Tensor,
    b: torch.Tensor,
    alpha: float = 1.0,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """``alpha * a @ b`` over the leading (batch) dims, written to (or added into) ``out``.

    One BLAS call: the scale, the destination and the accumulation ride on ``bmm``/``baddbmm``
    instead of extra elementwise passes and fresh allocations.
    """
    a3, b3 = a.flatten(0, -3), b.flatten(0, -3)
    if out is None:
        out = a.new_empty(*a.shape[:-1], b.shape[-1])
    o3 = out.flatten(0, -3)
    if accumulate:
        o3.baddbmm_(a3, b3, alpha=alpha)
    elif alpha == 1.0:
        torch.bmm(a3, b3, out=o3)
    else:
        # beta=0 ignores the (scalar, broadcast) input, so nothing is read from it
        torch.baddbmm(a3.new_zeros(()), a3, b3, beta=0.0, alpha=alpha, out=o3)
    return out


def _causal(C: int, device: torch.device) -> torch.Tensor:
    return torch.ones(C, C, dtype=torch.bool, device=device).tril_()


#: tokens per segment: the chunks are processed in segments of about this many tokens, so each
#: step's temporaries stay cache-sized and the cost per token does not grow with T
SEGMENT_TOKENS = 2048


def _segments(N: int, C: int) -> list[tuple[int, int]]:
    per = max(1, SEGMENT_TOKENS // C)
    return [(n0, min(N, n0 + per)) for n0 in range(0, N, per)]


class _ChunkScalarDecay(torch.autograd.Function):
    """``(q, k, v, g, h0) -> (o, ht)`` on chunked tensors.

    q, k: ``[N, B, H, C, K]``; v: ``[N, B, H, C, V]``; g: ``[N, B, H, C]`` per-token log decay or
    None; h0: ``[B, H, K, V]`` or None. All contiguous, in the compute dtype (float32/float64).
    Chunks lead, so a run of chunks (a segment) or one chunk's state is a contiguous slice: forward
    and backward walk the segments in order (reverse order for backward), writing into full-size
    outputs, with small per-segment temporaries.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale: float):
        N, C = q.shape[0], q.shape[3]
        causal = _causal(C, q.device)
        A = q.new_empty(*q.shape[:-1], C)  # scale (q_i . k_j) D_ij, per chunk
        o = v.new_empty(v.shape)
        S = q.new_empty(N + 1, *q.shape[1:3], q.shape[-1], v.shape[-1])  # state entering each chunk
        if h0 is None:
            S[0].zero_()
        else:
            S[0].copy_(h0)
        if g is not None:
            b = g.cumsum(-1)  # chunk-local cumulative log decay
            bC = b[..., -1]  # [N, B, H]
            a = _decay(bC.clone())
            f = _decay(bC[..., None] - b)  # decay from token j to the chunk end
            qe = q * _decay(b.clone()).mul_(scale)[..., None]  # scale * exp(b_i) q_i
            kd = k * f[..., None]
            D = q.new_empty(A.shape)
        else:
            b = a = f = D = None
            qe, kd = q * scale, k
        for n0, n1 in _segments(N, C):
            s = slice(n0, n1)
            _mm(q[s], k[s].transpose(-1, -2), alpha=scale, out=A[s])
            if b is not None:
                diff = (b[s, ..., :, None] - b[s, ..., None, :]).masked_fill_(~causal, float("-inf"))
                D[s] = _decay(diff)  # D_ij = exp(b_i - b_j) for j <= i, else 0 (masked before the exp)
                A[s].mul_(D[s])
            else:
                A[s].masked_fill_(~causal, 0.0)
            _state_scan(None if a is None else a[s], _mm(kd[s].transpose(-1, -2), v[s]), S[n0 : n1 + 1])
            _mm(A[s], v[s], out=o[s])
            _mm(qe[s], S[n0:n1], out=o[s], accumulate=True)
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        ctx.has_h0 = h0 is not None
        # qe and kd are kept (not recomputed): two fewer broadcast passes in backward
        ctx.save_for_backward(q, k, v, b, A, D, S, a, f, qe, kd)
        return o, S[-1].clone()

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, b, A, D, S, a, f, qe, kd = ctx.saved_tensors
        scale = ctx.scale
        N, C = q.shape[0], q.shape[3]
        causal = _causal(C, q.device)
        if do is None:
            do = v.new_zeros(v.shape)
        # e.g. the gradient of o.sum() is an expanded (stride-0) tensor: bmm would then loop over
        # the batch with a copy per matrix, so pay for one dense copy instead
        do = do.contiguous()
        need_dg = b is not None and ctx.needs_input_grad[3]
        dq, dk, dv = q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)
        dg = b.new_empty(b.shape) if need_dg else None
        se = None if b is None else _decay(b.clone()).mul_(scale)[..., None]  # scale * exp(b_i)
        G = S.new_empty(S.shape)  # dL/dS^(c)
        if dht is None:
            G[N].zero_()
        else:
            G[N].copy_(dht)
        for n0, n1 in reversed(_segments(N, C)):
            s = slice(n0, n1)
            dos, Sprev = do[s], S[n0:n1]
            # intra-chunk: o_intra = A v, A = scale (q k^T) * D
            dA = _mm(dos, v[s].transpose(-1, -2))
            _mm(A[s].transpose(-1, -2), dos, out=dv[s])
            P = dA * D[s] if D is not None else dA.masked_fill(~causal, 0.0)
            # inter-chunk read: o_inter = qe S_prev with qe = scale exp(b) q
            X = _mm(dos, Sprev.transpose(-1, -2))  # [n, B, H, C, K]
            torch.mul(X, scale if se is None else se[s], out=dq[s])
            _mm(P, k[s], alpha=scale, out=dq[s], accumulate=True)
            _grad_scan(None if a is None else a[s], _mm(qe[s].transpose(-1, -2), dos), G[n0 : n1 + 1])
            Gnext = G[n0 + 1 : n1 + 1]
            # state write: U = (k * f)^T v; the inter part of dk goes first, the gate needs it alone
            _mm(v[s], Gnext.transpose(-1, -2), out=dk[s])
            if f is not None:
                dk[s].mul_(f[s, ..., None])
            _mm(kd[s], Gnext, out=dv[s], accumulate=True)
            if need_dg:
                r = (X * qe[s]).sum(-1)  # dO_i . o_inter_i
                dlog = (dk[s] * k[s]).sum(-1)
                dend = a[s] * (Gnext * Sprev).sum((-1, -2))
                dg[s] = _gate_grad(dA.mul_(A[s]), r, dlog, dend)
            _mm(P.transpose(-1, -2), q[s], alpha=scale, out=dk[s], accumulate=True)
        dh0 = G[0] if ctx.has_h0 else None
        return dq, dk, dv, dg, dh0, None


def _to_chunks(x: torch.Tensor, C: int, sd: torch.dtype) -> torch.Tensor:
    """``[B, T, H, ...] -> [N, B, H, C, ...]`` in dtype ``sd`` (zero-padded in time to ``N * C``)."""
    x = pad_time(x, C)
    B, Tp, H = x.shape[:3]
    x = x.reshape(B, Tp // C, C, H, *x.shape[3:])
    perm = (1, 0, 3, 2) + tuple(range(4, x.dim()))
    # ``.to(memory_format=...)`` may return the strided view itself, so ask for contiguity explicitly:
    # every batched matmul below then runs on dense matrices without hidden copies
    return x.permute(*perm).to(sd).contiguous()


def chunk_scalar_decay_fixed(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked form on one fixed-length batch. ``g: [B, T, H]`` total log gate (state dtype) or None.

    Returns ``o: [B, T, H, V]`` in the *state* dtype (callers cast) and the final state or None.
    """
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    C = min(chunk_size, T)
    qc, kc, vc = (_to_chunks(x, C, sd) for x in (q, k, v))
    # padded steps get g = 0, so the chunk-end decay equals the last real token's
    gc = None if g is None else _to_chunks(g, C, sd)
    h0 = None if initial_state is None else initial_state.to(sd)
    o, ht = _ChunkScalarDecay.apply(qc, kc, vc, gc, h0, scale)
    o = o.permute(1, 0, 3, 2, 4).reshape(B, -1, H, v.shape[-1])[:, :T]
    return o, (ht if output_final_state else None)


def chunk_scalar_decay(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    scale: float,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated-input entry shared by simple GLA, retention, Lightning and linear attention.

    Returns ``o`` in the state dtype; packed sequences (``cu_seqlens``) are run one by one.
    """
    if cu_seqlens is None:
        return chunk_scalar_decay_fixed(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
    return run_packed(
        lambda q, k, v, g, h0: chunk_scalar_decay_fixed(q, k, v, g, scale, h0, True, chunk_size),
        q,
        k,
        v,
        g,
        initial_state,
        output_final_state,
        cu_seqlens,
    )


def chunk_simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None = None,
    g_gamma: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA (scalar per-head decay) in chunked form; same math as ``naive_recurrent_simple_gla``.

    ``S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (float64, float32 or bfloat16).
        g: ``[B, T, H]`` data-dependent log decay (<= 0) or None.
        g_gamma: ``[H]`` constant per-head log decay (<= 0) or None. Both may be given: they add.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``; N = B, or the number of sequences with ``cu_seqlens``.
        output_final_state: also return the final state ``[N, H, K, V]`` (float32/float64).
        cu_seqlens: ``[N + 1]`` boundaries of packed sequences (B must be 1).
        chunk_size: tokens per chunk (any positive int; 64 is a good CPU default).

    Returns:
        ``(o, final_state)``: ``o: [B, T, H, V]`` in q's dtype; ``final_state`` None unless requested.

    Example:
        >>> q = k = v = torch.randn(1, 10, 2, 8)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 10, 2))
        >>> o, ht = chunk_simple_gla(q, k, v, g, output_final_state=True)
        >>> o.shape, ht.shape
        (torch.Size([1, 10, 2, 8]), torch.Size([1, 2, 8, 8]))
    """
    scale = validate(q, k, v, g, g_gamma, scale, initial_state, cu_seqlens)
    chunk_size = check_chunk_size(chunk_size)
    gate = total_gate(g, g_gamma, q)
    o, ht = chunk_scalar_decay(
        q, k, v, gate, scale, initial_state, output_final_state, cu_seqlens, chunk_size
    )
    return o.to(q.dtype), ht


def chunk_retention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """RetNet retention: simple GLA with ``g_gamma[h] = log(1 - 2**(-5 - h))`` (h = 0-based head).

    Shapes and returns as in :func:`chunk_simple_gla` (no gate argument).
    """
    H = check_qkv(q, k, v)[2]
    gamma = retention_decay(H, dtype=state_dtype(q), device=q.device)
    return chunk_simple_gla(
        q,
        k,
        v,
        g_gamma=gamma,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        cu_seqlens=cu_seqlens,
        chunk_size=chunk_size,
    )
