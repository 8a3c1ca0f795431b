"""SLAB's simplified linear attention, made causal for language modelling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.mixers._shared_a import check_heads, linear_attn, merge_heads, split_heads
from linearlab.layers.modules import check_mixer_input
from linearlab.layers.registry import register_mixer


@register_mixer("slab")
class SimplifiedLinearAttention(nn.Module):
    """Simplified linear attention (SLA): ReLU kernel, denominator, plus a depthwise conv on ``V``.

    Paper: Guo, Chen, Tang, Wang, "SLAB: Efficient Transformers with Simplified Linear Attention and
    Progressive Re-parameterized Batch Normalization" (ICML 2024, arXiv 2405.11582).

    ``o_t = relu(q_t) S_t / (relu(q_t) . z_t + eps) + DWC(v)_t``, then ``W_o``.

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
        eps: added to the denominator. Default: 1e-6.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"S": [B, H, D/H, D/H + 1], "conv": [B, D, conv_size - 1]}`` (the last values of ``v``).

    Example:
        >>> mixer = SimplifiedLinearAttention(64)
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        conv_size: int = 5,
        eps: float = 1e-6,
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
        self.eps = eps
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        # depthwise: one length-conv_size filter per channel; padding is done by hand (causal + state)
        self.dwc = nn.Conv1d(d_model, d_model, conv_size, groups=d_model, bias=True)

    def _causal_conv(self, v: torch.Tensor, buf: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        # v: [B, T, D] -> [B, D, T]; the buffer holds the previous conv_size - 1 inputs (zeros at start)
        vt = v.transpose(1, 2)
        if buf is None:
            buf = vt.new_zeros(vt.shape[0], vt.shape[1], self.conv_size - 1)
        full = torch.cat([buf.to(vt.dtype), vt], dim=-1)
        out = F.conv1d(full, self.dwc.weight, self.dwc.bias, groups=self.d_model)
        return out.transpose(1, 2), full[..., full.shape[-1] - (self.conv_size - 1) :]

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        check_mixer_input(x, self.d_model)
        q = torch.relu(split_heads(self.q_proj(x), self.num_heads))
        k = torch.relu(split_heads(self.k_proj(x), self.num_heads))
        v = self.v_proj(x)
        o, S = linear_attn(
            q,
            k,
            split_heads(v, self.num_heads),
            None if state is None else state["S"],
            normalize=True,
            eps=self.eps,
        )
        local, conv_buf = self._causal_conv(v, None if state is None else state["conv"])
        y = self.o_proj(merge_heads(o).to(x.dtype) + local)
        return y, {"S": S, "conv": conv_buf}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * K * (V + 1) + D * (conv_size - 1)``, independent of ``seq_len``."""
        return self.num_heads * self.head_dim * (self.head_dim + 1) + self.d_model * (self.conv_size - 1)
