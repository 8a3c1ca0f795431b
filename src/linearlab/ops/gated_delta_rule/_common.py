"""Input validation and dispatch shared by every delta-rule form (naive, chunk, recurrent).

The delta rule is the gated delta rule with ``g = 0``; both families go through
:func:`validate_and_run`, which checks the inputs once, applies the optional in-kernel L2 norm and
routes packed variable-length batches (``cu_seqlens``) through :func:`linearlab.ops.utils.run_varlen`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from linearlab.ops.utils import (
    check_cu_seqlens,
    check_initial_state,
    check_log_gate,
    check_per_token,
    check_qkv,
    check_scale,
    l2norm,
    run_varlen,
)

Core = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def _check_float(name: str, t: torch.Tensor | None) -> None:
    if t is not None and isinstance(t, torch.Tensor) and not t.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` must be a positive int (16, 32 and 64 are the usual choices)."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int such as 16, 32 or 64, got {chunk_size!r}")
    return chunk_size


def validate_and_run(
    core: Core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    beta: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    use_qk_l2norm_in_kernel: bool,
    cu_seqlens: torch.Tensor | None,
    **core_kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``(q, k, v, g, beta, ...)`` and call ``core`` on each (packed) sequence.

    ``core(q=, k=, v=, g=, beta=, initial_state=, output_final_state=, scale=, **core_kwargs)``
    receives checked tensors for one fixed-length batch and returns ``(o, final_state)``.
    ``g`` is None for the (ungated) delta rule.
    """
    B, T, H, K, V = check_qkv(q, k, v)
    if beta is None:
        raise ValueError(
            f"beta: the delta rule needs a per-token step size [B, T, H] = {[B, T, H]}, got None"
        )
    for name, t in (("beta", beta), ("g", g)):
        _check_float(name, t)
    check_per_token("beta", beta, (B, T, H), q)
    check_log_gate("g", g, (B, T, H), q)
    scale = check_scale(scale, K)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_initial_state(initial_state, N, H, K, V, q)
    if initial_state is not None:
        _check_float("initial_state", initial_state)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if cu_seqlens is None:
        return core(
            q=q,
            k=k,
            v=v,
            g=g,
            beta=beta,
            initial_state=initial_state,
            output_final_state=output_final_state,
            scale=scale,
            **core_kwargs,
        )
    return run_varlen(
        core,
        {"q": q, "k": k, "v": v, "g": g, "beta": beta},
        cu_seqlens,
        initial_state,
        output_final_state,
        scale=scale,
        **core_kwargs,
    )
