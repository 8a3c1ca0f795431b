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


def _state_scan(a: torch.Tensor | None, U: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """States entering each chunk and after the last: ``[N + 1, B, H, K, V]``.

    ``S^(0) = h0``, ``S^(c+1) = a_c S^(c) + U_c`` with ``a: [N, B, H]`` (None: no decay). The chunk
    dim comes first so that each ``S[c]`` is contiguous and the loop writes in place without copies.
    """
    N = U.shape[0]
    S = U.new_empty(N + 1, *U.shape[1:])
    if h0 is None:
        S[0].zero_()
    else:
        S[0].copy_(h0)
    # a plain loop of in-place [B, H, K, V] updates: N is at most SEGMENT_TOKENS / C, and on CPU
    # this beats cumsum along the outer dim (no decay) by a wide margin
    a5 = None if a is None else a[..., None, None]
    for c in range(N):
        if a5 is None:
            torch.add(U[c], S[c], out=S[c + 1])
        else:
            torch.addcmul(U[c], S[c], a5[c], out=S[c + 1])
    return S


def _grad_scan(a: torch.Tensor | None, R: torch.Tensor, dht: torch.Tensor | None) -> torch.Tensor:
    """Reverse scan of the state gradient: ``[N + 1, B, H, K, V]``, entry c is dL/dS^(c).

    ``G^(N) = dht``, ``G^(c) = R_c + a_c G^(c+1)`` where ``R_c`` is the gradient from chunk c's reads.
    """
    N = R.shape[0]
    G = R.new_empty(N + 1, *R.shape[1:])
    if dht is None:
        G[N].zero_()
    else:
        G[N].copy_(dht)
    a5 = None if a is None else a[..., None, None]
    for c in range(N - 1, -1, -1):
        if a5 is None:
            torch.add(R[c], G[c + 1], out=G[c])
        else:
            torch.addcmul(R[c], G[c + 1], a5[c], out=G[c])
    return G


def _gate_grad(W: torch.Tensor, r: torch.Tensor, dlog: torch.Tensor, dend: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. the per-token gate ``g_t`` of a chunk, ``[N, B, H, C]``.

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
    a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``alpha * a @ b`` over the leading (batch) dims, accumulated into ``out`` in place if given.

    One BLAS call: the scale and the accumulation ride on ``baddbmm`` instead of extra passes.
    """
    a3, b3 = a.flatten(0, -3), b.flatten(0, -3)
    if out is not None:
        out.flatten(0, -3).baddbmm_(a3, b3, alpha=alpha)
        return out
    # beta=0 ignores the (scalar, broadcast) input, so nothing is read from it
    r = torch.bmm(a3, b3) if alpha == 1.0 else torch.baddbmm(a3.new_zeros(()), a3, b3, beta=0.0, alpha=alpha)
    return r.view(*a.shape[:-1], b.shape[-1])


def _causal(C: int, device: torch.device) -> torch.Tensor:
    return torch.ones(C, C, dtype=torch.bool, device=device).tril_()


class _ChunkScalarDecay(torch.autograd.Function):
    """``(q, k, v, g, h0) -> (o, ht)`` on chunked tensors.

    q, k: ``[N, B, H, C, K]``; v: ``[N, B, H, C, V]``; g: ``[N, B, H, C]`` per-token log decay or
    None; h0: ``[B, H, K, V]`` or None. All contiguous, in the compute dtype (float32/float64).
    Chunks lead so that the per-chunk states of the scan are contiguous slices.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale: float):
        C = q.shape[3]
        kT = k.transpose(-1, -2)
        A = _mm(q, kT, alpha=scale)  # scale * q_i . k_j
        if g is not None:
            b = g.cumsum(-1)  # chunk-local cumulative log decay
            bC = b[..., -1]  # [N, B, H]
            a = _decay(bC.clone())
            diff = (b[..., :, None] - b[..., None, :]).masked_fill_(~_causal(C, q.device), float("-inf"))
            D = _decay(diff)  # D_ij = exp(b_i - b_j) for j <= i, else 0 (masked before the exp)
            A.mul_(D)
            f = _decay(bC[..., None] - b)  # decay from token j to the chunk end
            qe = q * _decay(b.clone()).mul_(scale)[..., None]  # scale * exp(b_i) q_i
            kd = k * f[..., None]
        else:
            b = a = D = f = None
            A.masked_fill_(~_causal(C, q.device), 0.0)
            qe, kd = q * scale, k
        S = _state_scan(a, _mm(kd.transpose(-1, -2), v), h0)  # U_c = (k * f)^T v
        o = _mm(A, v)
        _mm(qe, S[:-1], out=o)
        ht = S[-1].clone()
        ctx.scale = scale
        ctx.set_materialize_grads(False)
        ctx.has_h0 = h0 is not None
        # qe and kd are kept (not recomputed): two fewer broadcast passes in backward for 2 more
        # chunk-sized tensors of memory
        ctx.save_for_backward(q, k, v, b, A, D, S, a, f, qe, kd)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, b, A, D, S, a, f, qe, kd = ctx.saved_tensors
        scale = ctx.scale
        if do is None:
            do = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        # e.g. the gradient of o.sum() is an expanded (stride-0) tensor: bmm would then loop over
        # the batch with a copy per matrix, so pay for one dense copy instead
        do = do.contiguous()
        Sprev = S[:-1]
        # intra-chunk: o_intra = A v, A = scale (q k^T) * D
        dA = _mm(do, v.transpose(-1, -2))
        dv = _mm(A.transpose(-1, -2), do)
        P = dA * D if D is not None else dA.masked_fill(~_causal(q.shape[3], q.device), 0.0)
        # inter-chunk read: o_inter = qe S_prev with qe = scale exp(b) q
        X = _mm(do, Sprev.transpose(-1, -2))  # [N, B, H, C, K]
        # without a gate X is not needed again (no gate gradient), so scale it in place
        dq = X.mul_(scale) if b is None else X * _decay(b.clone()).mul_(scale)[..., None]
        _mm(P, k, alpha=scale, out=dq)
        G = _grad_scan(a, _mm(qe.transpose(-1, -2), do), dht)  # R_c = qe^T dO
        Gnext = G[1:]
        # state write: U = (k * f)^T v
        dk = _mm(v, Gnext.transpose(-1, -2))  # [N, B, H, C, K], inter part first
        if f is not None:
            dk.mul_(f[..., None])
        _mm(kd, Gnext, out=dv)
        dg = None
        if b is not None and ctx.needs_input_grad[3]:
            r = (X * qe).sum(-1)  # dO_i . o_inter_i
            dlog = (dk * k).sum(-1)  # uses the inter part of dk only
            dg = _gate_grad(dA.mul_(A), r, dlog, a * (Gnext * Sprev).sum((-1, -2)))
        _mm(P.transpose(-1, -2), q, alpha=scale, out=dk)  # + intra part
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


#: tokens per segment: long sequences run as a chain of segments that pass the state on, so each
#: segment's working set stays cache-sized and the cost per token does not grow with T
SEGMENT_TOKENS = 2048


def _chunk_segment(q, k, v, g, scale, h0, C):
    """One ``_ChunkScalarDecay`` call on ``[B, T, H, *]`` inputs; returns ``(o [B, T, H, V], ht)``."""
    B, T, H, _ = q.shape
    sd = state_dtype(q)
    qc, kc, vc = (_to_chunks(x, C, sd) for x in (q, k, v))
    # padded steps get g = 0, so the chunk-end decay equals the last real token's
    gc = None if g is None else _to_chunks(g, C, sd)
    o, ht = _ChunkScalarDecay.apply(qc, kc, vc, gc, h0, scale)
    return o.permute(1, 0, 3, 2, 4).reshape(B, -1, H, v.shape[-1])[:, :T], ht


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
    Sequences longer than ``SEGMENT_TOKENS`` are cut into segments (multiples of the chunk size)
    chained through the state; autograd carries the state gradient back along the chain.
    """
    T = q.shape[1]
    C = min(chunk_size, T)
    seg = max(C, SEGMENT_TOKENS // C * C)
    h = None if initial_state is None else initial_state.to(state_dtype(q))
    if T <= seg:
        o, h = _chunk_segment(q, k, v, g, scale, h, C)
        return o, (h if output_final_state else None)
    # split (not slicing in a loop): its backward is one concatenation, while each slice's backward
    # would materialise a full-length zero gradient
    pieces = [x.split(seg, dim=1) for x in (q, k, v)]
    gs = [None] * len(pieces[0]) if g is None else g.split(seg, dim=1)
    outs = []
    for qs, ks, vs, gg in zip(*pieces, gs):
        o, h = _chunk_segment(qs, ks, vs, gg, scale, h, min(C, qs.shape[1]))
        outs.append(o)
    return torch.cat(outs, dim=1), (h if output_final_state else None)


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
