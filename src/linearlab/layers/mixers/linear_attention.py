"""Linear attention with a choice of feature map (identity, elu1, relu, T2R, Hedgehog)."""

from __future__ import annotations

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.feature_maps import FEATURE_MAPS, create_feature_map
from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.registry import register_mixer
from linearlab.papers import MIXERS, declare_paper


@register_mixer("linear_attention")
class LinearAttention(nn.Module):
    """Causal multi-head linear attention ``o_t = phi(q_t) S_t [/ phi(q_t) z_t]``.

    Paper: Katharopoulos, Vyas, Pappas, Fleuret, "Transformers are RNNs: Fast Autoregressive
    Transformers with Linear Attention" (arXiv 2006.16236); feature maps T2R (Kasai et al.,
    arXiv 2103.13076) and Hedgehog (Zhang, Bhatia, Kumbong, Re, "The Hedgehog & the Porcupine",
    arXiv 2402.04347).

    ``S_t = S_{t-1} + phi(k_t)^T v_t``, ``z_t = z_{t-1} + phi(k_t)``; computed by the
    ``linear_attn`` ops (``chunk_linear_attn`` for prefill, ``fused_recurrent_linear_attn`` for
    single-token steps), which also form the denominator (``normalize=True``, ``eps = 1e-6``).

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``). Default: 4.
        feature_map: one of ``linearlab.layers.feature_maps.list_feature_maps()``
            (``identity, elu, elu1, relu, t2r, hedgehog``). Default: ``"elu1"``.
        normalize: divide by the denominator ``phi(q_t) . z_t + 1e-6`` (Katharopoulos / Hedgehog;
            no query scale, it would cancel). Without it the output is ``scale * phi(q_t) S_t``
            with ``scale = F ** -0.5``. Default: True.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"recurrent": [B, H, F, D/H (+1 with normalize)]}`` (``F`` = feature dim; the key sum
    ``z`` is the extra value column), float32 (float64 for float64 input).

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
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        FEATURE_MAPS.get(feature_map)  # an unknown name fails here, naming the registered maps
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize: expected a bool, got {normalize!r}")
        self.normalize = normalize
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        # separate maps for q and k (Hedgehog learns one per head for each); a query's own
        # stabiliser cancels only with the denominator, so without it q is treated like a key
        q_role = "query" if normalize else "key"
        self.q_map = create_feature_map(feature_map, self.head_dim, num_heads, role=q_role)
        self.k_map = create_feature_map(feature_map, self.head_dim, num_heads, role="key")

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        q = self.q_map(split_heads(self.q_proj(x), self.num_heads))
        k = self.k_map(split_heads(self.k_proj(x), self.num_heads))
        v = split_heads(self.v_proj(x), self.num_heads)
        op = ops.fused_recurrent_linear_attn if T == 1 else ops.chunk_linear_attn
        # normalised: no query scale (it cancels between numerator and denominator)
        o, S = op(
            q,
            k,
            v,
            scale=1.0 if self.normalize else None,
            initial_state=None if state is None else state["recurrent"],
            output_final_state=True,
            normalize=self.normalize,
        )
        return self.o_proj(merge_heads(o)), {"recurrent": S}

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, F, V = self.num_heads, self.q_map.feature_dim, self.head_dim + int(self.normalize)
        return {"recurrent": shape("B H F V", batch_size, H, F, V)}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H * F * (D/H + normalize)``, independent of ``seq_len``."""
        return self.num_heads * self.q_map.feature_dim * (self.head_dim + int(self.normalize))


declare_paper(
    arxiv="2006.16236",
    short="Linear Transformers",
    title="Transformers are RNNs: Fast Autoregressive Transformers with Linear Attention",
    authors="Katharopoulos, Vyas, Pappas, Fleuret",
    venue="ICML 2020",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.linear_attention.LinearAttention",
        "linearlab.layers.feature_maps.Elu1Map",
        "linearlab.ops.chunk_linear_attn",
        "linearlab.ops.fused_recurrent_linear_attn",
        "linearlab.ops.naive_recurrent_linear_attn",
    ),
    registered=("mixer:linear_attention", "feature map:elu1"),
    recipes=("mqar", "lm"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("linear_attention", d_model=64, feature_map="elu1")(x)  # x: [B, T, 64]'
    ),
    claim=(
        "Attention with a kernel feature map (elu + 1) is a recurrent network: linear time in the "
        "sequence length and constant memory per generated token, with quality close to softmax "
        "attention and much faster autoregressive generation (abstract; no numbers in our notes)."
    ),
    figures=("mqar:linear_elu1 *", "lm:linear_elu1 *"),
)
