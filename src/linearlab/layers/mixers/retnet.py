"""RetNet's multi-scale retention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.mixers._shared_a import (
    check_choice,
    check_heads,
    get_position,
    merge_heads,
    position_tensor,
    simple_gla,
    split_heads,
)
from linearlab.layers.modules import check_mixer_input
from linearlab.layers.registry import register_mixer
from linearlab.layers.rotary import RotaryEmbedding, xpos_scale


@register_mixer("retnet")
class MultiScaleRetention(nn.Module):
    """Multi-scale retention (MSR).

    Paper: Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei, "Retentive Network: A Successor to
    Transformer for Large Language Models" (arXiv 2307.08621).

    ``S_t = gamma_h S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t`` with the fixed per-head decay
    ``gamma_h = 1 - 2^(-5 - h)``, ``k`` scaled by ``(D/H) ** -0.5`` and a relative position code on
    ``q, k`` (RoPE, or xPos = RoPE with an extra exponential scale; the paper's choice).
    ``y = W_o(swish(x W_G) * GroupNorm_h(o))`` with one norm group per head.

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``; the key head dim must be even for RoPE). Default: 4.
        expand_v: value width factor (RetNet uses 2). Default: 2.
        position: ``"xpos"``, ``"rope"`` or ``"none"``. Default: ``"rope"`` (xPos's scale grows with
            the absolute position, so it is opt-in).
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"S": [B, H, D/H, expand_v * D/H], "pos": []}`` (``pos`` = tokens seen, for the rotary phase).

    Example:
        >>> mixer = MultiScaleRetention(64, num_heads=4)
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

    g_gamma: torch.Tensor

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_v: int = 2,
        position: str = "rope",
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        check_choice("position", position, ("xpos", "rope", "none"))
        if expand_v < 1:
            raise ValueError(f"expand_v: must be >= 1, got {expand_v}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        if position != "none" and self.head_dim % 2:
            raise ValueError(
                f"num_heads: {position} needs an even head dim, got d_model/num_heads = {self.head_dim}"
            )
        self.value_dim = expand_v * d_model
        self.position = position
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)
        # group norm with one group per head = layer norm over each head's values, affine per channel
        self.norm_weight = nn.Parameter(torch.ones(self.value_dim))
        self.norm_bias = nn.Parameter(torch.zeros(self.value_dim))
        self.rotary = RotaryEmbedding(self.head_dim) if position != "none" else None
        decay = [math.log(1 - 2.0 ** (-5 - h)) for h in range(num_heads)]
        self.register_buffer("g_gamma", torch.tensor(decay, dtype=torch.float64), persistent=False)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        check_mixer_input(x, self.d_model)
        pos = get_position(state)
        T = x.shape[1]
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        if self.rotary is not None:
            q, k = self.rotary(q, offset=pos), self.rotary(k, offset=pos)
        if self.position == "xpos":
            s = xpos_scale(pos, T, self.head_dim, q.dtype, q.device)[:, None, :]
            q, k = q * s, k / s
        o, S = simple_gla(
            q,
            k,
            v,
            self.g_gamma.to(torch.float32 if x.dtype != torch.float64 else x.dtype),
            None if state is None else state["S"],
            scale=self.head_dim**-0.5,
        )
        o = F.layer_norm(o.to(x.dtype), (o.shape[-1],), eps=1e-5)
        o = merge_heads(o) * self.norm_weight + self.norm_bias
        y = self.o_proj(F.silu(self.g_proj(x)) * o)
        return y, {"S": S, "pos": position_tensor(pos + T, x.device)}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * (D/H) * (expand_v * D/H)``, independent of ``seq_len``.

        The position counter is bookkeeping and is not counted (as for every mixer).
        """
        return self.num_heads * self.head_dim * (self.value_dim // self.num_heads)
