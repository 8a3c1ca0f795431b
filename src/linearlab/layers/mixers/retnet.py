"""RetNet's multi-scale retention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_choice, check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, get_position, position_tensor, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.precision import compute_dtype
from linearlab.layers.registry import register_mixer
from linearlab.layers.rotary import RotaryEmbedding, xpos_scale
from linearlab.papers import MIXERS, declare_paper


@register_mixer("retnet")
class MultiScaleRetention(nn.Module):
    """Multi-scale retention (MSR).

    Paper: Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei, "Retentive Network: A Successor to
    Transformer for Large Language Models" (arXiv 2307.08621).

    ``S_t = gamma_h S_{t-1} + k_t^T v_t``, ``o_t = q_t S_t`` with the fixed per-head decay
    ``gamma_h = 1 - 2^(-5 - h)``, ``k`` scaled by ``(D/H) ** -0.5`` and a relative position code on
    ``q, k`` (RoPE, or xPos = RoPE with an extra exponential scale; the paper's choice).
    ``y = W_o(swish(x W_G) * GroupNorm_h(o))`` with one norm group per head. The retention itself,
    decay included, is the ``chunk_retention`` op (``fused_recurrent_retention`` for single-token
    steps).

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``; the key head dim must be even for RoPE). Default: 4.
        expand_v: value width factor (RetNet uses 2). Default: 2.
        position: ``"xpos"``, ``"rope"`` or ``"none"``. Default: ``"rope"`` (xPos's scale grows with
            the absolute position, so it is opt-in).
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"recurrent": [B, H, D/H, expand_v * D/H], "pos": []}`` (``recurrent`` in float32, or
    float64 for float64 input; ``pos`` = tokens seen, for the rotary phase).

    Example:
        >>> mixer = MultiScaleRetention(64, num_heads=4)
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

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

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        pos = get_position(state)
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        if self.rotary is not None:
            q, k = self.rotary(q, offset=pos), self.rotary(k, offset=pos)
        if self.position == "xpos":
            s = xpos_scale(pos, T, self.head_dim, q.dtype, q.device)[:, None, :]
            q, k = q * s, k / s
        op = ops.fused_recurrent_retention if T == 1 else ops.chunk_retention
        o, S = op(
            q,
            k,
            v,
            scale=self.head_dim**-0.5,
            initial_state=None if state is None else state["recurrent"],
            output_final_state=True,
        )
        # group-norm statistics in compute_dtype, the affine map and the gate in x's dtype
        o = F.layer_norm(o.to(compute_dtype(x)), (o.shape[-1],), eps=1e-5).to(x.dtype)
        o = merge_heads(o) * self.norm_weight + self.norm_bias
        y = self.o_proj(F.silu(self.g_proj(x)) * o)
        return y, {"recurrent": S, "pos": position_tensor(pos + T, x.device)}

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, K, V = self.num_heads, self.head_dim, self.value_dim // self.num_heads
        return {"recurrent": shape("B H K V", batch_size, H, K, V), "pos": shape("")}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * (D/H) * (expand_v * D/H)``, independent of ``seq_len``.

        The position counter is bookkeeping and is not counted (as for every mixer).
        """
        return self.num_heads * self.head_dim * (self.value_dim // self.num_heads)


declare_paper(
    arxiv="2307.08621",
    short="RetNet",
    title="Retentive Network: A Successor to Transformer for Large Language Models",
    authors="Sun, Dong, Huang, Ma, Xia, Xue, Wang, Wei",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.retnet.MultiScaleRetention",
        "linearlab.ops.chunk_retention",
        "linearlab.ops.fused_recurrent_retention",
        "linearlab.ops.chunk_simple_gla",
        "linearlab.ops.fused_recurrent_simple_gla",
        "linearlab.ops.naive_recurrent_simple_gla",
    ),
    registered=("mixer:retnet",),
    recipes=("mqar", "lm"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("retnet", d_model=64, num_heads=4)(x)  # x: [B, T, 64]'
    ),
    claim=(
        "Retention trains in parallel (or chunk by chunk) and decodes as a recurrence at constant cost "
        "per token, with language-modelling quality competitive with Transformers (abstract; no "
        "numbers in our notes)."
    ),
    figures=("mqar:retnet *", "lm:retnet *"),
    note='Relative positions default to RoPE; the paper\'s xPos is position="xpos".',
)
