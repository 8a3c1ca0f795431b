"""Chunked (matmul-based) scalar-decay linear attention: the training path.

The sequence is cut into chunks of ``C`` tokens. Everything inside a chunk is one batched matmul over
all chunks at once; only a ``[H, K, V]`` state update per chunk is sequential. Forward and backward
are written by hand (``_ChunkScalarDecay``) so autograd never records the per-chunk scan.
See ``README.md`` in this folder for the equations.

Numerics: every exponent used here is ``<= 0``. ``b`` is the cumulative log decay *local to its
chunk*, so ``exp(b_i)``, ``exp(b_C - b_j)`` and ``exp(b_i - b_j)`` (j <= i, masked to -inf above the
diagonal before the exp) are all in ``[0, 1]``; strong gates underflow to 0 instead of overflowing.
Decay factors below ``exp(LOG_FLOOR_ONE_PRODUCT)`` are set to exactly 0 (see ``_decay``): CPUs
compute on subnormal floats tens of times slower, and strong fixed decays (Lightning's -6 per step)
would otherwise fill whole chunks with them.
"""

from __future__ import annotations

import torch

from linearlab.ops.common import (
    LOG_FLOOR_ONE_PRODUCT,
    causal_mask,
    chunks_per_segment,
    exp_flush_,
    from_chunks,
    segments,
    to_chunks,
)
from linearlab.ops.simple_gla._common import retention_decay, total_gate, validate
from linearlab.ops.utils import (
    check_chunk_size,
    check_qkv,
    run_varlen,
    state_dtype,
    state_from_v_first,
    state_to_v_first,
)


