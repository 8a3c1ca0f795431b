"""State-passing gated delta rule for decoding (``fused_recurrent_*``).

Everything that does not depend on the state (casts, query scaling, decays) is done once for all
steps; each step is then one scale, two batched mat-vecs and one rank-1 update on a
``[B*H, K, V]`` state, so a ``T == 1`` decoding step costs the same at any context length.
"""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.utils import state_dtype


def recurrent_core(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unchecked step loop; ``g=None`` means no decay (the delta rule)."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    dt = state_dtype(q)
    # [B, T, H, D] -> [T, B*H, 1, D]: each step reads one contiguous slice.
    q_s = (q.to(dt) * scale).transpose(0, 1).reshape(T, B * H, 1, K)
    k_s = k.to(dt).transpose(0, 1).reshape(T, B * H, 1, K)
    v_s = v.to(dt).transpose(0, 1).reshape(T, B * H, 1, V)
    b_s = beta.to(dt).transpose(0, 1).reshape(T, B * H, 1, 1)
    a_s = None if g is None else g.to(dt).exp().transpose(0, 1).reshape(T, B * H, 1, 1)
    if initial_state is None:
        S = torch.zeros(B * H, K, V, dtype=dt, device=q.device)
    else:
        S = initial_state.to(dt).reshape(B * H, K, V)
    outs = []
    for t in range(T):
        if a_s is not None:
            S = S * a_s[t]
        kt = k_s[t]
        u = b_s[t] * (v_s[t] - torch.bmm(kt, S))  # [BH, 1, V]
        S = torch.baddbmm(S, kt.transpose(1, 2), u)
        outs.append(torch.bmm(q_s[t], S))
    o = torch.cat(outs, dim=1) if T > 1 else outs[0]  # [BH, T, V]
    o = o.reshape(B, H, T, V).transpose(1, 2).to(q.dtype)
    return o, (S.reshape(B, H, K, V) if output_final_state else None)


def fused_recurrent_gated_delta_rule(
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
    """Gated delta rule as a step loop with a carried state (the decoding path).

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        g: ``[B, T, H]`` log decay (<= 0). beta: ``[B, T, H]`` delta step size.
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` state to start from (e.g. the last call's final state).
        output_final_state: return the final state ``[N, H, K, V]`` (float32; float64 for float64).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).

    Returns:
        ``(o: [B, T, H, V] in q's dtype, final_state or None)``.

    Example:
        >>> o, state = fused_recurrent_gated_delta_rule(q, k, v, g, beta, output_final_state=True)
        >>> o1, state = fused_recurrent_gated_delta_rule(q1, k1, v1, g1, b1, initial_state=state,
        ...                                              output_final_state=True)  # one more token
    """
    return validate_and_run(
        recurrent_core,
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
    )
