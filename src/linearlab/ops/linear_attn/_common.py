"""Shared pieces of the linear-attention forms: validation and the normalised (denominator) variant.

With ``normalize=True`` the op returns ``o_t = (scale q_t S_t) / (scale q_t z_t + eps)`` where
``z_t = z_0 + sum_{s<=t} k_s``. We get ``z`` for free by appending a column of ones to ``v``: the
state's last value column then *is* ``z``, so the state is ``[N, H, K, V + 1]`` and carrying it
between calls is exact (fla cannot carry state with ``normalize=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from linearlab.ops.simple_gla._common import validate

#: added to the denominator ``scale * q_t . z_t``; matters only when it is ~0
NORMALIZE_EPS = 1e-6

Core = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def check_normalize(normalize: bool) -> bool:
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize: expected a bool, got {normalize!r}")
    return normalize


def reject_state_tuple(initial_state: object) -> None:
    """fla 0.6 carries a normalised state as a tuple ``(kv_state, z_state)``; here it is one tensor.

    Raised instead of guessing, so a tuple never meets the wrong layout silently.
    """
    if isinstance(initial_state, tuple):
        raise ValueError(
            "initial_state: got a tuple; fla carries a normalize=True state as (kv_state [N, H, K, V], "
            "z_state [N, 1, H, K]), linearlab as one tensor [N, H, K, V + 1] whose last value column is "
            "z: pass torch.cat([kv_state, z_state.squeeze(1)[..., None]], dim=-1)"
        )


def run_linear_attn(
    core: Core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    normalize: bool,
    cu_seqlens: torch.Tensor | None,
    **core_kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate, then run ``core(q, k, v, g=None, scale, h0, output_final_state, cu_seqlens, ...)``.

    ``core`` returns ``o`` in the state dtype; the division (if any) is done there, then cast.
    With ``reverse=True`` in ``core_kwargs`` the key sum ``z`` runs backwards too (it is the
    state's last value column).
    """
    normalize = check_normalize(normalize)
    reject_state_tuple(initial_state)
    V = v.shape[-1] if isinstance(v, torch.Tensor) and v.dim() == 4 else None
    scale = validate(
        q,
        k,
        v,
        None,
        None,
        scale,
        initial_state,
        cu_seqlens,
        state_v=V + 1 if normalize and V is not None else None,
    )
    if not normalize:
        o, ht = core(q, k, v, None, scale, initial_state, output_final_state, cu_seqlens, **core_kwargs)
        return o.to(q.dtype), ht
    v1 = torch.cat([v, v.new_ones(*v.shape[:-1], 1)], dim=-1)
    o1, ht = core(q, k, v1, None, scale, initial_state, output_final_state, cu_seqlens, **core_kwargs)
    o = o1[..., :V] / (o1[..., V:] + NORMALIZE_EPS)
    return o.to(q.dtype), ht
