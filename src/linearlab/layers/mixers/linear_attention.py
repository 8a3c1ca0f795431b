"""Linear attention with a choice of feature map (identity, elu1, relu, T2R, Hedgehog)."""

from __future__ import annotations

import torch
from torch import nn

from linearlab.layers.feature_maps import create_feature_map, list_feature_maps
from linearlab.layers.mixers._shared_a import check_heads, linear_attn, merge_heads, split_heads
from linearlab.layers.modules import check_mixer_input
from linearlab.layers.registry import register_mixer


@register_mixer("linear_attention")
class LinearAttention(nn.Module):
    """Causal multi-head linear attention ``o_t = phi(q_t) S_t [/ phi(q_t) z_t]``.

    Paper: Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention" (arXiv 2006.16236); feature maps T2R (Kasai et al.,
    arXiv 2103.13076) and Hedgehog (Zhang, Bhatia, Kumbong, Re, "The Hedgehog & the Porcupine",
    arXiv 2402.04347).

    ``S_t = S_{t-1} + phi(k_t)^T v_t``, ``z_t = z_{t-1} + phi(k_t)``.

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``). Default: 4.
        feature_map: one of ``linearlab.layers.feature_maps.list_feature_maps()``
            (``identity, elu, elu1, relu, t2r, hedgehog``). Default: ``"elu1"``.
        normalize: divide by the denominator ``phi(q_t) . z_t`` (Katharopoulos / Hedgehog). Without it
            the output is ``scale * phi(q_t) S_t`` with ``scale = F ** -0.5``. Default: True.
        eps: added to the denominator. Default: 1e-6.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"S": [B, H, F, D/H (+1 with normalize)]}`` (``F`` = feature dim; the key sum ``z`` is
    the extra value column).

    Example:
        >>> mixer = LinearAttention(64, num_heads=4, feature_map="hedgehog")
        >>> y, state = mixer(torch.randn(2, 10, 64))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        feature_map: str = "elu1",
        normalize: bool = True,
        eps: float = 1e-6,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        if feature_map not in list_feature_maps():
            raise ValueError(f"feature_map: expected one of {list_feature_maps()}, got {feature_map!r}")
        self.normalize = normalize
        self.eps = eps
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        # separate maps for q and k (Hedgehog learns one per head for each)
        self.q_map = create_feature_map(feature_map, self.head_dim, num_heads)
        self.k_map = create_feature_map(feature_map, self.head_dim, num_heads)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        check_mixer_input(x, self.d_model)
        q = self.q_map(split_heads(self.q_proj(x), self.num_heads))
        k = self.k_map(split_heads(self.k_proj(x), self.num_heads))
        v = split_heads(self.v_proj(x), self.num_heads)
        o, S = linear_attn(
            q, k, v, None if state is None else state["S"], normalize=self.normalize, eps=self.eps
        )
        return self.o_proj(merge_heads(o).to(x.dtype)), {"S": S}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * F * (D/H + normalize)``, independent of ``seq_len``."""
        return self.num_heads * self.q_map.feature_dim * (self.head_dim + int(self.normalize))
