"""Chunked Gated Linear Attention (the training path): matmuls inside chunks, a short scan across.

The sequence is cut into chunks of ``C`` tokens. Across chunks a state ``[K, V]`` is passed (one
``addcmul`` per chunk); inside a chunk the per-key decay makes the score
``A_ij = sum_k q_ik k_jk exp(l_ik - l_jk)`` (``l``: chunk-local cumsum of ``g``) not a plain
matmul, so it is computed with GLA's secondary chunking into sub-chunks of 16 (see README.md).

Every exponent evaluated here is ``<= 0``, except in the "factorised" diagonal blocks, which are
only used when the decay inside every sub-chunk spans at most ``_SAFE_SPAN`` (so the largest
factor is ``exp(_SAFE_SPAN)``); otherwise diagonal blocks are computed exactly with masked
pairwise differences (mask before exp). Strong gates therefore cannot overflow.

A custom ``autograd.Function`` with a hand-written backward keeps memory at "inputs + one state
per chunk": intra-chunk tensors are rebuilt segment by segment in the backward pass.
"""

from __future__ import annotations

import torch

from linearlab.ops.utils import (
    check_cu_seqlens,
    check_initial_state,
    check_log_gate,
    check_qkv,
    check_scale,
    run_varlen,
    state_dtype,
)

_SUB = 16  # secondary chunk (sub-chunk) size
_SEGMENT_TOKENS = 2048  # tokens processed together; bounds temporary memory at long T
# Largest decay span (log space, within a block) for which a block is factorised with one
# reference point: factors then lie in [exp(-30), exp(30)], far from float32 over/underflow, and
# the products are exact up to round-off. Larger spans fall back to finer / exact blocks.
_SAFE_SPAN = 30.0


