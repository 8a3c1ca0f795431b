"""Chunked (WY / UT transform) gated delta rule: the training path, shared with the delta rule.

See ``README.md`` for the derivation. Layout inside: every per-token tensor is reshaped to
``[NC, B*H, C, D]`` (NC chunks of C tokens), so all intra-chunk work (Gram matrices, the unit
lower-triangular solve, decays) is one batched op over all chunks, and the sequential scan over
chunks reads contiguous ``[B*H, C, D]`` slices and does two small matmuls per chunk.
"""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import check_chunk_size, validate_and_run
from linearlab.ops.utils import pad_time, state_dtype


def _to_chunks(x: torch.Tensor, C: int, dt: torch.dtype) -> torch.Tensor:
    """``[B, T, H, D] -> [NC, B*H, C, D]`` (time zero-padded to a multiple of C)."""
    B, _, H, D = x.shape
    x = pad_time(x.to(dt), C)
    NC = x.shape[1] // C
    return x.reshape(B, NC, C, H, D).permute(1, 0, 3, 2, 4).reshape(NC, B * H, C, D)


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
    """Unchecked chunked forward (autograd flows through it); ``g=None`` is the delta rule."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    dt = state_dtype(q)
    # Zero padding is harmless: padded tokens have beta = 0 and k = 0 (no write) and g = 0 (no decay).
    qc = _to_chunks(q, C, dt) * scale
    kc = _to_chunks(k, C, dt)
    vc = _to_chunks(v, C, dt)
    bc = _to_chunks(beta.unsqueeze(-1), C, dt)  # [NC, BH, C, 1]
    NC = qc.shape[0]

    kt = kc.transpose(-1, -2)
    kk = kc @ kt  # [NC, BH, C, C]
    qk = qc @ kt
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    if g is None:
        k_w, q_s, k_s, chunk_decay = kc, qc, kc, None
        qk = qk.masked_fill(~causal, 0.0)
    else:
        b = _to_chunks(g.unsqueeze(-1), C, dt).squeeze(-1).cumsum(-1)  # [NC, BH, C] chunk-local
        # exp(b_i - b_j) for j <= i; the mask goes on BEFORE exp so the (positive) upper
        # triangle can never overflow.
        diff = (b.unsqueeze(-1) - b.unsqueeze(-2)).masked_fill(~causal, float("-inf"))
        decay = diff.exp()
        kk = kk * decay
        qk = qk * decay
        b_last = b[..., -1:]
        q_s = qc * b.exp().unsqueeze(-1)  # decay from the chunk start
        k_w = kc * b.exp().unsqueeze(-1)
        k_s = kc * (b_last - b).exp().unsqueeze(-1)  # decay to the chunk end
        chunk_decay = b_last.exp().unsqueeze(-1)  # [NC, BH, 1, 1]

    # UT transform: T = (I + tril(diag(beta) K K^T, -1))^-1 diag(beta); W = T K_w, U = T V.
    # solve_triangular(unitriangular=True) ignores the diagonal, so the strict lower part suffices.
    lower = (bc * kk).tril(-1)
    rhs = torch.cat([bc * k_w, bc * vc], dim=-1)
    wu = torch.linalg.solve_triangular(lower, rhs, upper=False, unitriangular=True)
    w, u = wu[..., :K], wu[..., K:]

    if initial_state is None:
        S = torch.zeros(B * H, K, V, dtype=dt, device=q.device)
    else:
        S = initial_state.to(dt).reshape(B * H, K, V)
    k_st = k_s.transpose(-1, -2)
    states, new_v = [], []
    for c in range(NC):
        states.append(S)
        vn = torch.baddbmm(u[c], w[c], S, alpha=-1.0)  # pseudo-values U - W S
        new_v.append(vn)
        S_dec = S if chunk_decay is None else S * chunk_decay[c]
        S = torch.baddbmm(S_dec, k_st[c], vn)
    o = q_s @ torch.stack(states) + qk @ torch.stack(new_v)  # [NC, BH, C, V]
    o = o.reshape(NC, B, H, C, V).permute(1, 0, 3, 2, 4).reshape(B, NC * C, H, V)[:, :T]
    return o.to(q.dtype), (S.reshape(B, H, K, V) if output_final_state else None)


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
    cu_seqlens: torch.LongTensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated delta rule (Gated DeltaNet), chunked with the WY/UT transform: the training path.

    Computes ``S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - k_t exp(g_t) S_{t-1})`` and
    ``o_t = (scale q_t) S_t`` per head, with state ``S: [K, V]``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (float64, float32 or bfloat16; any T).
        g: ``[B, T, H]`` log decay (<= 0). beta: ``[B, T, H]`` delta step size.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (``N = B``, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the final state ``[N, H, K, V]`` (float32; float64 for
            float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).
        chunk_size: tokens per chunk (default 64); results do not depend on it.

    Returns:
        ``(o: [B, T, H, V] in q's dtype, final_state or None)``.

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
        chunk_size=chunk_size,
    )
