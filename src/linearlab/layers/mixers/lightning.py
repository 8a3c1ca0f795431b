"""TransNormerLLM attention on Lightning Attention-2 (per-head fixed decay set by the layer index)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.norms import SimpleRMSNorm
from linearlab.layers.registry import register_mixer
from linearlab.papers import MIXERS, declare_paper


@register_mixer("lightning")
class LightningAttention(nn.Module):
    """TransNormerLLM's linear attention, computed with Lightning Attention-2.

    Papers: Qin, Sun, Li, Shen, Sun, Zhong, "Lightning Attention-2: A Free Lunch for Handling
    Unlimited Sequence Lengths in Large Language Models" (arXiv 2401.04658); Qin et al.,
    "TransNormerLLM: A Faster and Better Large Language Model with Improved TransNormer"
    (arXiv 2307.14995).

    ``q, k, v = SiLU(x W_q), SiLU(x W_k), SiLU(x W_v)``; ``KV_t = lambda_h KV_{t-1} + k_t^T v_t``,
    ``o_t = q_t KV_t`` with the fixed per-head decay of ``lightning_attn_decay(H, layer_idx,
    num_layers)`` (weaker decay in deeper layers); no denominator; ``y = W_o(SRMSNorm(o) *
    sigmoid(x W_u1 W_u2))`` (low-rank sigmoid output gate). LRPE is not included.

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``). Default: 4.
        gate_rank: inner width of the low-rank output gate. Default: ``D / H`` (the head dim, as TNL).
        layer_idx: index of this layer (sets the decay). Default: 0.
        num_layers: number of layers in the model. Default: 1.

    State: ``{"recurrent": [B, H, D/H, D/H]}`` (float32, or float64 for float64 input).

    Example:
        >>> mixer = LightningAttention(64, num_heads=4, layer_idx=2, num_layers=6)
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        gate_rank: int | None = None,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= layer_idx < max(num_layers, 1):
            raise ValueError(f"layer_idx: must be in [0, num_layers = {num_layers}), got {layer_idx}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        gate_rank = self.head_dim if gate_rank is None else gate_rank
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.gate = nn.Sequential(
            nn.Linear(d_model, gate_rank, bias=False), nn.Linear(gate_rank, d_model, bias=False)
        )
        self.norm = SimpleRMSNorm()
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        q, k, v = (split_heads(t, self.num_heads) for t in F.silu(self.qkv_proj(x)).chunk(3, dim=-1))
        # the op builds the per-head decay of this layer from (layer_idx, num_layers)
        op = ops.fused_recurrent_lightning_attn if T == 1 else ops.chunk_lightning_attn
        o, S = op(
            q,
            k,
            v,
            layer_idx=self.layer_idx,
            num_layers=self.num_layers,
            initial_state=None if state is None else state["recurrent"],
            output_final_state=True,
        )
        o = self.norm(merge_heads(o)) * torch.sigmoid(self.gate(x))
        return self.o_proj(o), {"recurrent": S}

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, Dh = self.num_heads, self.head_dim
        return {"recurrent": shape("B H D/H D/H", batch_size, H, Dh, Dh)}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * (D/H)^2``, independent of ``seq_len``."""
        return self.num_heads * self.head_dim * self.head_dim


declare_paper(
    arxiv="2401.04658",
    short="Lightning Attention-2",
    title="Lightning Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language Models",
    authors="Qin, Sun, Li, Shen, Sun, Zhong",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.lightning.LightningAttention",
        "linearlab.ops.chunk_lightning_attn",
        "linearlab.ops.fused_recurrent_lightning_attn",
        "linearlab.ops.lightning_attn_decay",
    ),
    registered=("mixer:lightning",),
    recipes=("mqar",),
    commands=("linearlab bench ops",),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("lightning", d_model=64, layer_idx=0, num_layers=4)(x)  # x: [B, T, 64]'
    ),
    claim=(
        "Training and inference speed stay constant as the sequence grows: forward at 32K tokens "
        "17.7 ms against 162.9 ms for FlashAttention-2 (b=4, h=32, d=128, bf16; the repository's "
        "benchmark), though slower below about 4K tokens."
    ),
    figures=("mqar:lightning *",),
    note="The speed claim is what `linearlab bench ops` measures (per-token cost at T=32768 vs 2048).",
)

declare_paper(
    arxiv="2307.14995",
    short="TransNormerLLM",
    title="TransNormerLLM: A Faster and Better Large Language Model with Improved TransNormer",
    authors="Qin et al.",
    area=MIXERS,
    status="partial",
    objects=("linearlab.layers.mixers.lightning.LightningAttention", "linearlab.layers.norms.SimpleRMSNorm"),
    registered=("mixer:lightning",),
    recipes=("mqar", "lm --mixers softmax,lightning"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("lightning", d_model=64, layer_idx=3, num_layers=4)(x)  # weaker decay deeper'
    ),
    figures=("mqar:lightning *", "lm:lightning *"),
    note=(
        "Only TransNormerLLM's attention layer (per-head decay set by the layer index, SRMSNorm, "
        "low-rank sigmoid output gate); its LRPE positions and the rest of the model are not included."
    ),
)
