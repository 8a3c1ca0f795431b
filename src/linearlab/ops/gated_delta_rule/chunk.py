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

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from linearlab.ops.common import (
    LOG_FLOOR_TWO_FACTORS,
    TINY_VALUE,
    chunks_per_segment,
    from_chunks,
    segments,
    to_chunks,
)
from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.utils import check_chunk_size, state_dtype

#: Chunks are processed together in segments of about this many elements per ``[n, BH, C, D]``
#: tensor: the cost per token does not grow with T, and the temporaries are bounded by a segment
#: instead of the sequence. 2**18 (64 tiles of 64 x 64 per batched op) measured 7-15% faster than
#: 2**16 at T = 2048 (B=1, H=4, K=V=64, 1 thread, CPU time, repeated sweeps): a segment runs ~140
#: small ops with a fixed cost each, and batched 64 x 64 matmuls keep their rate up to ~64 tiles.
SEGMENT_ELEMENTS = 2**18


def _to_chunks(x: torch.Tensor, C: int, dt: torch.dtype) -> torch.Tensor:
    """``[B, T, H, D] -> [NC, B*H, C, D]`` (time zero-padded to a multiple of C).

    With B == 1 (and no padding or cast) this is a strided view of ``x``; :func:`_dense` makes it
    contiguous for the batched matmuls.
    """
    return to_chunks(x, C, dtype=dt).flatten(1, 2)


