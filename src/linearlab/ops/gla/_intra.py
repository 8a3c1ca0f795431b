"""Decay factors and intra-chunk scores of chunked GLA (secondary chunking), with their backward.

Inside a chunk, ``l`` is the chunk-local cumsum of the log gate ``g`` (``[.., n, C, K]``) and the
intra-chunk score is ``A_ij = sum_k q_ik k_jk exp(l_ik - l_jk)`` for ``j <= i``. Three forms, picked
per segment from how far the decay runs inside a block (the "span", ``l_first - l_last >= 0``):

- ``"whole"``: every chunk spans at most ``SAFE_SPAN`` from its start: one matmul per chunk,
  ``(q * exp(l)) @ (k * exp(-l))^T``, all factors within ``exp(+-SAFE_SPAN)``.
- ``"sub"``: sub-chunks of 16 with reference ``r`` = the first token of the query's sub-chunk:
  ``(q_i * exp(l_i - l_r)) . (k_j * exp(l_r - l_j))``, exponents ``<= 0`` for earlier sub-chunks
  and bounded by ``SAFE_SPAN`` inside the (diagonal) sub-chunk itself.
- ``"exact"``: as ``"sub"`` for earlier sub-chunks, but the diagonal 16x16 blocks are computed
  from pairwise differences ``l_i - l_j`` over the strictly causal pairs only (no masking needed:
  every exponent is ``<= 0``), plus ``q_i . k_i`` on the diagonal.

Nothing can overflow, whatever the gates. Log-decay differences are formed in float64 and only
then rounded: in float32 a cumsum of strong gates loses the small differences that matter.
"""

from __future__ import annotations

import torch

from linearlab.ops.common import LOG_FLOOR_NORMAL, causal_mask, exp_flush_

SUB = 16  # secondary chunk (sub-chunk) size
# Largest decay span (log space) for which a block is factorised around one reference point:
# factors then lie in [exp(-30), exp(30)], far from float32 over/underflow, and the products
# equal the exact ones up to round-off. Larger spans use finer or exact blocks.
SAFE_SPAN = 30.0


