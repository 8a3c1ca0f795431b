"""Zoology's BaseConv: a gated short convolution.

Zoology: Measuring and Improving Recall in Efficient Language Models (Arora, Eyuboglu, Timalsina,
Johnson, Poli, Zou, Rudra, Ré; arXiv 2312.04927). Zoology's MQAR sweep puts one BaseConv layer
before every mixer under test: ``y = conv(x) * W x``, a causal depthwise convolution gated by a
linear projection. It lets the next layer see the previous token (key -> value binding) without
attention, so the sweep measures the mixer's recall rather than its ability to shift tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.layers.mixer_checks import check_mixer_input, check_positive_int
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.registry import register_mixer
from linearlab.layers.short_conv import ShortConvolution


@register_mixer("base_conv")
class BaseConv(nn.Module):
    """Gated short convolution ``y = conv(x) * (W x + b)``; state = the conv buffer.

    Args:
        d_model: width D.
        kernel_size: convolution length (default 3, as in Zoology's sweep).
        layer_idx, num_layers: accepted for the model's uniform constructor call; unused.

    Shapes:
        ``x: [B, T, D]`` -> ``(y: [B, T, D], state: {"conv": [B, D, kernel_size - 1]})``.
    """

    def __init__(self, d_model: int, kernel_size: int = 3, layer_idx: int = 0, num_layers: int = 1) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("kernel_size", kernel_size)
        self.d_model = d_model
        self.conv = ShortConvolution(d_model, kernel_size=kernel_size, bias=True, activation=None)
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        B, _ = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        y, cache = self.conv(x, cache=None if state is None else state["conv"])
        return y * self.proj(x), {"conv": cache}

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns: the conv buffer (see ``mixer_state``)."""
        return {"conv": shape("B D kernel_size-1", batch_size, self.d_model, self.conv.kernel_size[0] - 1)}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``D * (kernel_size - 1)``, independent of ``seq_len``."""
        return self.conv.state_size()
