"""SLAB's simplified linear attention, made causal for language modelling."""

from __future__ import annotations

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.registry import register_mixer
from linearlab.layers.short_conv import ShortConvolution
from linearlab.papers import MIXERS, declare_paper


@register_mixer("slab")
class SimplifiedLinearAttention(nn.Module):
    """Simplified linear attention (SLA): ReLU kernel, denominator, plus a depthwise conv on ``V``.

    Paper: Guo, Chen, Tang, Wang, "SLAB: Efficient Transformers with Simplified Linear Attention and
    Progressive Re-parameterized Batch Normalization" (ICML 2024, arXiv 2405.11582).

    ``o_t = relu(q_t) S_t / (relu(q_t) . z_t + 1e-6) + DWC(v)_t``, then ``W_o``. The normalised
    linear attention is the ``linear_attn`` op with ``normalize=True``; ``DWC`` is a
    :class:`~linearlab.layers.short_conv.ShortConvolution` (with bias, no activation).

    Deviation from the paper (on purpose): SLAB is a non-causal vision layer whose ``DWC`` is a 5x5
    depthwise conv on the 2-D token grid. Here it is a **causal** depthwise conv1d over time (each
    output sees only the current and the ``conv_size - 1`` previous values), so the mixer is a valid
    causal LM mixer and can decode with a conv buffer. The DeiT variant's learned positional
    encoding on ``K`` is left out: the conv already supplies local position information. PRepBN is
    a model-level norm option, not part of this mixer.

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``). Default: 4.
        conv_size: causal depthwise conv kernel length (>= 1). Default: 5.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"recurrent": [B, H, D/H, D/H + 1], "conv": [B, D, conv_size - 1]}``: the attention
    state (the key sum is the last value column; float32, or float64 for float64 input) and the
    last ``conv_size - 1`` values of ``v``.

    Example:
        >>> mixer = SimplifiedLinearAttention(64)
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        conv_size: int = 5,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if conv_size < 1:
            raise ValueError(f"conv_size: must be >= 1, got {conv_size}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        self.conv_size = conv_size
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        # depthwise: one length-conv_size filter per channel, causal, with its buffer in the state
        self.dwc = ShortConvolution(d_model, conv_size, bias=True, activation=None)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        q = torch.relu(split_heads(self.q_proj(x), self.num_heads))
        k = torch.relu(split_heads(self.k_proj(x), self.num_heads))
        v = self.v_proj(x)
        op = ops.fused_recurrent_linear_attn if T == 1 else ops.chunk_linear_attn
        # normalised: no query scale (it cancels between numerator and denominator)
        o, S = op(
            q,
            k,
            split_heads(v, self.num_heads),
            scale=1.0,
            initial_state=None if state is None else state["recurrent"],
            output_final_state=True,
            normalize=True,
        )
        local, conv_buf = self.dwc(v, None if state is None else state["conv"])
        y = self.o_proj(merge_heads(o) + local)
        return y, {"recurrent": S, "conv": conv_buf}

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, K, D = self.num_heads, self.head_dim, self.d_model
        return {
            "recurrent": shape("B H K V+1", batch_size, H, K, K + 1),
            "conv": shape("B D conv_size-1", batch_size, D, self.conv_size - 1),
        }

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * K * (V + 1) + D * (conv_size - 1)``, independent of ``seq_len``."""
        return self.num_heads * self.head_dim * (self.head_dim + 1) + self.d_model * (self.conv_size - 1)


declare_paper(
    arxiv="2405.11582",
    short="SLAB",
    title=(
        "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive "
        "Re-parameterized Batch Normalization"
    ),
    authors="Guo, Chen, Tang, Wang",
    venue="ICML 2024",
    area=MIXERS,
    status="partial",
    objects=(
        "linearlab.layers.mixers.slab.SimplifiedLinearAttention",
        "linearlab.layers.norms.RepBN",
        "linearlab.models.fuse_repbn_",
    ),
    registered=("mixer:slab", "feature map:relu"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("slab", d_model=64, conv_size=5)(x)  # ModelConfig(norm="repbn") for PRepBN'
    ),
    claim=(
        "ImageNet-1K: SLAB-Swin-S 83.6% top-1 at 16.2 ms, 2.4 ms faster than Flatten-Swin at +0.1%; "
        "on LLaMA-350M, PRepBN raises throughput from 44.0 to 50.4 with a 9-task zero-shot average of "
        "49.78 (vs 49.32) (repository figures)."
    ),
    note=(
        "Causal form only: a 1-D causal depthwise conv over time replaces the 5x5 conv over the image "
        "grid and K has no positional encoding; no vision model or recipe reproduces the ImageNet or "
        "latency numbers."
    ),
)
