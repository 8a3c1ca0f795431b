"""Mamba2-style data-dependent decay, shared by Gated DeltaNet and Mixture-of-Memories.

Per head ``h`` and token ``t``: ``g_t = -exp(A_log_h) * softplus(a_t + dt_bias_h) <= 0`` is the log
forget factor of the memory (``S_t = exp(g_t) S_{t-1} + ...``), with ``a_t`` a linear projection of
the token (Dao & Gu, "Transformers are SSMs", arXiv 2405.21060).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from linearlab.layers.precision import compute_dtype


def init_mamba2_decay(
    num_heads: int,
    a_range: tuple[float, float] = (1.0, 16.0),
    dt_min: float = 1e-3,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba2-style initial ``(A_log: [H], dt_bias: [H])`` for ``g = -exp(A_log) * softplus(a + dt_bias)``.

    ``A ~ U(a_range)`` sets each head's decay rate and ``dt ~ logU(dt_min, dt_max)`` its step;
    ``dt_bias`` is the inverse softplus of ``dt`` so that ``softplus(dt_bias) == dt`` at init.
    ``a_range = (1, 16)`` is Mamba2's ``A_init_range`` (fla's Gated DeltaNet draws from (0, 16));
    a lower end of 1 keeps every head decaying at init.
    """
    A = torch.empty(num_heads).uniform_(*a_range)
    dt = torch.exp(torch.rand(num_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp_min(dt_init_floor)
    # inverse softplus: x = dt + log(1 - exp(-dt))
    dt_bias = dt + torch.log(-torch.expm1(-dt))
    return torch.log(A), dt_bias


def mamba2_log_decay(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """Log forget gate ``g = -exp(A_log) * softplus(a + dt_bias)`` (``<= 0``) in ``compute_dtype(a)``.

    ``a: [..., H]`` is the data-dependent input, ``A_log, dt_bias: [H]``; returns ``[..., H]``.
    Not in ``a``'s dtype: the ops accumulate the log gates, and bfloat16 would lose the small decays.
    """
    dtype = compute_dtype(a)
    return -A_log.to(dtype).exp() * F.softplus(a.to(dtype) + dt_bias.to(dtype))
