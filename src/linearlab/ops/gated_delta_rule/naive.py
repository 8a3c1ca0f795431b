"""Token-by-token reference for the gated delta rule: the plain definition, used as ground truth.

Per head, with state ``S: [K, V]`` and ``a_t = exp(g_t)``::

    S_t = a_t S_{t-1} + beta_t k_t^T (v_t - k_t a_t S_{t-1})
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unchecked loop over time; ``g=None`` means no decay (the delta rule)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = state_dtype(q)
    out_dtype = q.dtype  # the inputs are cast to the state dtype below; the output keeps q's
    q, k, v, beta = (x.to(dt) for x in (q, k, v, beta))
    S = torch.zeros(B, H, K, V, dtype=dt, device=q.device) if initial_state is None else initial_state.to(dt)
    outs = []
    for t in range(T):
        if g is not None:
            S = S * g[:, t].to(dt).exp()[..., None, None]
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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reference gated delta rule, one token at a time (slow; for tests).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` log decay (<= 0); ``exp(g)`` multiplies the state each step.
        beta: ``[B, T, H]`` step size of the delta update (usually in ``(0, 1)``).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (``N = B``, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the final state ``[N, H, K, V]`` (float32; float64 for
            float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).

    Returns:
        ``(o: [B, T, H, V] in q's dtype, final_state or None)``.

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
    )