def _to_chunks(x: torch.Tensor, t0: int, t1: int, C: int, dt: torch.dtype) -> torch.Tensor:
    """``x[:, t0:t1]: [B, t, H, D]`` -> ``[B, H, n, C, D]`` in dtype ``dt`` (zero-padded in time)."""
    seg = x[:, t0:t1].to(dt)
    pad = (-(t1 - t0)) % C
    if pad:
        seg = torch.cat([seg, seg.new_zeros(seg.shape[0], pad, *seg.shape[2:])], dim=1)
    B, t, H, D = seg.shape
    return seg.reshape(B, t // C, C, H, D).permute(0, 3, 1, 2, 4).contiguous()


def _from_chunks(y: torch.Tensor, t: int) -> torch.Tensor:
    """``[B, H, n, C, D]`` -> ``[B, t, H, D]`` (drops the padding)."""
    B, H, n, C, D = y.shape
    return y.permute(0, 2, 3, 1, 4).reshape(B, n * C, H, D)[:, :t]


class _Intra:
    """Intra-chunk scores ``A: [.., n, C, C]`` by secondary chunking, and their backward.

    Sub-chunk ``a`` uses its first token ``r_a`` as reference point: rows get
    ``q_i * exp(l_i - l_r)`` and keys ``k_j * exp(l_r - l_j)``. For keys in earlier sub-chunks both
    exponents are <= 0. Keys in sub-chunk ``a`` itself (the diagonal block) are included in that
    matmul only when the span is safe (``exact=False``); otherwise they are dropped there and the
    diagonal block is computed exactly: its strictly-causal pairs ``i > j`` (gathered, so every
    exponent ``l_i - l_j`` is <= 0 and nothing needs masking) plus ``q_i . k_i`` on the diagonal.
    """

    def __init__(self, qs: torch.Tensor, k: torch.Tensor, ell: torch.Tensor, sub: int, exact: bool):
        C, K = ell.shape[-2:]
        m = C // sub
        self.m, self.sub, self.exact = m, sub, exact
        self.qs_b = qs.unflatten(-2, (m, sub))  # [.., m, s, K]
        self.k = k
        dt = qs.dtype
        ell_b = ell.unflatten(-2, (m, sub))
        ref = ell_b[..., :1, :]  # [.., m, 1, K]
        self.q_fac = _exp(ell_b - ref, dt)  # <= 1
        pos = torch.arange(C, device=ell.device)
        limit = (torch.arange(m, device=ell.device) + (0 if exact else 1)) * sub
        keep = (pos[None, :] < limit[:, None])[..., None]  # [m, C, 1]: keys allowed per sub-chunk
        diff = ref - ell[..., None, :, :]  # [.., m, C, K]
        if not bool(keep.all()):  # whole-chunk factorisation keeps every key: nothing to mask
            diff = diff.masked_fill(~keep, float("-inf"))  # mask BEFORE exp
        self.k_fac = _exp(diff, dt)
        self.Q = self.qs_b * self.q_fac  # [.., m, s, K]
        self.Kx = k[..., None, :, :] * self.k_fac  # [.., m, C, K]
        if exact:
            ii, jj = torch.tril_indices(sub, sub, offset=-1, device=ell.device)  # P pairs i > j
            self.flat = ii * sub + jj
            # one-hot [s, P] matrices scatter pair terms back to rows i / columns j by matmul
            self.to_i = torch.nn.functional.one_hot(ii, sub).to(dt).T
            self.to_j = torch.nn.functional.one_hot(jj, sub).to(dt).T
            self.k_b = k.unflatten(-2, (m, sub))
            self.q_i, self.k_j = self.qs_b[..., ii, :], self.k_b[..., jj, :]  # [.., m, P, K]
            self.E = _exp(ell_b[..., ii, :] - ell_b[..., jj, :], dt)  # exponents <= 0

    def scores(self) -> torch.Tensor:
        C = self.m * self.sub
        A = (self.Q @ self.Kx.transpose(-1, -2)).flatten(-3, -2)  # [.., n, C, C]
        if self.exact:
            s = self.sub
            pairs = (self.q_i * self.k_j * self.E).sum(-1)  # [.., m, P]
            diag = pairs.new_zeros(*pairs.shape[:-1], s * s)
            diag.index_copy_(-1, self.flat, pairs)
            diag = diag.unflatten(-1, (s, s))
            diag.diagonal(dim1=-2, dim2=-1).copy_((self.qs_b * self.k_b).sum(-1))  # exp(0) = 1
            blocks = A.unflatten(-1, (self.m, s)).unflatten(-3, (self.m, s))
            blocks.diagonal(dim1=-4, dim2=-2).add_(diag.movedim(-3, -1))
        causal = torch.ones(C, C, dtype=torch.bool, device=A.device).tril()
        return A.masked_fill_(~causal, 0.0)

    def backward(self, dA: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``dA: [.., n, C, C]``, strictly causal (the caller handles the diagonal ``i == j``,
        which does not involve the gates) -> ``(dqs, dk)``, both ``[.., n, C, K]``."""
        dA4 = dA.unflatten(-2, (self.m, self.sub))  # [.., m, s, C]
        dqs_b = (dA4 @ self.Kx) * self.q_fac
        dk = ((dA4.transpose(-1, -2) @ self.Q) * self.k_fac).sum(-3)
        if self.exact:
            blocks = dA.unflatten(-1, (self.m, self.sub)).unflatten(-3, (self.m, self.sub))
            dA_d = blocks.diagonal(dim1=-4, dim2=-2).movedim(-1, -3).flatten(-2)  # [.., m, s*s]
            P = dA_d.index_select(-1, self.flat)[..., None] * self.E  # [.., m, P, K]
            dqs_b = dqs_b + self.to_i @ (P * self.k_j)
            dk = dk + (self.to_j @ (P * self.q_i)).flatten(-3, -2)
        return dqs_b.flatten(-3, -2), dk


def _intra_plan(ell: torch.Tensor, sub: int) -> tuple[int, bool]:
    """Pick how to compute the intra-chunk scores of a segment: ``(sub-chunk size, exact)``.

    The decay span of a block is ``l_first - l_last`` (>= 0). If every whole chunk spans at most
    ``_SAFE_SPAN``, one reference per chunk is safe (``sub = C``: a single matmul per chunk, the
    common case for ``logsigmoid(x) / 16`` gates). Otherwise use sub-chunks, with factorised
    diagonal blocks if each sub-chunk is safe, else exact diagonal blocks.
    """
    C = ell.shape[-2]
    if (ell[..., 0, :] - ell[..., -1, :]).max() <= _SAFE_SPAN:
        return C, False
    ell_b = ell.unflatten(-2, (C // sub, sub))
    return sub, bool((ell_b[..., 0, :] - ell_b[..., -1, :]).max() > _SAFE_SPAN)


# Below these exponents exp() is subnormal or 0, and CPU exp() takes a slow path (up to 10x).
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0}


def _exp(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``exp`` of a log-decay difference formed in float64, evaluated in the compute dtype.

    Exponents under ``_EXP_FLOOR`` give exactly 0 (flushing subnormals) without the slow path.
    """
    x = x.to(dtype)
    floor = _EXP_FLOOR[dtype]
    if not bool(x.min() < floor):
        return torch.exp(x)
    return torch.exp(x.clamp(min=floor)).masked_fill_(x < floor, 0.0)


def _cumsum(g: torch.Tensor, reverse: bool = False, exclusive: bool = False) -> torch.Tensor:
    """Chunk-local cumsum over dim -2 (``reverse``: from the end; ``exclusive``: without the
    element itself) as a matmul with a triangle of ones: much faster than ``cumsum`` over a
    strided dim on CPU."""
    C = g.shape[-2]
    ones = torch.ones(C, C, dtype=g.dtype, device=g.device)
    shift = -1 if exclusive else 0
    return (ones.triu(-shift) if reverse else ones.tril(shift)) @ g


def _fwd_segment(q, k, v, g, S, scale: float, sub: int):
    """One segment of chunks (``[B, H, n, C, D]``); returns ``(o, S_after, S_before_each_chunk)``."""
    ell = _cumsum(g.double())
    last = ell[..., -1:, :]
    kd = k * _exp(last - ell, k.dtype)  # keys decayed to the chunk end (exponent <= 0)
    U = kd.transpose(-1, -2) @ v  # [.., n, K, V]
    decay = _exp(last, k.dtype).transpose(-1, -2)  # [.., n, K, 1]
    states = []
    for c in range(ell.shape[2]):
        states.append(S)
        S = torch.addcmul(U[:, :, c], decay[:, :, c], S)
    S_prev = torch.stack(states, dim=2)
    qs = q * scale
    o = (qs * _exp(ell, qs.dtype)) @ S_prev
    A = _Intra(qs, k, ell, *_intra_plan(ell, sub)).scores()
    o.add_(A @ v)
    return o, S, S_prev


def _bwd_segment(q, k, v, g, S_prev, do, dS, scale: float, sub: int):
    """Backward of one segment; ``dS`` is the gradient of the state after it. Returns
    ``(dq, dk, dv, dg, dS_before)``."""
    dt = q.dtype
    ell = _cumsum(g.double())
    last = ell[..., -1:, :]
    ek = _exp(last - ell, dt)
    kd = k * ek
    eq = _exp(ell, dt)
    qs = q * scale
    decay = _exp(last, dt).transpose(-1, -2)  # [.., n, K, 1]
    W = (qs * eq).transpose(-1, -2) @ do  # gradient reaching each chunk's incoming state from o
    grads = []
    for c in range(ell.shape[2] - 1, -1, -1):
        grads.append(dS)  # gradient of the state after chunk c
        dS = torch.addcmul(W[:, :, c], decay[:, :, c], dS)
    dS_next = torch.stack(grads[::-1], dim=2)  # [.., n, K, V]
    sub, exact = _intra_plan(ell, sub)
    # Under strong decay the intra-chunk part of dg is a telescoping sum whose terms can be
    # e^10 times larger than the result; float32 round-off would then dominate, so that (already
    # slow, rarely used) exact path runs in float64.
    wide = torch.float64 if exact else qs.dtype
    intra = _Intra(qs.to(wide), k.to(wide), ell.to(wide), sub, exact)
    A = intra.scores().to(qs.dtype)
    C = A.shape[-1]
    dA = do @ v.transpose(-1, -2)
    dA_diag = dA.diagonal(dim1=-2, dim2=-1)[..., None].clone()  # [.., n, C, 1]
    # The diagonal pairs (i == j) have decay exp(0) = 1 whatever g is. They are kept out of the
    # gate gradient below (added to dq, dk afterwards): they are O(1) and would cancel only up to
    # round-off, swamping the tiny true dg under strong decay.
    strict = torch.ones(C, C, dtype=torch.bool, device=A.device).tril(-1)
    dA.masked_fill_(~strict, 0.0)
    dv = A.transpose(-1, -2) @ do + kd @ dS_next
    dk_state = (v @ dS_next.transpose(-1, -2)) * ek
    dqs_intra, dk_intra = intra.backward(dA.to(wide))
    dqs_inter = (do @ S_prev.transpose(-1, -2)) * eq
    # Gate gradient, written so that no O(1) terms cancel: g_t enters l_i for i >= t (query
    # factors exp(l_i): reverse cumsum), the key factors exp(l_last - l_j) for j < t (exclusive
    # cumsum) and the chunk decay exp(l_last). Intra pairs (i, j) give +x*dx at i and -x*dx at j;
    # only strictly causal pairs are present here.
    dg = _cumsum(qs.to(wide) * dqs_intra - k.to(wide) * dk_intra, reverse=True).to(qs.dtype)
    dg += _cumsum(qs * dqs_inter, reverse=True)
    dg += _cumsum(k * dk_state, exclusive=True)
    dg += ((S_prev * dS_next).sum(-1) * decay.squeeze(-1))[..., None, :]
    dqs = dqs_inter + dqs_intra.to(qs.dtype)
    dk_intra = dk_intra.to(qs.dtype)
    dq = (dqs + dA_diag * k) * scale
    dk = dk_state + dk_intra + dA_diag * qs
    return dq, dk, dv, dg, dS


class _ChunkGLAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, h0, scale: float, C: int):
        B, T, H, K = q.shape
        V = v.shape[-1]
        dt = state_dtype(q)
        sub = min(_SUB, C)
        seg = max(C, _SEGMENT_TOKENS // C * C)
        S = q.new_zeros(B, H, K, V, dtype=dt) if h0 is None else h0.to(dt)
        o = q.new_empty(B, T, H, V)
        saved = []
        for t0 in range(0, T, seg):
            t1 = min(T, t0 + seg)
            parts = [_to_chunks(x, t0, t1, C, dt) for x in (q, k, v, g)]
            oc, S, S_prev = _fwd_segment(*parts, S, scale, sub)
            o[:, t0:t1] = _from_chunks(oc, t1 - t0)
            saved.append(S_prev)
        ctx.save_for_backward(q, k, v, g, h0, torch.cat(saved, dim=2))
        ctx.scale, ctx.C, ctx.sub, ctx.seg = scale, C, sub, seg
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dht):
        q, k, v, g, h0, S_all = ctx.saved_tensors
        C, sub, seg, scale = ctx.C, ctx.sub, ctx.seg, ctx.scale
        T = q.shape[1]
        dt = S_all.dtype
        dS = dht.to(dt)
        dq, dk, dv, dg = (torch.empty_like(x) for x in (q, k, v, g))
        starts = list(range(0, T, seg))
        for t0 in reversed(starts):
            t1 = min(T, t0 + seg)
            parts = [_to_chunks(x, t0, t1, C, dt) for x in (q, k, v, g)]
            c0 = t0 // C
            S_prev = S_all[:, :, c0 : c0 + parts[0].shape[2]]
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
    cu_seqlens: torch.LongTensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated Linear Attention with per-key gates, chunked (fast; the training path).

    ``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t`` and ``o_t = (scale q_t) S_t``.

    Args:
        q, k: ``[B, T, H, K]`` queries and keys.
        v: ``[B, T, H, V]`` values.
        g: ``[B, T, H, K]`` per-key log-space decay (``<= 0``), e.g. ``logsigmoid(x) / 16``.
        scale: multiplies ``q``; default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (N = B, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the state after the last token.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (needs ``B == 1``).
        chunk_size: tokens per chunk; at most 16 or a multiple of 16 (default 64). The result
            does not depend on it beyond round-off.

    Returns:
        ``o: [B, T, H, V]`` in the input dtype, and ``final_state: [N, H, K, V]`` (float32, or
        float64 for float64 inputs) or None.

    Example:
        >>> q = k = torch.randn(1, 100, 2, 16); v = torch.randn(1, 100, 2, 8)
        >>> g = torch.nn.functional.logsigmoid(torch.randn(1, 100, 2, 16)) / 16
        >>> o, ht = chunk_gla(q, k, v, g, output_final_state=True)
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_log_gate("g", g, (B, T, H, K), q)
    scale = check_scale(scale, K)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V, q)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, got {chunk_size!r}")
    if chunk_size > _SUB and chunk_size % _SUB:
        raise ValueError(f"chunk_size: must be <= {_SUB} or a multiple of {_SUB}, got {chunk_size}")
    if cu_seqlens is not None:
        return run_varlen(
            lambda q, k, v, g, **kw: _chunk_fixed(q, k, v, g, scale, chunk_size=chunk_size, **kw),
            {"q": q, "k": k, "v": v, "g": g},
            cu_seqlens,
            initial_state,
            output_final_state,
        )
    return _chunk_fixed(q, k, v, g, scale, initial_state, output_final_state, chunk_size)