def exp_(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``exp`` of a log decay formed in float64, evaluated in ``dtype``; exponents under
    ``LOG_FLOOR_NORMAL`` give exactly 0 (flushing subnormals) without exp's slow path.

    Most gates never reach the floor, so the flush (two extra passes) runs only when one does.
    """
    y = x.to(dtype)
    if not bool(y.min() < LOG_FLOOR_NORMAL[dtype]):
        return torch.exp(y)
    # ``to`` returns ``x`` itself when it already has ``dtype``: never overwrite the caller's tensor
    return exp_flush_(y.clone() if y is x else y, LOG_FLOOR_NORMAL)


def chunk_cumsum(x: torch.Tensor, reverse: bool = False, exclusive: bool = False) -> torch.Tensor:
    """Cumsum over dim -2 (``reverse``: from the end; ``exclusive``: without the element itself),
    as a matmul with a triangle of ones: much faster than ``cumsum`` over a strided dim on CPU."""
    C = x.shape[-2]
    ones = torch.ones(C, C, dtype=x.dtype, device=x.device)
    shift = -1 if exclusive else 0
    return (ones.triu(-shift) if reverse else ones.tril(shift)) @ x


def intra_plan(ell: torch.Tensor, sub: int) -> str:
    """``"whole"``, ``"sub"`` or ``"exact"`` for chunk-local cumsums ``ell: [.., n, C, K]``."""
    if (-ell[..., -1, :]).max() <= SAFE_SPAN:
        return "whole"
    ell_b = ell.unflatten(-2, (ell.shape[-2] // sub, sub))
    return "exact" if (ell_b[..., 0, :] - ell_b[..., -1, :]).max() > SAFE_SPAN else "sub"


class Gates:
    """Decay factors of one segment, from ``g: [.., n, C, K]`` (compute dtype).

    ``eq = exp(l)`` (query side of the inter-chunk term), ``ek = exp(l_last - l)`` (keys decayed to
    the chunk end), ``decay = exp(l_last): [.., n, 1, K]``; ``mode`` is the intra-chunk form.
    """

    def __init__(self, g: torch.Tensor, sub: int):
        dt = g.dtype
        self.sub = sub
        self.ell = chunk_cumsum(g.double())
        last = self.ell[..., -1:, :]
        self.mode = intra_plan(self.ell, sub)
        self.eq = exp_(self.ell, dt)
        self.decay = exp_(last, dt)
        if self.mode == "whole":  # factors bounded by exp(SAFE_SPAN): ratios are safe and cheap
            self.inv = 1.0 / self.eq
            self.ek = self.decay * self.inv
        else:
            self.ek = exp_(last - self.ell, dt)


class Intra:
    """Intra-chunk scores ``A: [.., n, C, C]`` (causal, diagonal included) and their backward.

    Rows of sub-chunk ``a`` are ``Q = q * q_fac`` and its keys ``Kx[a] = k * k_fac[a]`` (zero for
    keys it must not see in that matmul), so the off-diagonal blocks are ``Q @ Kx^T``.
    ``dtype`` may be wider than the inputs (the exact form's backward runs in float64).
    """

    def __init__(self, qs: torch.Tensor, k: torch.Tensor, gates: Gates, dtype: torch.dtype):
        qs, k = qs.to(dtype), k.to(dtype)
        ell, C = gates.ell, qs.shape[-2]
        self.exact = gates.mode == "exact"
        sub = C if gates.mode == "whole" else gates.sub
        m = C // sub
        self.m, self.sub = m, sub
        self.qs_b = qs.unflatten(-2, (m, sub))  # [.., m, s, K]
        if gates.mode == "whole":  # reference point: the chunk start (l = 0)
            self.q_fac = gates.eq.to(dtype).unsqueeze(-3)  # [.., 1, C, K]
            self.k_fac = gates.inv.to(dtype).unsqueeze(-3)
        else:
            ell_b = ell.unflatten(-2, (m, sub))
            ref = ell_b[..., :1, :]  # [.., m, 1, K]: first token of each sub-chunk
            self.q_fac = exp_(ell_b - ref, dtype)  # <= 1
            pos = torch.arange(C, device=ell.device)
            limit = (torch.arange(m, device=ell.device) + (0 if self.exact else 1)) * sub
            keep = (pos[None, :] < limit[:, None])[..., None]  # [m, C, 1]: keys per sub-chunk
            diff = (ref - ell[..., None, :, :]).masked_fill(~keep, float("-inf"))  # mask BEFORE exp
            self.k_fac = exp_(diff, dtype)  # [.., m, C, K]
        self.Q = self.qs_b * self.q_fac
        self.Kx = k[..., None, :, :] * self.k_fac
        if self.exact:
            ii, jj = torch.tril_indices(sub, sub, offset=-1, device=ell.device)  # P pairs i > j
            self.flat = ii * sub + jj
            # Gathers and scatter-adds over the pairs as matmuls with one-hot [P, s] matrices:
            # much faster on CPU than indexing a middle dim (and exact: one nonzero per row).
            sel_i = torch.nn.functional.one_hot(ii, sub).to(dtype)
            sel_j = torch.nn.functional.one_hot(jj, sub).to(dtype)
            self.to_i, self.to_j = sel_i.T, sel_j.T
            self.k_b = k.unflatten(-2, (m, sub))
            self.q_i, self.k_j = sel_i @ self.qs_b, sel_j @ self.k_b  # [.., m, P, K]
            pair_diff = (sel_i - sel_j).to(ell.dtype)  # rows pick l_i - l_j, formed in float64
            self.E = exp_(pair_diff @ ell.unflatten(-2, (m, sub)), dtype)  # exponents <= 0

    def scores(self) -> torch.Tensor:
        """``A: [.., n, C, C]``, zero above the diagonal."""
        C, s = self.m * self.sub, self.sub
        A = (self.Q @ self.Kx.transpose(-1, -2)).flatten(-3, -2)
        if self.exact:
            pairs = (self.q_i * self.k_j * self.E).sum(-1)  # [.., m, P]
            diag = pairs.new_zeros(*pairs.shape[:-1], s * s)
            diag.index_copy_(-1, self.flat, pairs)
            diag = diag.unflatten(-1, (s, s))
            diag.diagonal(dim1=-2, dim2=-1).copy_((self.qs_b * self.k_b).sum(-1))  # exp(0) = 1
            blocks = A.unflatten(-1, (self.m, s)).unflatten(-3, (self.m, s))
            blocks.diagonal(dim1=-4, dim2=-2).add_(diag.movedim(-3, -1))
        return A.masked_fill_(~causal_mask(C, A.device), 0.0)

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
