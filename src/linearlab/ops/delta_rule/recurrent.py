"""State-passing delta rule for decoding: the gated step loop with no decay."""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.gated_delta_rule.recurrent import recurrent_core


def fused_recurrent_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule as a step loop with a carried state (the decoding path).

    ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = (scale q_t) S_t``.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``; beta: ``[B, T, H]`` step size (None means 1,
            as in fla).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` state to start from (e.g. the last call's final state).
        output_final_state: return the final state ``[N, H, K, V]`` (float32; float64 for float64).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).

    Returns:
        ``(o: [B, T, H, V] in q's dtype, final_state or None)``.

    Example:
        >>> o, state = fused_recurrent_delta_rule(q, k, v, beta, output_final_state=True)
        >>> o1, state = fused_recurrent_delta_rule(q1, k1, v1, b1, initial_state=state,
        ...                                        output_final_state=True)  # one more token
    """
    return validate_and_run(
        recurrent_core,
        q,
        k,
        v,
        None,
        beta,
        scale,
        initial_state,
        output_final_state,
        use_qk_l2norm_in_kernel,
        cu_seqlens,
        batch_varlen=True,
        beta_default_one=True,
    )
