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
    batch_varlen: bool = False,
    **core_kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``(q, k, v, g, beta, ...)`` and call ``core`` on each (packed) sequence.

    ``core(q=, k=, v=, g=, beta=, initial_state=, output_final_state=, scale=, **core_kwargs)``
    receives checked tensors for one fixed-length batch and returns ``(o, final_state)``.
    ``g`` is None for the (ungated) delta rule. With ``cu_seqlens``, ``batch_varlen=True`` runs
    the packed sequences as one padded batch (:func:`run_varlen_batched`); otherwise one by one.
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
    per_token = {"q": q, "k": k, "v": v, "g": g, "beta": beta}
    run = run_varlen_batched if batch_varlen else run_varlen
    return run(core, per_token, cu_seqlens, initial_state, output_final_state, scale=scale, **core_kwargs)


def run_varlen_batched(
    core: Core,
    per_token: dict[str, torch.Tensor | None],
    cu_seqlens: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run packed sequences as one zero-padded batch ``[N, T_max, ...]`` instead of one by one.

    Exact for the delta rules: a padded step has ``k = 0, beta = 0, g = 0``, so it neither writes
    nor decays the state, and each row's final state is the one after its last real token. Falls
    back to the per-sequence loop when padding would more than double the work (very uneven
    lengths). Autograd flows through the scatter/gather.
    """
    cu = cu_seqlens.tolist()
    lengths = [e - s for s, e in zip(cu[:-1], cu[1:])]
    N, T, T_max = len(lengths), cu[-1], max(lengths)
    if N == 1 or N * T_max > 2 * T:
        return run_varlen(core, per_token, cu_seqlens, initial_state, output_final_state, **kwargs)
    device = per_token["q"].device
    # Row-major position of each packed token inside the padded [N * T_max] grid.
    pos = torch.cat([torch.arange(n * T_max, n * T_max + L, device=device) for n, L in enumerate(lengths)])

    def pad(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        flat = x[0]  # [T, ...]
        grid = flat.new_zeros((N * T_max, *flat.shape[1:])).index_copy(0, pos, flat)
        return grid.reshape(N, T_max, *flat.shape[1:])

    padded = {name: pad(t) for name, t in per_token.items()}
    o, ht = core(**padded, initial_state=initial_state, output_final_state=True, **kwargs)
    o = o.reshape(N * T_max, *o.shape[2:]).index_select(0, pos).unsqueeze(0)
    return o, (ht if output_final_state else None)
