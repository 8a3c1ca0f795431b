"""Chunked (WY / UT transform) gated delta rule: the training path, shared with the delta rule.

See ``README.md`` for the equations. Every per-token tensor is reshaped to ``[NC, B*H, C, D]``
(NC chunks of C tokens). Work that does not depend on the running state (Gram matrices, decays,
the unit lower-triangular solve, the intra-chunk outputs) is one batched op per segment of a few
chunks, and the sequential scan does two small matmuls per chunk on contiguous slices. Forward
and backward are written by hand in a ``torch.autograd.Function``: autograd through a Python scan
of thousands of chunks is slow and keeps every intermediate alive, while the hand-written
backward saves only the chunked inputs, the per-chunk states, the WY factors and the
pseudo-values, and runs a mirror-image scan."""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from linearlab.ops.common import (
    LOG_FLOOR_TWO_FACTORS,
    causal_mask,
    chunks_per_segment,
    exp_flush_,
    flush_tiny_,
    from_chunks,
    segments,
    to_chunks,
)
from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.utils import check_chunk_size, state_dtype

#: Chunks are processed together in segments of about this many elements per ``[n, BH, C, D]``
#: tensor: each batched op's operands stay in cache, so the cost per token does not grow with T,
#: and the temporaries are bounded by a segment instead of the sequence.
SEGMENT_ELEMENTS = 2**16


def _to_chunks(x: torch.Tensor, C: int, dt: torch.dtype) -> torch.Tensor:
    """``[B, T, H, D] -> [NC, B*H, C, D]`` (time zero-padded to a multiple of C).

    With B == 1 (and no padding or cast) this is a strided view of ``x``, which costs no memory;
    segments are made contiguous one at a time (:func:`_dense`) before their batched matmuls.
    """
    return to_chunks(x, C, dtype=dt).flatten(1, 2)


