"""A linearised :class:`~linearlab.layers.mixers.softmax.SoftmaxAttention` for linearlab's own ``MixerLM``.

:class:`LinearizedMixer` keeps the softmax mixer's ``qkv_proj``, ``o_proj`` and rotary embedding
(same objects and ``state_dict`` keys) and runs a
:class:`~linearlab.convert.operator.LinearizedOperator` on the rotated heads. It follows the mixer
contract: ``forward(x: [B, T, D], state) -> (y, state)``, running a sequence in pieces equals one call.
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.convert.operator import LinearizedOperator
from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import get_position, position_tensor
from linearlab.layers.multihead import merge_heads, split_heads


class LinearizedMixer(nn.Module):
    """Drop-in for a ``SoftmaxAttention`` mixer inside ``MixerLM``; see the module docstring.

    State: the operator's state plus ``"pos"`` (0-dim long tensor: tokens seen, for the rotary phase).
    """

    def __init__(self, softmax: nn.Module, operator: LinearizedOperator) -> None:
        super().__init__()
        self.d_model = softmax.d_model
        self.num_heads = softmax.num_heads
        self.head_dim = softmax.head_dim
        self.qkv_proj, self.o_proj, self.rotary = softmax.qkv_proj, softmax.o_proj, softmax.rotary
        self.operator = operator

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        check_mixer_input(x, self.d_model)
        if state is not None and (not isinstance(state, dict) or "pos" not in state):
            raise ValueError(
                f"state: expected None or the dict a linearised layer returned (with 'pos'), got {state!r:.80}"
            )
        pos = get_position(state)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv_proj(x).chunk(3, dim=-1))
        q_raw, k_raw = q, k
        if self.rotary is not None:
            q, k = self.rotary(q, offset=pos), self.rotary(k, offset=pos)
        inner = None if state is None else {name: t for name, t in state.items() if name != "pos"}
        o, new_state = self.operator(q, k, v, inner, True, q_raw=q_raw, k_raw=k_raw)
        if new_state is None:  # distillation mode carries no state
            new_state = {}
        new_state = {**new_state, "pos": position_tensor(pos + x.shape[1], x.device)}
        return self.o_proj(merge_heads(o)), new_state
