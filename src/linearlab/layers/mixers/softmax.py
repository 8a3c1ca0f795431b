"""Softmax attention baselines: full causal attention and sliding-window attention, both with RoPE."""

from __future__ import annotations

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, get_position, position_tensor, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.registry import register_mixer
from linearlab.layers.rotary import RotaryEmbedding
from linearlab.papers import MIXERS, declare_paper


@register_mixer("softmax")
class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention with rotary position embedding.

    Paper: Vaswani et al., "Attention Is All You Need" (arXiv 1706.03762); RoPE from Su et al.,
    "RoFormer" (arXiv 2104.09864).

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``; ``D/H`` even for RoPE). Default: 4.
        rope: rotate ``q, k`` by position. Default: True.
        rope_base: RoPE wavelength base. Default: 10000.
        window_size: each token sees itself and the ``window_size - 1`` previous tokens; None = all.
            Default: None (the ``sliding_window`` mixer defaults to 64).
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State (KV cache): ``{"k": [B, P, H, D/H], "v": [B, P, H, D/H], "pos": []}`` with rotated keys
    in x's dtype; ``P`` = tokens seen (at most ``window_size - 1`` with a window: older ones can
    never be seen again).

    Example:
        >>> mixer = SoftmaxAttention(64, num_heads=4)
        >>> y, cache = mixer(torch.randn(2, 10, 64))
        >>> y_next, cache = mixer(torch.randn(2, 1, 64), cache)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        rope: bool = True,
        rope_base: float = 10000.0,
        window_size: int | None = None,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if window_size is not None and window_size < 1:
            raise ValueError(f"window_size: must be >= 1 or None, got {window_size}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        if rope and self.head_dim % 2:
            raise ValueError(
                f"num_heads: RoPE needs an even head dim, got d_model/num_heads = {self.head_dim}"
            )
        self.window_size = window_size
        self.qkv_proj = nn.Linear(d_model, 3 * d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.rotary = RotaryEmbedding(self.head_dim, base=rope_base) if rope else None

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` = the KV cache returned by the previous call."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        pos = get_position(state)
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv_proj(x).chunk(3, dim=-1))
        if self.rotary is not None:
            q, k = self.rotary(q, offset=pos), self.rotary(k, offset=pos)
        if state is None:
            o = ops.attention(q, k, v, causal=True, window_size=self.window_size)
            k_all, v_all = k, v
            if self.window_size is not None:
                # keep what a later query can still see: the last window_size - 1 tokens
                keep = min(T, self.window_size - 1)
                k_all, v_all = k[:, T - keep :], v[:, T - keep :]
        else:
            # the step op appends k, v to the cache, attends (T == 1 decoding or a chunk of
            # prefill) and trims the cache to the window
            o, (k_all, v_all) = ops.attention_step(
                q, k, v, cache=(state["k"], state["v"]), window_size=self.window_size
            )
        cache = {"k": k_all, "v": v_all, "pos": position_tensor(pos + T, x.device)}
        return self.o_proj(merge_heads(o)), cache

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, Dh = self.num_heads, self.head_dim
        kv = shape("B P H D/H", batch_size, None, H, Dh)
        return {"k": kv, "v": kv, "pos": shape("")}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``2 * L * D`` keys and values, ``L = seq_len`` (capped by the window)."""
        length = seq_len if self.window_size is None else min(seq_len, self.window_size - 1)
        return 2 * max(length, 1) * self.d_model


@register_mixer("sliding_window")
class SlidingWindowAttention(SoftmaxAttention):
    """Sliding-window causal softmax attention with RoPE: token ``t`` sees tokens ``t - w + 1 .. t``.

    Paper: Beltagy, Peters, Cohan, "Longformer: The Long-Document Transformer" (arXiv 2004.05150),
    used causally as in Mistral and the Zoology MQAR sweep. The KV cache keeps only the last
    ``window_size - 1`` tokens, so the state is bounded.

    Args: as :class:`SoftmaxAttention`, with ``window_size: int = 64`` (required to be an int).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        window_size: int = 64,
        rope: bool = True,
        rope_base: float = 10000.0,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size: sliding_window needs an int >= 1, got {window_size!r}")
        super().__init__(d_model, num_heads, rope, rope_base, window_size, layer_idx, num_layers)


declare_paper(
    arxiv="1706.03762",
    short="Transformer",
    title="Attention Is All You Need",
    authors="Vaswani, Shazeer, Parmar, Uszkoreit, Jones, Gomez, Kaiser, Polosukhin",
    venue="NeurIPS 2017",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.softmax.SoftmaxAttention",
        "linearlab.ops.attention",
        "linearlab.ops.attention_step",
        "linearlab.ops.naive_attention",
    ),
    registered=("mixer:softmax",),
    recipes=("mqar", "lm"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, cache = create_mixer("softmax", d_model=64, num_heads=4)(x)  # x: [B, T, 64]; RoPE, KV cache'
    ),
    figures=("mqar:softmax *", "lm:softmax *"),
    note=(
        "The baseline every linear mixer is compared with; positions use RoPE (RoFormer, arXiv "
        "2104.09864) instead of the paper's sinusoids, and its translation results are not reproduced."
    ),
)

declare_paper(
    arxiv="2004.05150",
    short="Longformer",
    title="Longformer: The Long-Document Transformer",
    authors="Beltagy, Peters, Cohan",
    area=MIXERS,
    status="partial",
    objects=("linearlab.layers.mixers.softmax.SlidingWindowAttention", "linearlab.ops.attention"),
    registered=("mixer:sliding_window",),
    recipes=("mqar --mixers softmax,sliding_window",),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, cache = create_mixer("sliding_window", d_model=64, window_size=16)(x)  # cache keeps 16 tokens'
    ),
    figures=("mqar:sliding_window *",),
    note=(
        "Only the causal sliding window is implemented (a baseline for recall against state size): "
        "Longformer's dilated windows and global tokens are not."
    ),
)