def _decay(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` in place for log-decays ``x <= 0``, flushing factors below
    ``exp(LOG_FLOOR_ONE_PRODUCT)`` to exactly 0."""
    return exp_flush_(x, LOG_FLOOR_ONE_PRODUCT)


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
    keep = causal_mask(C, W.device)
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


#: tokens per segment: the chunks are processed in segments of about this many tokens, so each
#: step's temporaries stay cache-sized and the cost per token does not grow with T
SEGMENT_TOKENS = 2048


def _segments(N: int, C: int) -> list[tuple[int, int]]:
    """Chunk ranges of the segments over ``N`` chunks of ``C`` tokens (read at call time, so tests
    can shrink ``SEGMENT_TOKENS``)."""
    return segments(N, chunks_per_segment(C, SEGMENT_TOKENS))


def _to_chunks(x: torch.Tensor, t0: int, t1: int, C: int, sd: torch.dtype) -> torch.Tensor:
    """``x[:, t0:t1]: [B, t, H, ...] -> [n, B, H, C, ...]``, dense, in dtype ``sd`` (zero-padded).

    Only the segment is permuted (one cache-sized copy), never the whole sequence. ``.contiguous()``
    explicitly: every batched matmul then runs on dense matrices without hidden copies.
    """
    return to_chunks(x, C, t0, t1, sd).contiguous()


class _Gates:
    """Per-segment decay factors from the chunked gate ``g: [n, B, H, C]`` (recomputed in backward)."""

    def __init__(self, g: torch.Tensor, notcausal: torch.Tensor, scale: float):
        b = g.cumsum(-1)  # chunk-local cumulative log decay
        bC = b[..., -1]  # [n, B, H]
        self.a = _decay(bC.clone())  # decay over the whole chunk
        self.f = _decay(bC[..., None] - b)[..., None]  # decay from token j to the chunk end
        self.se = _decay(b.clone()).mul_(scale)[..., None]  # scale * exp(b_i)
        diff = (b[..., :, None] - b[..., None, :]).masked_fill_(notcausal, float("-inf"))
        self.D = _decay(diff)  # D_ij = exp(b_i - b_j) for j <= i, else 0 (masked before the exp)


def _gates_for(g, t0, t1, C, sd, notcausal, scale, shared):
    """The segment's ``_Gates`` (None: no decay); ``shared`` (a constant gate) is reused as is."""
    if g is None:
        return None
    return shared or _Gates(_to_chunks(g, t0, t1, C, sd), notcausal, scale)


def _shared_gates(g, T, C, sd, notcausal, scale):
    """For a gate constant in time (e.g. an expanded per-head ``g_gamma``) and no padding, every chunk
    has the same decays: compute them once from the first chunk (``[1, B, H, ...]``, broadcast)."""
    if g is None or g.stride(1) != 0 or T % C != 0:
        return None
    return _Gates(_to_chunks(g, 0, C, C, sd), notcausal, scale)


def _decayed_keys(ks: torch.Tensor, gt: _Gates | None) -> torch.Tensor:
    """``k * f`` (f: decay from token j to its chunk end), the keys as they are written to the state."""
    return ks if gt is None else ks * gt.f


def _segment_states(kf: torch.Tensor, vs: torch.Tensor, gt: _Gates | None, S0: torch.Tensor) -> torch.Tensor:
    """States entering each chunk of a segment and leaving its last: ``[n + 1, B, H, K, V]``.

    ``kf: [n, B, H, C, K]`` the decayed keys (:func:`_decayed_keys`), ``vs: [n, B, H, C, V]``,
    ``S0: [B, H, K, V]`` the state entering the segment. Chunk c adds ``U_c = kf^T v``.
    """
    n = kf.shape[0]
    S = S0.new_empty(n + 1, *S0.shape)
    S[0].copy_(S0)
    a = None if gt is None else gt.a.expand(n, -1, -1)
    _state_scan(a, _mm(kf.transpose(-1, -2), vs), S)
    return S


class _ChunkScalarDecay(torch.autograd.Function):
    """``(q, k, v, g, h0) -> (o, ht)`` with chunk size ``C``.

    q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (any float dtype); g: ``[B, T, H]`` per-token log
    decay or None, h0: ``[B, H, K, V]`` or None, both in the compute dtype (float32/float64); o is
    returned ``[B, T, H, V]`` in the compute dtype. The chunks are walked in segments of about
    SEGMENT_TOKENS tokens (reverse order in backward); each segment is self-contained: its slice of
    the inputs is cast, padded and permuted to ``[n, B, H, C, D]`` (chunks lead, so a run of states
    is a contiguous slice), and its outputs are written straight back into ``[B, T, H, D]``. Only
    the inputs and the state entering each *segment* are saved; everything else (decays, the
    states inside a segment, intra-chunk scores) is recomputed per segment in backward. The only
    T-sized buffers are the inputs and outputs, so the cost per token does not grow with T (and no
    large scratch buffer has to be faulted in afresh on every call).
    """

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale: float, C: int):
        B, T, H, K = q.shape
        V = v.shape[-1]
        sd = state_dtype(q)
        N = -(-T // C)
        notcausal = ~causal_mask(C, q.device)
        segments = _segments(N, C)
        o = q.new_empty(B, T, H, V, dtype=sd)
        # the state entering each segment (and the final one); backward recomputes the states
        # inside a segment from these, so no T-sized state buffer is kept
        Sb = q.new_empty(len(segments) + 1, B, H, K, V, dtype=sd)
        if h0 is None:
            Sb[0].zero_()
        else:
            Sb[0].copy_(h0)
        shared = _shared_gates(g, T, C, sd, notcausal, scale)
        for i, (n0, n1) in enumerate(segments):
            t0, t1 = n0 * C, min(T, n1 * C)
            qs, ks, vs = (_to_chunks(x, t0, t1, C, sd) for x in (q, k, v))
            gt = _gates_for(g, t0, t1, C, sd, notcausal, scale, shared)
            S = _segment_states(_decayed_keys(ks, gt), vs, gt, Sb[i])
            A = _mm(qs, ks.transpose(-1, -2), alpha=scale)  # scale (q_i . k_j) D_ij, per chunk
            if gt is not None:
                A.mul_(gt.D)
                oc = _mm(A, vs)
                _mm(qs * gt.se, S[:-1], out=oc, accumulate=True)  # qe = scale * exp(b_i) q_i
            else:
                A.masked_fill_(notcausal, 0.0)
                oc = _mm(A, vs)
                _mm(qs, S[:-1], alpha=scale, out=oc, accumulate=True)
            o[:, t0:t1] = from_chunks(oc, t1 - t0)
            Sb[i + 1].copy_(S[-1])
        ctx.scale, ctx.C = scale, C
        ctx.set_materialize_grads(False)
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(q, k, v, g, Sb)
        return o, Sb[-1].clone()

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, Sb = ctx.saved_tensors
        scale, C = ctx.scale, ctx.C
        B, T, H, K = q.shape
        V = v.shape[-1]
        sd = Sb.dtype
        N = -(-T // C)
        notcausal = ~causal_mask(C, q.device)
        need_dg = g is not None and ctx.needs_input_grad[3]
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = torch.empty_like(g) if need_dg else None
        # dL/dS^(c) at the end of the segment being processed (G[N] = dL/d final state)
        Gend = Sb.new_zeros(B, H, K, V) if dht is None else dht.to(sd)
        shared = _shared_gates(g, T, C, sd, notcausal, scale)
        for i, (n0, n1) in reversed(list(enumerate(_segments(N, C)))):
            t0, t1 = n0 * C, min(T, n1 * C)
            qs, ks, vs = (_to_chunks(x, t0, t1, C, sd) for x in (q, k, v))
            # the per-segment copy also densifies an expanded (stride-0) do, e.g. from o.sum()
            dos = vs.new_zeros(vs.shape) if do is None else _to_chunks(do, t0, t1, C, sd)
            gt = _gates_for(g, t0, t1, C, sd, notcausal, scale, shared)
            kf = _decayed_keys(ks, gt)
            Sprev = _segment_states(kf, vs, gt, Sb[i])[:-1]  # recomputed from the segment's start
            G = Sb.new_empty(n1 - n0 + 1, B, H, K, V)  # dL/dS^(c) for this segment's chunks
            G[-1].copy_(Gend)
            # intra-chunk: o_intra = A v, A = scale (q k^T) * D (recomputed)
            A = _mm(qs, ks.transpose(-1, -2), alpha=scale)
            if gt is not None:
                A.mul_(gt.D)
            else:
                A.masked_fill_(notcausal, 0.0)
            dA = _mm(dos, vs.transpose(-1, -2))
            dvs = _mm(A.transpose(-1, -2), dos)
            P = dA * gt.D if gt is not None else dA.masked_fill(notcausal, 0.0)
            # inter-chunk read: o_inter = qe S_prev with qe = scale exp(b) q
            X = _mm(dos, Sprev.transpose(-1, -2))  # [n, B, H, C, K]
            if gt is not None:
                dqs = X * gt.se
                qe = qs * gt.se
                _grad_scan(gt.a.expand(n1 - n0, -1, -1), _mm(qe.transpose(-1, -2), dos), G)
            else:
                dqs = X * scale
                _grad_scan(None, _mm(qs.transpose(-1, -2), dos, alpha=scale), G)
            _mm(P, ks, alpha=scale, out=dqs, accumulate=True)
            Gnext = G[1:]
            # state write: U = (k * f)^T v; the inter part of dk goes first, the gate needs it alone
            dks = _mm(vs, Gnext.transpose(-1, -2))
            if gt is not None:
                dks.mul_(gt.f)
            _mm(kf, Gnext, out=dvs, accumulate=True)
            if need_dg:
                r = (X * qe).sum(-1)  # dO_i . o_inter_i
                dlog = (dks * ks).sum(-1)
                dend = gt.a * (Gnext * Sprev).sum((-1, -2))
                dg[:, t0:t1] = from_chunks(_gate_grad(dA.mul_(A), r, dlog, dend), t1 - t0)
            _mm(P.transpose(-1, -2), qs, alpha=scale, out=dks, accumulate=True)
            for out, gr in ((dq, dqs), (dk, dks), (dv, dvs)):
                out[:, t0:t1] = from_chunks(gr, t1 - t0)
            Gend = G[0]
        dh0 = Gend if ctx.has_h0 else None
        return dq, dk, dv, dg, dh0, None, None


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
    sd = state_dtype(q)
    C = min(chunk_size, q.shape[1])
    h0 = None if initial_state is None else initial_state.to(sd)
    # padded steps (last chunk) get g = 0, so the chunk-end decay equals the last real token's
    o, ht = _ChunkScalarDecay.apply(q, k, v, g, h0, scale, C)
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
    return run_varlen(
        lambda q, k, v, g, initial_state, output_final_state: chunk_scalar_decay_fixed(
            q, k, v, g, scale, initial_state, True, chunk_size
        ),
        {"q": q, "k": k, "v": v, "g": g},
        cu_seqlens,
        initial_state,
        output_final_state,
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
    state_v_first: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    cu_seqlens_cpu: torch.Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Simple GLA (scalar per-head decay) in chunked form; same math as ``naive_recurrent_simple_gla``.

    ``S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``. Positional order is
    fla 0.6's ``chunk_simple_gla``; ``chunk_size`` is a keyword-only extra.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (float64, float32, bfloat16 or float16).
        g: ``[B, T, H]`` data-dependent log decay (<= 0) or None.
        g_gamma: ``[H]`` constant per-head log decay (<= 0) or None. Both may be given: they add.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]``; N = B, or the number of sequences with ``cu_seqlens``
            (``[N, H, V, K]`` with ``state_v_first``).
        output_final_state: also return the final state ``[N, H, K, V]`` (float32/float64).
        state_v_first: states in fla's value-first layout ``[N, H, V, K]``, on input and output.
        cu_seqlens: ``[N + 1]`` boundaries of packed sequences (B must be 1).
        cu_seqlens_cpu: fla's precomputed host copy of ``cu_seqlens``; not needed here, accepted
            when it holds the same boundaries.
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
    scale = validate(
        q,
        k,
        v,
        g,
        g_gamma,
        scale,
        initial_state,
        cu_seqlens,
        state_v_first=state_v_first,
        cu_seqlens_cpu=cu_seqlens_cpu,
    )
    chunk_size = check_chunk_size(chunk_size)
    gate = total_gate(g, g_gamma, q)
    h0 = state_from_v_first(initial_state, state_v_first)
    o, ht = chunk_scalar_decay(q, k, v, gate, scale, h0, output_final_state, cu_seqlens, chunk_size)
    return o.to(q.dtype), state_to_v_first(ht, state_v_first)


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