def _dense(x: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """A contiguous copy (optionally scaled): a strided operand would be copied again by every
    batched matmul that reads it. Scaling writes the dense copy in the same pass."""
    return x.contiguous() if scale is None else torch.mul(x, scale)


def _from_chunks(x: torch.Tensor, B: int, H: int, T: int) -> torch.Tensor:
    """``[NC, B*H, C, D] -> [B, T, H, D]`` (drops the padding)."""
    return from_chunks(x.unflatten(1, (B, H)), T)


# ------------------------------------------------------------------------------ cached constants

#: ``(C, dtype, device) -> (causal, strict, neg_upper)``: float ``[C, C]`` masks (1 on/below resp.
#: strictly below the diagonal, else 0) and the additive ``neg_upper`` (0 on/below, -inf above).
#: Built once instead of on every call; read-only (no caller writes into them), so sharing is safe.
_MASKS: dict[tuple[int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
#: ``(C, dtype, device) -> I_C``, the right-hand side of the small triangular inversions.
_EYES: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
#: The single-chunk path runs the rows of ``B*H`` in groups of this many ``C x C`` tiles, so each
#: batched op's operands stay closer to the core's cache. At T = 64 (B=64, H=2, K=V=32: 128 tiles)
#: the op's forward+backward took 25 ms in groups of 32 vs 27-28 ms in one batch (CPU time, 1
#: thread, best of 12, interleaved); groups of 16 or 8 paid more per-op overhead than they saved.
SINGLE_GROUP = 32
#: Up to this size the unit-lower inverse is one LAPACK solve; above it, block recursion (matmuls).
_SOLVE_BASE = 32


def _masks(
    C: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(causal, strict, neg_upper)``, each ``[C, C]`` in ``dtype`` on ``device`` (cached, read-only).

    Float masks applied by multiply/add, not bool masks: on CPU ``masked_fill_`` and comparisons
    that produce bool tensors run 10-30x slower than a float multiply of the same size.
    """
    key = (C, dtype, device)
    m = _MASKS.get(key)
    if m is None:
        causal = torch.ones(C, C, dtype=dtype, device=device).tril_()
        strict = causal.tril(-1)
        neg_upper = torch.full((C, C), float("-inf"), dtype=dtype, device=device).triu_(1)
        m = _MASKS[key] = (causal, strict, neg_upper)
    return m


def _eye(C: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``I_C`` in ``dtype`` on ``device`` (cached, read-only)."""
    key = (C, dtype, device)
    e = _EYES.get(key)
    if e is None:
        e = _EYES[key] = torch.eye(C, dtype=dtype, device=device)
    return e


# ------------------------------------------------------------------------------ flushing

#: ``exp`` results at or below this are the clamped floor ``exp(LOG_FLOOR_TWO_FACTORS)`` (1% margin
#: for the last-bit differences of vectorised ``exp``): :func:`_exp_flushed_` sets them to 0.
_FLOOR_VALUE = {dt: 1.01 * math.exp(floor) for dt, floor in LOG_FLOOR_TWO_FACTORS.items()}


def _exp_flushed_(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` in place, exponents below ``LOG_FLOOR_TWO_FACTORS`` (and -inf) giving exactly 0.

    As :func:`linearlab.ops.common.exp_flush_` (CPU ``exp`` is several times slower on -inf inputs
    and subnormal results, so it only sees clamped inputs), but with float ops only: clamp, exp,
    then ``threshold_`` zeroes the clamped entries. The bool mask and ``masked_fill_`` it replaces
    cost ~10x a float pass.
    """
    x.clamp_(min=LOG_FLOOR_TWO_FACTORS[x.dtype]).exp_()
    return F.threshold_(x, _FLOOR_VALUE[x.dtype], 0.0)


def _flush_tiny_(x: torch.Tensor) -> torch.Tensor:
    """Zero the entries smaller in magnitude than ``TINY_VALUE`` in place, with float ops only
    (``|x| > tiny`` as a 0/1 float factor; ~5x cheaper than ``masked_fill_`` with a bool mask)."""
    return x.mul_(x.abs().gt_(TINY_VALUE[x.dtype]))


# ------------------------------------------------------------------------------ decays


def _gate_factors(b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(head, tail, whole)`` from chunk-local cumulative log gates ``b: [n, BH, C]``.

    ``head = exp(b)`` (decay since the chunk start) and ``tail = exp(b_last - b)`` (decay to the
    chunk end), both ``[n, BH, C, 1]``; ``whole = exp(b_last)`` ``[n, BH, 1, 1]``. Decays below
    ``exp(LOG_FLOOR_TWO_FACTORS)`` are flushed to 0 (see :func:`_exp_flushed_`).
    """
    b_last = b[..., -1:]
    return (
        _exp_flushed_(b.clone()).unsqueeze(-1),  # b is saved for backward: not in place
        _exp_flushed_(b_last - b).unsqueeze(-1),
        _exp_flushed_(b_last.clone()).unsqueeze(-1),
    )


def _decay_matrix(b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``D [n, BH, C, C]`` with ``D_ij = exp(b_i - b_j)`` for ``j <= i`` and 0 above, into ``out``.

    Decays below ``exp(LOG_FLOOR_TWO_FACTORS)`` are flushed to exactly 0: far below the dtype's
    resolution next to the current token's own term (factor 1), and left alone they (or products
    of two of them) become subnormal numbers, which made strong gates 2-5x slower. The upper
    triangle gets -inf BEFORE exp (its positive differences could overflow), by adding a cached
    mask; the clamp then maps it to the floor and the flush to 0: four float passes in all.
    """
    neg_upper = _masks(b.shape[-1], b.dtype, b.device)[2]
    torch.sub(b.unsqueeze(-1), b.unsqueeze(-2), out=out)
    return _exp_flushed_(out.add_(neg_upper))


# ------------------------------------------------------------------------------ UT transform


def _unit_lower_inverse(lower: torch.Tensor) -> torch.Tensor:
    """``(I + lower)^-1`` for strictly lower ``lower: [..., C, C]`` (the result is unit lower).

    Block recursion ``[[L11, 0], [L21, L22]]^-1 = [[X11, 0], [-X22 L21 X11, X22]]`` down to blocks
    of ``_SOLVE_BASE``, inverted by one batched LAPACK solve each: the off-diagonal blocks are
    batched matmuls, which run several times faster than ``solve_triangular`` (LAPACK's trsm on
    64 x 64 tiles reaches a fraction of the matmul rate). The inverse is kept for the backward,
    where the transposed solve becomes one matmul. Measured (CPU time, 1 thread, C = 64): for 128
    tiles and K = V = 32 (T = 64), inverse ~3 ms + matmul 1.7 ms vs a 4.8 ms direct solve of
    ``[W, U]`` (the single-chunk path needs only U, 0.9 ms), and 1.6 ms vs 4.2 ms in the backward;
    for 64 tiles and K = V = 64, 3.1 vs 2.6 ms forward, 2.1 vs 2.5 ms backward. A Neumann-doubling
    product (log2(C) squarings) was 4-5x slower than the solve. Base 32 vs 16 was within noise.
    """
    C = lower.shape[-1]
    if C <= _SOLVE_BASE:
        # X^T (I + L)^T = I: LAPACK wants column-major operands, which the transposed views of
        # our row-major tensors already are, so no layout copies.
        eye = _eye(C, lower.dtype, lower.device).expand(lower.shape)
        return torch.linalg.solve_triangular(lower.mT, eye, upper=True, left=False, unitriangular=True).mT
    h = C // 2
    X = lower.new_empty(lower.shape)
    X[..., :h, h:] = 0
    X11, X22 = X[..., :h, :h], X[..., h:, h:]
    X11.copy_(_unit_lower_inverse(lower[..., :h, :h]))
    X22.copy_(_unit_lower_inverse(lower[..., h:, h:]))
    X[..., h:, :h] = (X22 @ (lower[..., h:, :h] @ X11)).neg_()
    return X


def _bmm_add_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``out += alpha * a @ b`` in place for contiguous ``[..., m, n]`` tensors (one ``baddbmm_``
    over the flattened batch dims: no temporary product and no separate add pass)."""
    out.view(-1, *out.shape[-2:]).baddbmm_(
        a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:]), alpha=alpha
    )
    return out


def _forward_segment(qc, kc, vc, bc, b, S, states, wu, vn, o, Dm, Ti, Pm, Em):
    """Forward over one segment of chunks; writes ``states, wu, vn, o`` and the saved ``[C, C]``
    factors (the decay matrix ``Dm`` when gated, the inverse ``Ti``, ``Pm = (Q K^T) * D`` and
    ``Em = (K K^T) * D``; ungated ``Em = K K^T``, of which only the strict lower part is ever
    read) in place, returns the state.

    Shapes: ``qc, kc: [n, BH, C, K]`` (qc already scaled), ``vc: [n, BH, C, V]``,
    ``bc: [n, BH, C, 1]``, ``b: [n, BH, C]`` or None, ``S: [BH, K, V]``, the rest ``[n, BH, C, C]``.
    """
    n, BH, C, K = kc.shape
    causal, strict, _ = _masks(C, kc.dtype, kc.device)
    gated = b is not None
    if gated:
        D = _decay_matrix(b, out=Dm)
        head, tail, whole = _gate_factors(b)
    else:
        D, head, tail, whole = causal, None, None, None
    # UT transform: A = I + tril(diag(beta) (K K^T * D), -1) and
    # [W, U] = A^-1 [diag(beta * head) K, diag(beta) V].
    torch.matmul(kc, kc.mT, out=Em)
    if gated:  # ungated, D is the causal mask, which the strict mask below contains
        Em.mul_(D)
    Ti.copy_(_unit_lower_inverse(torch.mul(Em, bc).mul_(strict)))
    rhs = torch.cat([kc * (bc if head is None else bc * head), vc * bc], -1)
    torch.matmul(Ti, rhs, out=wu)
    if gated:
        _flush_tiny_(Ti)
        _flush_tiny_(wu)
    w, u = wu[..., :K], wu[..., K:]

    k_sT = (kc if tail is None else kc * tail).mT
    for c in range(n):
        states[c] = S
        torch.baddbmm(u[c], w[c], S, alpha=-1.0, out=vn[c])  # pseudo-values U - W S
        S = torch.baddbmm(S if whole is None else S * whole[c], k_sT[c], vn[c])

    torch.matmul(qc if head is None else qc * head, states, out=o)
    _bmm_add_(o, torch.matmul(qc, kc.mT, out=Pm).mul_(D), vn)
    return S


def _ut_backward_(
    Ti: Tensor, dX: Tensor, X: Tensor, E: Tensor, strict: Tensor, bc: Tensor,
    D: Tensor | None, M: Tensor | None, kc: Tensor, dk: Tensor, dbeta: Tensor,
) -> Tensor:  # fmt: skip
    """Backward of the UT transform ``X = A^-1 R`` with ``A = I + strict(beta (E * D))``.

    ``dR = A^-T dX`` (one matmul with the saved inverse ``Ti = A^-1``) and ``dA = -dR X^T`` (strict
    lower part), whose contributions are written in place: ``dbeta`` (set), ``dk`` (+= through
    ``E = K K^T``) and, when gated (``D``, ``M`` not None), ``M`` (+= the grad of ``D`` times ``D``).
    Returns ``dR``. Shapes: ``Ti, E, D, M: [n, BH, C, C]``, ``dX, X: [n, BH, C, F]``, ``kc: [n, BH,
    C, K]``, ``bc, dbeta: [n, BH, C]`` (``bc`` as ``[n, BH, C, 1]``).
    """
    gated = D is not None and M is not None
    dR = Ti.mT @ dX
    if gated:
        _flush_tiny_(dR)
    dE = (dR @ X.mT).mul_(strict).neg_()  # dA, then scaled by beta below
    dEE = dE * E
    torch.sum(dEE, -1, out=dbeta)
    dE.mul_(bc)
    if gated:  # the grad of D through A = beta (E * D): the same product, times beta
        M.add_(dEE.mul_(bc))
        dE.mul_(D)
    del dEE
    dk.add_((dE + dE.mT) @ kc)
    return dR


def _backward_segment(qc, kc, vc, bc, b, Dm, Ti, Pm, Em, states, wu, vn, doc, dS, dq, dk, dv, dbeta, dg):
    """Backward over one segment (shapes as in :func:`_forward_segment`, ``doc`` like ``vc``).

    ``Dm`` (gated; None otherwise), ``Ti``, ``Pm`` and ``Em`` are the ``[C, C]`` factors saved by
    the forward. ``dS`` is the grad of the state leaving the segment; writes ``dq, dk, dv, dbeta`` (and
    ``dg`` when gated, all for the chunk-local tensors) in place and returns the grad of the
    entering state.
    """
    n, BH, C, K = kc.shape
    gated = b is not None
    causal, strict, _ = _masks(C, kc.dtype, kc.device)
    if gated:
        D = Dm
        head, tail, whole = _gate_factors(b)
    else:
        D, head, tail, whole = causal, None, None, None

    # o = (head Q) S_c + P Vn  with  P = (Q K^T) * D.
    dP = doc @ vn.mT
    M = dP * Pm if gated else None  # grad of D through P, times D
    dvn = Pm.mT @ doc
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

    dR = _ut_backward_(Ti, dwu, wu, Em, strict, bc, D, M, kc, dk, dbeta)
    del dwu
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


def _forward_single(
    qc: Tensor, kc: Tensor, vc: Tensor, bc: Tensor, b: Tensor | None, o: Tensor, S: Tensor
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """Forward of a batch that is one chunk with no initial state (``T <= C``, the short
    sequences of training): the state entering the chunk is 0, so the pseudo-values are
    ``U`` itself and ``W`` (which only ever multiplies that state) is never formed; this skips
    half of the UT solve's right-hand side and the two matmuls with the entering state.

    Shapes: ``qc, kc: [1, BH, C, K]`` (qc already scaled), ``vc: [1, BH, C, V]``,
    ``bc: [1, BH, C, 1]``, ``b: [1, BH, C]`` or None. Writes the output ``o: [1, BH, C, V]`` and
    the final state ``S: [1, BH, K, V]`` in place (slices of the whole batch's buffers: no
    concatenation afterwards) and returns ``(U, D, Ti, P, E)``: ``U``, the decay matrix (None
    ungated), ``(I + A)^-1``, ``P = (Q K^T) * D`` and ``E = (K K^T) * D`` (all ``[1, BH, C, C]``;
    ungated ``E = K K^T``, of which only the strict lower part is read).
    """
    C = kc.shape[-2]
    causal, strict, _ = _masks(C, kc.dtype, kc.device)
    gated = b is not None
    if gated:
        D = _decay_matrix(b, out=kc.new_empty((*b.shape, C)))
        _, tail, _ = _gate_factors(b)
    else:
        D, tail = causal, None
    E = kc @ kc.mT
    if gated:
        E.mul_(D)
    Ti = _unit_lower_inverse(torch.mul(E, bc).mul_(strict))
    u = Ti @ (vc * bc)  # U = A^-1 diag(beta) V
    if gated:
        _flush_tiny_(Ti)
        _flush_tiny_(u)
    torch.matmul((kc if tail is None else kc * tail).mT, u, out=S)  # S = K_s^T U (entering state 0)
    P = (qc @ kc.mT).mul_(D)
    torch.matmul(P, u, out=o)
    return u, (D if gated else None), Ti, P, E


def _backward_single(
    qc: Tensor, kc: Tensor, vc: Tensor, bc: Tensor, b: Tensor | None,
    D: Tensor | None, Ti: Tensor, P: Tensor, E: Tensor, u: Tensor, doc: Tensor | None, dS: Tensor | None,
    dq: Tensor, dk: Tensor, dv: Tensor, dbeta: Tensor, dg: Tensor | None,
) -> None:  # fmt: skip
    """Backward of :func:`_forward_single`. ``doc`` (grad of ``o``) and ``dS`` (grad of the final
    state ``[BH, K, V]``) may be None (no gradient flows into that output: its work is skipped).

    Writes ``dq, dk, dv, dbeta`` and (gated; else None) ``dg`` in place, for the chunk-local
    tensors (``dq`` for the scaled queries).
    """
    n, BH, C, K = kc.shape
    gated = b is not None
    causal, strict, _ = _masks(C, kc.dtype, kc.device)
    if gated:  # the head decay only ever multiplies the (zero) entering state
        _, tail, _ = _gate_factors(b)
    else:
        D, tail = causal, None

    # o = P U  with  P = (Q K^T) * D.
    if doc is not None:
        dP = doc @ u.mT
        M = dP * P if gated else None  # grad of D through P, times D
        du = P.mT @ doc
        dQK = dP.mul_(D)
        torch.matmul(dQK, kc, out=dq)
        torch.matmul(dQK.mT, qc, out=dk)
        del dQK, dP
    else:
        M = torch.zeros_like(D) if gated else None
        du = torch.zeros_like(u)
        dq.zero_()
        dk.zero_()
    # S = K_s^T U  with  K_s = K * tail.
    d_tail = None
    if dS is not None:
        k_s = kc if tail is None else kc * tail
        _bmm_add_(du, k_s, dS.unsqueeze(0))
        dk_s = u @ dS.mT.unsqueeze(0)
        if gated:
            d_tail = (dk_s * kc).sum(-1)
            dk_s.mul_(tail)
        dk.add_(dk_s)
        del k_s, dk_s

    # U part only: W is never formed on this path, so its gradient is 0
    dR_v = _ut_backward_(Ti, du, u, E, strict, bc, D, M, kc, dk, dbeta)
    torch.mul(dR_v, bc, out=dv)
    dbeta.add_((dR_v * vc).sum(-1))
    if not gated:
        return
    # Chain rule through the exp(.) of the cumulative gate b (D and tail), then the cumsum.
    db = M.sum(-1) - M.sum(-2)
    if d_tail is not None:
        tl = tail.squeeze(-1)
        db.sub_(d_tail * tl)
        db[..., -1] += (d_tail * tl).sum(-1)
    dg.copy_(db.flip(-1).cumsum(-1).flip(-1))  # b = cumsum(g) within the chunk


class _ChunkGatedDeltaRule(torch.autograd.Function):
    """Chunked gated delta rule with a hand-written backward (``g = None`` means ungated).

    Saved for backward: the chunked inputs (dense, q scaled), the state entering each chunk, the WY factors
    ``[W, U]``, the pseudo-values, ``(I + A)^-1`` and (gated) the decay matrix; everything else
    is recomputed per segment of chunks. The two ``[NC, BH, C, C]`` tensors cost no more memory
    than ``[W, U]`` for ``C <= K + V`` and save the backward a triangular solve and the exp pass.
    One chunk with no initial state (``T <= C``) takes the shorter :func:`_forward_single` path,
    in groups of ``SINGLE_GROUP`` rows of ``B*H``.
    Gradients are not materialised: an output that does not reach the loss (typically the final
    state) arrives as None, and the work for it is skipped.
    """

    @staticmethod
    def forward(ctx, q, k, v, g, beta, h0, scale: float, C: int):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dt = state_dtype(q)
        # Zero padding is harmless: padded tokens have beta = 0 and k = 0 (no write), g = 0 (no decay).
        # Dense (and q scaled) once for forward and backward: for B == 1 the chunked views are
        # strided, and copying each segment in both passes cost more than keeping the copies.
        qc = _dense(_to_chunks(q, C, dt), scale)
        kc = _dense(_to_chunks(k, C, dt))
        vc = _dense(_to_chunks(v, C, dt))
        bc = _to_chunks(beta.unsqueeze(-1), C, dt)  # [NC, BH, C, 1]
        b = None if g is None else _to_chunks(g.unsqueeze(-1), C, dt).squeeze(-1).cumsum(-1)
        NC, BH = qc.shape[:2]
        ctx.set_materialize_grads(False)
        ctx.meta = (B, T, H, C, scale, q.dtype, k.dtype, v.dtype, beta.dtype, None if g is None else g.dtype)
        ctx.single = NC == 1 and h0 is None
        if ctx.single:
            o, S = vc.new_empty(vc.shape), vc.new_empty((1, BH, K, V))
            ctx.groups = []
            for r0, r1 in segments(BH, SINGLE_GROUP):
                r = slice(r0, r1)
                # (U, D, Ti, P, E) of the group: intermediates, kept on ctx (not inputs or outputs)
                ctx.groups.append(
                    _forward_single(
                        qc[:, r],
                        kc[:, r],
                        vc[:, r],
                        bc[:, r],
                        None if b is None else b[:, r],
                        o[:, r],
                        S[:, r],
                    )
                )
            ctx.save_for_backward(qc, kc, vc, bc, b)
            return _from_chunks(o, B, H, T).to(q.dtype), S.reshape(B, H, K, V)
        S = torch.zeros(BH, K, V, dtype=dt, device=q.device) if h0 is None else h0.to(dt).reshape(BH, K, V)
        states = vc.new_empty((NC, BH, K, V))  # state entering each chunk
        wu = vc.new_empty((NC, BH, C, K + V))
        vn = vc.new_empty((NC, BH, C, V))  # pseudo-values U - W S
        o = torch.empty_like(vn)
        Ti = vc.new_empty((NC, BH, C, C))  # (I + A)^-1 per chunk
        Dm = None if b is None else torch.empty_like(Ti)  # decay matrix per chunk
        Pm, Em = torch.empty_like(Ti), torch.empty_like(Ti)  # (Q K^T) * D and (K K^T) * D
        per = chunks_per_segment(C, SEGMENT_ELEMENTS, BH * max(K, V, C))
        for n0, n1 in segments(NC, per):
            i = slice(n0, n1)
            S = _forward_segment(
                qc[i], kc[i], vc[i], bc[i], None if b is None else b[i],
                S, states[i], wu[i], vn[i], o[i], None if Dm is None else Dm[i], Ti[i], Pm[i], Em[i],
            )  # fmt: skip
        ctx.save_for_backward(qc, kc, vc, bc, b, states, wu, vn, h0, Dm, Ti, Pm, Em)
        return _from_chunks(o, B, H, T).to(q.dtype), S.reshape(B, H, K, V)

    @staticmethod
    @once_differentiable
    def backward(ctx, do, dht):
        B, T, H, C, scale, q_dt, k_dt, v_dt, beta_dt, g_dt = ctx.meta

        def back(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
            return _from_chunks(x, B, H, T).to(dtype)

        if ctx.single:
            qc, kc, vc, bc, b = ctx.saved_tensors
            BH, K, V = kc.shape[1], kc.shape[-1], vc.shape[-1]
            doc = None if do is None else _dense(_to_chunks(do, C, kc.dtype))
            dS = None if dht is None else dht.to(kc.dtype).reshape(BH, K, V).contiguous()
            dq, dk, dv = torch.empty_like(qc), torch.empty_like(kc), torch.empty_like(vc)
            dbeta = kc.new_empty(kc.shape[:-1])
            dg = None if b is None else torch.empty_like(b)
            for (r0, r1), (u, Dm, Ti, Pm, Em) in zip(segments(BH, SINGLE_GROUP), ctx.groups):
                r = slice(r0, r1)
                _backward_single(
                    qc[:, r], kc[:, r], vc[:, r], bc[:, r], None if b is None else b[:, r],
                    Dm, Ti, Pm, Em, u, None if doc is None else doc[:, r], None if dS is None else dS[r],
                    dq[:, r], dk[:, r], dv[:, r], dbeta[:, r], None if dg is None else dg[:, r],
                )  # fmt: skip
            del ctx.groups
            h0 = None
        else:
            qc, kc, vc, bc, b, states, wu, vn, h0, Dm, Ti, Pm, Em = ctx.saved_tensors
            dq, dk, dv, dbeta, dg, dS = _backward_chunks(
                qc, kc, vc, bc, b, states, wu, vn, Dm, Ti, Pm, Em, do, dht, C
            )
        return (
            back(dq.mul_(scale), q_dt),
            back(dk, k_dt),
            back(dv, v_dt),
            None if dg is None else back(dg.unsqueeze(-1), g_dt).squeeze(-1),
            back(dbeta.unsqueeze(-1), beta_dt).squeeze(-1),
            None if h0 is None else dS.reshape(B, H, *dS.shape[-2:]).to(h0.dtype),
            None,
            None,
        )


def _backward_chunks(
    qc: Tensor, kc: Tensor, vc: Tensor, bc: Tensor, b: Tensor | None, states: Tensor, wu: Tensor, vn: Tensor,
    Dm: Tensor | None, Ti: Tensor, Pm: Tensor, Em: Tensor, do: Tensor | None, dht: Tensor | None, C: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor]:  # fmt: skip
    """The multi-chunk backward: runs :func:`_backward_segment` over the segments in reverse.

    ``do`` and ``dht`` (grads of the output and of the final state) may be None (taken as 0).
    Returns ``(dq, dk, dv, dbeta, dg, dS)`` for the chunk-local tensors (``dq`` for the scaled
    queries, ``dg`` None when ungated), ``dS: [BH, K, V]`` being the grad of the initial state.
    """
    NC, BH, _, K = kc.shape
    V = vc.shape[-1]
    doc = torch.zeros_like(vn) if do is None else _to_chunks(do, C, kc.dtype)
    dq, dk = kc.new_empty(kc.shape), kc.new_empty(kc.shape)
    dv = vc.new_empty(vc.shape)
    dbeta = kc.new_empty((NC, BH, C))
    dg = None if b is None else torch.empty_like(b)
    # contiguous: an expanded dht (e.g. from ht.sum()) would send baddbmm_ down a slow path
    dS = kc.new_zeros((BH, K, V)) if dht is None else dht.to(kc.dtype).reshape(BH, K, V).contiguous()
    per = chunks_per_segment(C, SEGMENT_ELEMENTS, BH * max(K, V, C))
    for n0, n1 in reversed(segments(NC, per)):
        i = slice(n0, n1)
        dS = _backward_segment(
            qc[i], kc[i], vc[i], bc[i], None if b is None else b[i],
            None if Dm is None else Dm[i], Ti[i], Pm[i], Em[i], states[i], wu[i], vn[i], _dense(doc[i]),
            dS, dq[i], dk[i], dv[i], dbeta[i], None if dg is None else dg[i],
        )  # fmt: skip
    return dq, dk, dv, dbeta, dg, dS


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
