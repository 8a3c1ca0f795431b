"""Chunked (WY / UT transform) delta rule: the gated delta rule's chunk code with no decay."""

from __future__ import annotations

import torch

from linearlab.ops.gated_delta_rule._common import validate_and_run
from linearlab.ops.gated_delta_rule.chunk import chunk_core
from linearlab.ops.utils import check_chunk_size


def chunk_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    cu_seqlens_cpu: torch.LongTensor | None = None,
    *,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Delta rule (DeltaNet), chunked with the WY/UT transform: the training path.

    ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = (scale q_t) S_t`` per head,
    state ``S: [K, V]``. Unlike fla, float32 inputs are accepted.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]`` (float64, float32, bfloat16 or float16; any T).
        beta: ``[B, T, H]`` step size (``(0, 1)`` with L2-normalised keys keeps the state bounded).
        scale: query scale, default ``K ** -0.5``.
        initial_state: ``[N, H, K, V]`` (``N = B``, or the number of sequences with ``cu_seqlens``).
        output_final_state: also return the final state ``[N, H, K, V]`` (float32; float64 for
            float64 inputs).
        use_qk_l2norm_in_kernel: L2-normalise ``q`` and ``k`` over the last dim first.
        cu_seqlens: ``[N + 1]`` offsets of packed sequences (requires ``B == 1``).
        cu_seqlens_cpu: fla's precomputed host copy of ``cu_seqlens``; not needed here, accepted
            when it holds the same boundaries.
        chunk_size: tokens per chunk (default 64); results do not depend on it.

    Returns:
        ``(o: [B, T, H, V] in q's dtype, final_state or None)``.

    Example:
        >>> q, k = torch.randn(2, 100, 4, 64), torch.randn(2, 100, 4, 64)
        >>> v, beta = torch.randn(2, 100, 4, 64), torch.rand(2, 100, 4)
        >>> o, ht = chunk_delta_rule(q, k, v, beta, use_qk_l2norm_in_kernel=True, output_final_state=True)
    """
    check_chunk_size(chunk_size)
    return validate_and_run(
        chunk_core,
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
        cu_seqlens_cpu=cu_seqlens_cpu,
        chunk_size=chunk_size,
    )