def _dense(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """A contiguous copy of one segment (optionally scaled): a strided operand would be copied
    again by every batched matmul that reads it."""
    x = x.contiguous()
    return x if scale is None else x * scale


def _from_chunks(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """``[NC, B*H, C, D] -> [B, T, H, D]`` (drops the padding)."""
    return from_chunks(x.unflatten(1, (B, H)), T)


def _decays(
    b: torch.Tensor | None, C: int, dt: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Decay factors from chunk-local cumulative log gates ``b: [NC, BH, C]``.

    Returns ``(D, head, tail, whole)``: ``D [NC, BH, C, C]`` with ``D_ij = exp(b_i - b_j)`` for
    ``j <= i`` and 0 above the diagonal (just the causal mask when ``b`` is None); ``head = exp(b)``
    (decay since the chunk start), ``tail = exp(b_last - b)`` (decay to the chunk end), both
    ``[NC, BH, C, 1]``, and ``whole = exp(b_last)`` ``[NC, BH, 1, 1]``; these three are None
    when ungated.
    """
    causal = causal_mask(C, device)
    if b is None:
        return causal.to(dt), None, None, None

    # Decays below exp(LOG_FLOOR_TWO_FACTORS) are flushed to exactly 0: far below the dtype's
    # resolution next to the current token's own term (factor 1), and left alone they (or
    # products of two of them) become subnormal numbers, which made strong gates 2-5x slower.
    def exp_flushed(x: torch.Tensor) -> torch.Tensor:
        return exp_flush_(x, LOG_FLOOR_TWO_FACTORS)

    # Mask BEFORE exp: the upper triangle holds positive differences that could overflow.
    diff = b.unsqueeze(-1) - b.unsqueeze(-2)
    D = exp_flushed(diff.masked_fill_(~causal, float("-inf")))
    b_last = b[..., -1:]
    return (
        D,
        exp_flushed(b.clone()).unsqueeze(-1),  # b is saved for backward: not in place
        exp_flushed(b_last - b).unsqueeze(-1),
        exp_flushed(b_last.clone()).unsqueeze(-1),
    )


def _solve_unit_lower(lower: torch.Tensor, rhs: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """``(I + lower)^-1 rhs`` (or ``(I + lower)^-T rhs``) for strictly lower ``lower: [..., C, C]``.

    ``unitriangular=True`` never reads the diagonal, so the strict lower part suffices. The
    system is solved in its transposed, right-hand form (``X^T A^T = rhs^T``): LAPACK wants
    column-major operands, which the transposed views of our row-major tensors already are, so
    this skips two layout copies and returns a contiguous result (about 2x faster on CPU).
    """
    a = lower if transpose else lower.mT
    return torch.linalg.solve_triangular(a, rhs.mT, upper=not transpose, left=False, unitriangular=True).mT


def _forward_segment(qc, kc, vc, bc, b, S, states, wu, vn, o):
    """Forward over one segment of chunks; writes ``states, wu, vn, o`` in place, returns the state.

    Shapes: ``qc, kc: [n, BH, C, K]`` (qc already scaled), ``vc: [n, BH, C, V]``,
    ``bc: [n, BH, C, 1]``, ``b: [n, BH, C]`` or None, ``S: [BH, K, V]``.
    """
    K = kc.shape[-1]
    D, head, tail, whole = _decays(b, kc.shape[-2], kc.dtype, kc.device)
    # UT transform: A = I + tril(diag(beta) (K K^T * D), -1) and
    # [W, U] = A^-1 [diag(beta * head) K, diag(beta) V].
    lower = (kc @ kc.mT).mul_(D).mul_(bc).tril_(-1)
    rhs = torch.cat([kc * (bc if head is None else bc * head), vc * bc], -1)
    wu.copy_(_solve_unit_lower(lower, rhs))
    if b is not None:
        flush_tiny_(wu)
    w, u = wu[..., :K], wu[..., K:]

    k_sT = (kc if tail is None else kc * tail).mT
    for c in range(kc.shape[0]):
        states[c] = S
        torch.baddbmm(u[c], w[c], S, alpha=-1.0, out=vn[c])  # pseudo-values U - W S
        S = torch.baddbmm(S if whole is None else S * whole[c], k_sT[c], vn[c])

    torch.matmul(qc if head is None else qc * head, states, out=o)
    o.add_((qc @ kc.mT).mul_(D) @ vn)
    return S


def _backward_segment(qc, kc, vc, bc, b, states, wu, vn, doc, dS, dq, dk, dv, dbeta, dg):
    """Backward over one segment (shapes as in :func:`_forward_segment`, ``doc`` like ``vc``).

    ``dS`` is the grad of the state leaving the segment; writes ``dq, dk, dv, dbeta`` (and ``dg``
    when gated, all for the chunk-local tensors) in place and returns the grad of the entering state.
    """
    n, BH, C, K = kc.shape
    D, head, tail, whole = _decays(b, C, kc.dtype, kc.device)
    gated = b is not None

    # o = (head Q) S_c + P Vn  with  P = (Q K^T) * D.
    qk = qc @ kc.mT
    dP = doc @ vn.mT
    M = dP * qk if gated else None  # grad of D through P (times D later)
    dvn = qk.mul_(D).mT @ doc
    del qk
    dQK = dP.mul_(D)
    torch.matmul(dQK, kc, out=dq)
    torch.matmul(dQK.mT, qc, out=dk)
    del dQK, dP
    dq_s = doc @ states.mT  # grad of head * Q
    dstates = (qc if head is None else qc * head).mT @ doc  # grad of each entering state via o
    if gated:
        d_head = (dq_s * qc).sum(-1)
        dq.add_(dq_s.mul_(head))
    else:
        dq.add_(dq_s)
    del dq_s

    # Mirror scan: S_{c+1} = whole_c S_c + K_s^T Vn_c,  Vn_c = U_c - W_c S_c.
    dS_next = torch.empty_like(states)  # grad of the state leaving each chunk
    k_s = kc if tail is None else kc * tail
    wT = wu[..., :K].mT
    for c in range(n - 1, -1, -1):
        dS_next[c] = dS
        dvn[c].baddbmm_(k_s[c], dS)  # now the total grad of Vn_c
        dS_prev = dstates[c] + (dS if whole is None else dS * whole[c])
        dS = torch.baddbmm(dS_prev, wT[c], dvn[c], alpha=-1.0)
    del k_s, dstates
    dk_s = vn @ dS_next.mT
    if gated:
        d_tail = (dk_s * kc).sum(-1)
        d_whole = (states * dS_next).sum((-2, -1))
        dk.add_(dk_s.mul_(tail))
    else:
        dk.add_(dk_s)
    del dk_s, dS_next
    dwu = torch.cat([(dvn @ states.mT).neg_(), dvn], -1)  # grad of [W, U]
    del dvn

    # UT backward: X = A^-1 R  =>  dR = A^-T dX,  dA = -dR X^T (strict lower part).
    E = (kc @ kc.mT).mul_(D)
    lower = (E * bc).tril_(-1)
    dR = _solve_unit_lower(lower, dwu, transpose=True)
    if gated:
        flush_tiny_(dR)
    del lower, dwu
    dE = (dR @ wu.mT).tril_(-1).neg_()  # dA, then scaled by beta below
    torch.sum(dE * E, -1, out=dbeta)
    dE.mul_(bc)
    if gated:
        M.mul_(D).add_(dE * E)
        dE.mul_(D)
    del E
    dk.add_((dE + dE.mT) @ kc)
    del dE
    dR_k, dR_v = dR[..., :K], dR[..., K:]
    s_k = (dR_k * kc).sum(-1)
    torch.mul(dR_v, bc, out=dv)
    dbeta.add_((dR_v * vc).sum(-1))
    if gated:
        dk.add_(dR_k * (bc * head))
        h = head.squeeze(-1)
        dbeta.add_(h * s_k)
        d_head.add_(bc.squeeze(-1) * s_k)
        # Chain rule through every exp(.) of the chunk-local cumulative gate b, then the cumsum.
        tl = tail.squeeze(-1)
        db = M.sum(-1) - M.sum(-2) + d_head * h - d_tail * tl
        db[..., -1] += (d_tail * tl).sum(-1) + d_whole * whole.reshape(n, BH)
        dg.copy_(db.flip(-1).cumsum(-1).flip(-1))  # b = cumsum(g) within each chunk
    else:
        dk.add_(dR_k * bc)
        dbeta.add_(s_k)
    return dS


class _ChunkGatedDeltaRule(torch.autograd.Function):
    """Chunked gated delta rule with a hand-written backward (``g = None`` means ungated).

    Saved for backward: the chunked inputs, the state entering each chunk, the WY factors
    ``[W, U]`` and the pseudo-values; everything else is recomputed per segment of chunks.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, h0, scale: float, C: int):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dt = state_dtype(q)
        # Zero padding is harmless: padded tokens have beta = 0 and k = 0 (no write), g = 0 (no decay).
        qc = _to_chunks(q, C, dt)
        kc = _to_chunks(k, C, dt)
        vc = _to_chunks(v, C, dt)
        bc = _to_chunks(beta.unsqueeze(-1), C, dt)  # [NC, BH, C, 1]
        b = None if g is None else _to_chunks(g.unsqueeze(-1), C, dt).squeeze(-1).cumsum(-1)
        NC, BH = qc.shape[:2]
        S = torch.zeros(BH, K, V, dtype=dt, device=q.device) if h0 is None else h0.to(dt).reshape(BH, K, V)
        states = vc.new_empty((NC, BH, K, V))  # state entering each chunk
        wu = vc.new_empty((NC, BH, C, K + V))
        vn = vc.new_empty((NC, BH, C, V))  # pseudo-values U - W S
        o = torch.empty_like(vn)
        per = chunks_per_segment(C, SEGMENT_ELEMENTS, BH * max(K, V, C))
        for n0, n1 in segments(NC, per):
            i = slice(n0, n1)
            S = _forward_segment(
                _dense(qc[i], scale), _dense(kc[i]), _dense(vc[i]), bc[i], None if b is None else b[i],
                S, states[i], wu[i], vn[i], o[i],
            )  # fmt: skip
        ctx.save_for_backward(qc, kc, vc, bc, b, states, wu, vn, h0)
        ctx.meta = (B, T, H, C, scale, q.dtype, k.dtype, v.dtype, beta.dtype, None if g is None else g.dtype)
        return _from_chunks(o, B, H, T).to(q.dtype), S.reshape(B, H, K, V)

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dht):
        qc, kc, vc, bc, b, states, wu, vn, h0 = ctx.saved_tensors
        B, T, H, C, scale, q_dt, k_dt, v_dt, beta_dt, g_dt = ctx.meta
        NC, BH, _, K = kc.shape
        V = vc.shape[-1]
        doc = _to_chunks(do, C, kc.dtype)
        dq, dk = kc.new_empty(kc.shape), kc.new_empty(kc.shape)
        dv = vc.new_empty(vc.shape)
        dbeta = kc.new_empty((NC, BH, C))
        dg = None if b is None else torch.empty_like(b)
        dS = kc.new_zeros((BH, K, V)) if dht is None else dht.to(kc.dtype).reshape(BH, K, V)
        per = chunks_per_segment(C, SEGMENT_ELEMENTS, BH * max(K, V, C))
        for n0, n1 in reversed(segments(NC, per)):
            i = slice(n0, n1)
            dS = _backward_segment(
                _dense(qc[i], scale), _dense(kc[i]), _dense(vc[i]), bc[i], None if b is None else b[i],
                states[i], wu[i], vn[i], _dense(doc[i]),
                dS, dq[i], dk[i], dv[i], dbeta[i], None if dg is None else dg[i],
            )  # fmt: skip

        def back(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            return _from_chunks(x, B, H, T).to(dtype)

        return (
            back(dq.mul_(scale), q_dt),
            back(dk, k_dt),
            back(dv, v_dt),
            None if dg is None else back(dg.unsqueeze(-1), g_dt).squeeze(-1),
            back(dbeta.unsqueeze(-1), beta_dt).squeeze(-1),
            None if h0 is None else dS.reshape(B, H, K, V).to(h0.dtype),
            None,
            None,
        )


def chunk_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    scale: float,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unchecked chunked form for one fixed-length batch; ``g=None`` is the delta rule."""
    # A sequence shorter than a chunk would be mostly padding: shrink the chunk to the next power
    # of two >= T (at least 16). The result does not depend on the chunk size, only the cost.
    C = min(chunk_size, max(16, 1 << (q.shape[1] - 1).bit_length()))
    o, ht = _ChunkGatedDeltaRule.apply(q, k, v, g, beta, initial_state, scale, C)
    return o, (ht if output_final_state else None)


def chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    use_beta_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    cu_seqlens_cpu: torch.LongTensor | None = None,
    chunk_indices: torch.LongTensor | None = None,
    cp_context: object = None,
    *,
    chunk_size: int = 64,
    use_gate_in_kernel: bool = False,
    A_log: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule (Gated DeltaNet), chunked with the WY/UT transform: the training path.

    Computes ``S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - k_t exp(g_t) S_{t-1})`` and
    ``o_t = (scale q_t) S_t`` per value head, with state ``S: [K, V]``. Positional order is
    fla 0.6's; ``chunk_size``, ``use_gate_in_kernel``, ``A_log`` and ``dt_bias`` (which fla takes
    through ``**kwargs``) are keyword-only.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (float64, float32, bfloat16 or float16; any
            T) with ``HV`` a multiple of ``H`` (grouped value attention: value head ``j`` reads
            query/key head ``j // (HV // H)``; ``HV == H`` is the usual case).
        g: ``[B, T, HV]`` log decay (<= 0), or the raw gate input with ``use_gate_in_kernel``.
        beta: ``[B, T, HV]`` delta step size, or logits with ``use_beta_sigmoid_in_kernel``.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (``N = B``, or the number of sequences with
            ``cu_seqlens``); ``[N, HV, V, K]`` with ``state_v_first``.
        output_final_state: also return the final state (float32; float64 for float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        use_beta_sigmoid_in_kernel: ``beta`` holds logits; the step size is ``sigmoid(beta)``.
        allow_neg_eigval: step size ``2 * sigmoid(beta)`` in ``(0, 2)`` (negative eigenvalues of
            ``I - beta k^T k``); needs ``use_beta_sigmoid_in_kernel``, as in fla.
        state_v_first: states in fla's value-first layout ``[N, HV, V, K]``, on input and output.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).
        cu_seqlens_cpu: fla's precomputed host copy of ``cu_seqlens``; not needed here, accepted
            when it holds the same boundaries.
        chunk_indices: fla's precomputed ``[num_chunks, 2]`` (sequence, chunk) table for
            ``cu_seqlens``; not needed here, accepted when it equals fla's for ``chunk_size``.
        cp_context: fla's context-parallel context; only None (a ValueError says why).
        chunk_size: tokens per chunk (default 64); results do not depend on it.
        use_gate_in_kernel: ``g`` is the raw input and the decay is
            ``-exp(A_log) * softplus(g + dt_bias)`` (Mamba-2 / Gated DeltaNet), differentiable in
            ``g``, ``A_log`` and ``dt_bias``.
        A_log: ``[HV]``, required with ``use_gate_in_kernel`` (ignored without it, as in fla).
        dt_bias: ``[HV]`` or None, used with ``use_gate_in_kernel`` (ignored without it).

    Returns:
        ``(o: [B, T, HV, V] in q's dtype, final_state or None)``.

    Example:
        >>> q = F.normalize(torch.randn(1, 100, 4, 64), dim=-1); k = F.normalize(torch.randn_like(q), dim=-1)
        >>> v = torch.randn(1, 100, 4, 64); g = F.logsigmoid(torch.randn(1, 100, 4))
        >>> beta = torch.rand(1, 100, 4).sigmoid()
        >>> o, ht = chunk_gated_delta_rule(q, k, v, g, beta, output_final_state=True)
    """
    check_chunk_size(chunk_size)
    return validate_and_run(
        chunk_core,
        q,
        k,
        v,
        g,
        beta,
        scale,
        initial_state,
        output_final_state,
        use_qk_l2norm_in_kernel,
        cu_seqlens,
        batch_varlen=True,
        grouped=True,
        use_gate_in_kernel=use_gate_in_kernel,
        A_log=A_log,
        dt_bias=dt_bias,
        use_beta_sigmoid_in_kernel=use_beta_sigmoid_in_kernel,
        allow_neg_eigval=allow_neg_eigval,
        state_v_first=state_v_first,
        cu_seqlens_cpu=cu_seqlens_cpu,
        chunk_indices=chunk_indices,
        chunk_size=chunk_size,
        cp_context=cp_context,
    )
