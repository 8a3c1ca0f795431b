"""Token-by-token reference for the gated delta rule: the plain definition, used as ground truth.

Per value head ``j`` (reading query/key head ``i = j // (HV // H)``), with state ``S: [K, V]``,
``D_t = exp(g_t) diag(exp(gk_t)) . diag(exp(gv_t))`` applied as ``S -> exp(g_t) * exp(gk_t)[:, None]
* S * exp(gv_t)[None, :]`` (each gate optional)::

    S'  = D_t(S_{t-1})
    S_t = S' + beta_t k_t^T (v_t - k_t S')
    o_t = (scale q_t) S_t
"""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.utils import state_dtype


def naive_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    scale: float,
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unchecked loop over time; ``g=None`` means no decay (the delta rule).

    ``q, k: [B, T, H, K]``, ``v: [B, T, HV, V]`` with ``HV`` a multiple of ``H`` (value head ``j``
    reads query/key head ``j // (HV // H)``); ``g, beta: [B, T, HV]``, ``gk: [B, T, HV, K]``,
    ``gv: [B, T, HV, V]``; state ``[B, HV, K, V]``.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dt = state_dtype(q)
    out_dtype = q.dtype  # the inputs are cast to the state dtype below; the output keeps q's
    heads = torch.arange(HV, device=q.device) // (HV // H)  # the query/key head of each value head
    q, k = q.to(dt)[:, :, heads], k.to(dt)[:, :, heads]
    v, beta = v.to(dt), beta.to(dt)
    S = torch.zeros(B, HV, K, V, dtype=dt, device=q.device) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t].to(dt).exp()[..., None, None]
        if gk is not None:
            S = S * gk[:, t].to(dt).exp()[..., :, None]
        if gv is not None:
            S = S * gv[:, t].to(dt).exp()[..., None, :]
        pred = torch.einsum("bhk,bhkv->bhv", k[:, t], S)  # what memory recalls for k_t
        u = beta[:, t, :, None] * (v[:, t] - pred)
        S = S + k[:, t, :, :, None] * u[:, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * scale, S))
    o = torch.stack(outs, dim=1).to(out_dtype)
    return o, (S if output_final_state else None)


def naive_recurrent_gated_delta_rule(
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
    gk: torch.Tensor | None = None,
    gv: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference gated delta rule, one token at a time (slow; for tests).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, HV, V]`` (``HV`` a multiple of ``H``: grouped value
            attention, value head ``j`` reads query/key head ``j // (HV // H)``).
        g: ``[B, T, HV]`` log decay (<= 0) or None; ``exp(g)`` multiplies the state each step.
        beta: ``[B, T, HV]`` step size of the delta update (usually in ``(0, 1)``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, HV, K, V]`` (``N = B``, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the final state ``[N, HV, K, V]`` (float32; float64 for
            float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).
        gk: ``[B, T, HV, K]`` per-key log decay (<= 0) or None, as in
            ``fused_recurrent_gated_delta_rule`` (keyword-only: fla's reference has no ``gk``).
        gv: ``[B, T, HV, V]`` per-value log decay (<= 0) or None (keyword-only, likewise).

    Returns:
        ``(o: [B, T, HV, V] in q's dtype, final_state or None)``.

    Note the argument order ``(q, k, v, g, beta)``, the same in every form (fla's naive file uses
    ``beta, g``).
    """
    return validate_and_run(
        naive_core,
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
        gk=gk,
        gv=gv,
        grouped=True,
        native_groups=True,
    )
