"""Gated DeltaNet mixer (``gated_deltanet``).

Paper: "Gated Delta Networks: Improving Mamba2 with Delta Rule",
Songlin Yang, Jan Kautz, Ali Hatamizadeh (arXiv 2412.06464, ICLR 2025).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab import ops
from linearlab.layers.mixers.deltanet import DeltaNet
from linearlab.layers.registry import register_mixer


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
    """Log forget gate ``g = -exp(A_log) * softplus(a + dt_bias)`` (``<= 0``), computed in float32 or wider.

    ``a: [..., H]`` is the data-dependent input, ``A_log, dt_bias: [H]``; returns ``[..., H]``.
    """
    dtype = torch.promote_types(a.dtype, torch.float32)
    return -A_log.to(dtype).exp() * F.softplus(a.to(dtype) + dt_bias.to(dtype))


@register_mixer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    """Gated DeltaNet: the delta rule with a Mamba2-style data-dependent scalar decay per head.

    Per head, with state ``S: [K, V]`` (Yang, Kautz, Hatamizadeh, arXiv 2412.06464)::

        g_t = -exp(A_log) * softplus(x_t W_a + dt_bias)                     (log decay, <= 0)
        S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - k_t exp(g_t) S_{t-1}),   o_t = (q_t / sqrt(K)) S_t

    Everything else (short convs, SiLU, L2-normalised q/k, sigmoid beta, gated per-head RMSNorm,
    output projection) is as in :class:`~linearlab.layers.mixers.deltanet.DeltaNet`. The gate
    lets a head erase its whole memory quickly (``g << 0``) while the delta rule edits single
    associations. Prefill runs ``chunk_gated_delta_rule``; single-token steps run
    ``fused_recurrent_gated_delta_rule``. ``A_log`` and ``dt_bias`` carry
    ``_no_weight_decay = True`` (as in Mamba2/fla).

    Args:
        d_model: model width ``D``.
        num_heads: number of heads ``H``. Default: 4.
        expand_k: total key width is ``D * expand_k``. Default: 1.0 (fla sizes heads with
            ``head_dim=256``; here widths scale with ``d_model`` like the other mixers).
        expand_v: total value width is ``D * expand_v``. Default: 1.0 (fla: 2).
        use_short_conv, conv_size, conv_bias, use_gate, allow_neg_eigval, norm_eps, chunk_size,
        layer_idx, num_layers: as in :class:`DeltaNet`.

    Shapes:
        ``x: [B, T, D]`` -> ``y: [B, T, D]``; state as in :class:`DeltaNet`.

    Example:
        >>> mixer = GatedDeltaNet(64, num_heads=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
        >>> y_next, state = mixer(torch.randn(1, 1, 64), state)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        use_gate: bool = True,
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__(
            d_model,
            num_heads=num_heads,
            expand_k=expand_k,
            expand_v=expand_v,
            use_short_conv=use_short_conv,
            conv_size=conv_size,
            conv_bias=conv_bias,
            use_gate=use_gate,
            allow_neg_eigval=allow_neg_eigval,
            norm_eps=norm_eps,
            chunk_size=chunk_size,
            layer_idx=layer_idx,
            num_layers=num_layers,
        )
        self.a_proj = nn.Linear(d_model, num_heads, bias=False)
        A_log, dt_bias = init_mamba2_decay(num_heads)
        self.A_log = nn.Parameter(A_log)
        self.dt_bias = nn.Parameter(dt_bias)
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.dt_bias._no_weight_decay = True  # type: ignore[attr-defined]

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head log decay ``g: [B, T, H]`` (<= 0) for ``x: [B, T, D]``."""
        return mamba2_log_decay(self.a_proj(x), self.A_log, self.dt_bias)

    def recurrence(
        self,
        x: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        beta: torch.Tensor,
        initial_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the gated delta rule: chunked for prefill, recurrent for one token."""
        # kept in float32 (or float64): the ops accumulate log gates and bf16 would lose the small decays
        g = self.log_decay(x)
        if q.shape[1] == 1:
            return ops.fused_recurrent_gated_delta_rule(
                q, k, v, g, beta, initial_state=initial_state, output_final_state=True
            )
        return ops.chunk_gated_delta_rule(
            q, k, v, g, beta, initial_state=initial_state, output_final_state=True, chunk_size=self.chunk_size
        )
