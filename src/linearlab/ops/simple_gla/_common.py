"""Input handling shared by the three forms (naive, chunk, recurrent) of the scalar-decay ops.

Simple GLA, RetNet retention, Lightning attention and plain linear attention are one recurrence

    S_t = exp(g_t) * S_{t-1} + k_t^T v_t,        o_t = scale * q_t S_t

with one log decay ``g_t <= 0`` per (token, head) (``g_t = 0``: no decay). This module validates the
public arguments once and folds ``g`` and ``g_gamma`` into that single per-token gate.
"""

from __future__ import annotations

import math

import torch

from linearlab.ops.utils import (
    check_cu_seqlens,
    check_cu_seqlens_cpu,
    check_flag,
    check_initial_state,
    check_log_gate,
    check_qkv,
    check_scale,
    state_dtype,
)


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor | None,
    g_gamma: torch.Tensor | None,
    scale: float | None,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
    state_v: int | None = None,
    state_v_first: bool = False,
    cu_seqlens_cpu: torch.Tensor | None = None,
) -> float:
    """Check every argument of a scalar-decay op and return the resolved ``scale``.

    ``state_v`` is the value width of the state (``V``, or ``V + 1`` for normalised linear attention);
    ``state_v_first``: the state comes as ``[N, H, V, K]`` (fla's value-first layout).
    """
    B, T, H, K, V = check_qkv(q, k, v)
    check_log_gate("g", g, (B, T, H), q)
    check_log_gate("g_gamma", g_gamma, (H,), q)
    scale = check_scale(scale, K)
    state_v_first = check_flag("state_v_first", state_v_first)
    N = check_cu_seqlens(cu_seqlens, B, T)
    check_cu_seqlens_cpu(cu_seqlens_cpu, cu_seqlens)
    check_initial_state(initial_state, N, H, K, V if state_v is None else state_v, q, v_first=state_v_first)
    return scale


def total_gate(
    g: torch.Tensor | None, g_gamma: torch.Tensor | None, ref: torch.Tensor
) -> torch.Tensor | None:
    """The per-token log decay ``g + g_gamma`` as ``[B, T, H]`` in the state dtype (None: no decay).

    Done with autograd-tracked ops, so gradients reach both ``g`` and ``g_gamma``.
    """
    sd = state_dtype(ref)
    if g is None and g_gamma is None:
        return None
    if g_gamma is None:
        return g.to(sd)
    gamma = g_gamma.to(sd)
    if g is None:
        return gamma.expand(ref.shape[0], ref.shape[1], ref.shape[2])
    return g.to(sd) + gamma


def retention_decay(num_heads: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """RetNet's per-head log decay ``log(1 - 2**(-5 - h))`` for ``h = 0 .. H-1``: ``[H]``."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    vals = [math.log1p(-(2.0 ** (-5 - h))) for h in range(num_heads)]
    return torch.tensor(vals, dtype=dtype, device=device)
