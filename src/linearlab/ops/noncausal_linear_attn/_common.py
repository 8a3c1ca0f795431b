"""Argument checks shared by the two forms of non-causal linear attention."""

from __future__ import annotations

import torch

from linearlab.ops.utils import check_qkv, check_scale

#: LinFusion's default, added to the (mean-normalised) denominator ``scale * phi(q_i) . mean_j phi(k_j)``
DEFAULT_EPS = 1e-4


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    normalize: bool,
    mean: bool,
    eps: float,
    cu_seqlens: torch.Tensor | None,
) -> float:
    """Check every argument; return the resolved ``scale``.

    Packed sequences are refused rather than silently mixed: in a non-causal op every token reads
    every other token of its batch row, so a packed row would leak across sequences.
    """
    if cu_seqlens is not None:
        raise ValueError(
            "cu_seqlens: non-causal linear attention does not support packed variable-length sequences "
            f"(got a {type(cu_seqlens).__name__}); pad the batch to [B, T, H, D] instead, every token "
            "attends to every token of its row"
        )
    check_qkv(q, k, v)
    for name, flag in (("normalize", normalize), ("mean", mean)):
        if not isinstance(flag, bool):
            raise ValueError(f"{name}: expected a bool, got {flag!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps: expected a float >= 0, got {eps!r}")
    return check_scale(scale, q.shape[-1])
