"""TransNormer's two attentions: NormAttention (linear, output-normalised) and DiagAttention (block softmax)."""

from __future__ import annotations

import math

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.feature_maps import create_feature_map
from linearlab.layers.mixer_checks import check_choice, check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, get_position, position_tensor, shape
from linearlab.layers.multihead import check_heads, merge_heads, split_heads
from linearlab.layers.norms import SimpleRMSNorm
from linearlab.layers.precision import compute_dtype
from linearlab.layers.registry import register_mixer
from linearlab.papers import MIXERS, declare_paper


def block_causal_softmax(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> torch.Tensor:
    """Causal softmax attention inside non-overlapping blocks of ``block_size`` tokens.

    ``q, k, v: [B, T, H, D]`` with token 0 at a block boundary -> ``o: [B, T, H, D]``.
    """
    B, T, H, D = q.shape
    n = -(-T // block_size)
    pad = n * block_size - T

    def blocks(t: torch.Tensor) -> torch.Tensor:
        # padding sits after the last real token, so the causal mask keeps it out of every real output
        t = torch.cat([t, t.new_zeros(B, pad, H, t.shape[-1])], dim=1) if pad else t
        return t.reshape(B * n, block_size, H, t.shape[-1])

    o = ops.attention(blocks(q), blocks(k), blocks(v), causal=True)
    return o.reshape(B, n * block_size, H, -1)[:, :T]


@register_mixer("transnormer")
class TransNormerAttention(nn.Module):
    """TransNormer attention: ``attn_type="norm"`` (NormAttention) or ``"diag"`` (DiagAttention).

    Paper: Qin, Han, Sun, Li, Kong, Barnes, Zhong, "The Devil in Linear Transformer" (EMNLP 2022,
    arXiv 2210.10340). TransNormer uses DiagAttention in the first half of the layers and
    NormAttention in the second half; build that by choosing ``attn_type`` per layer.

    - NormAttention: ``S_t = lambda S_{t-1} + phi(k_t)^T v_t``, ``o_t = SRMSNorm(phi(q_t) S_t)`` (no
      denominator, whose unbounded gradients the paper diagnoses; ``lambda = 1`` unless ``decay``).
    - DiagAttention: causal softmax attention inside non-overlapping blocks of ``block_size`` tokens
      (T2 variant), which fights the "attention dilution" of linear attention in early layers.
    Both are followed by ``W_o``.

    Args:
        d_model: model width ``D``.
        num_heads: heads ``H`` (must divide ``D``). Default: 4.
        attn_type: ``"norm"`` or ``"diag"``. Default: ``"norm"``.
        feature_map: NormAttention kernel (``"elu"`` = T1, ``"elu1"`` = T2, or any registered map).
            Default: ``"elu"``.
        decay: optional NormAttention decay ``lambda`` in (0, 1) shared by all heads. Default: None.
        block_size: DiagAttention block length. Default: 64.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"recurrent": [B, H, D/H, D/H]}`` for ``norm`` (float32, or float64 for float64 input);
    for ``diag`` the current block's keys and values ``{"k": [B, P, H, D/H], "v": [B, P, H, D/H],
    "pos": []}`` with ``P = pos % block_size``, in x's dtype.

    Example:
        >>> mixer = TransNormerAttention(64, attn_type="diag", block_size=16)
        >>> y, state = mixer(torch.randn(2, 40, 64))
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        attn_type: str = "norm",
        feature_map: str = "elu",
        decay: float | None = None,
        block_size: int = 64,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        check_choice("attn_type", attn_type, ("norm", "diag"))
        if decay is not None and not 0.0 < decay < 1.0:
            raise ValueError(f"decay: must be in (0, 1) or None, got {decay}")
        if block_size < 1:
            raise ValueError(f"block_size: must be >= 1, got {block_size}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_dim = check_heads(d_model, num_heads)
        self.attn_type = attn_type
        self.decay = decay
        self.block_size = block_size
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        if attn_type == "norm":
            self.q_map = create_feature_map(feature_map, self.head_dim, num_heads)
            self.k_map = create_feature_map(feature_map, self.head_dim, num_heads)
            self.norm = SimpleRMSNorm()

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, _ = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        if self.attn_type == "norm":
            o, new_state = self._norm_attention(q, k, v, state)
        else:
            o, new_state = self._diag_attention(q, k, v, state)
        return self.o_proj(o), new_state

    def _norm_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        q, k = self.q_map(q), self.k_map(k)
        step = q.shape[1] == 1
        kwargs = {
            "scale": 1.0,  # no 1/sqrt(d) scale: the output norm removes any global scale anyway
            "initial_state": None if state is None else state["recurrent"],
            "output_final_state": True,
        }
        if self.decay is None:
            op = ops.fused_recurrent_linear_attn if step else ops.chunk_linear_attn
            o, S = op(q, k, v, normalize=False, **kwargs)
        else:
            # one constant log decay for every head, built like the ops build RetNet's
            g_gamma = torch.full(
                (self.num_heads,), math.log(self.decay), dtype=compute_dtype(q), device=q.device
            )
            op = ops.fused_recurrent_simple_gla if step else ops.chunk_simple_gla
            o, S = op(q, k, v, g_gamma=g_gamma, **kwargs)
        return self.norm(merge_heads(o)), {"recurrent": S}

    def _diag_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, state: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pos = get_position(state)
        T = q.shape[1]
        if state is not None:
            # the cache starts at the current block's boundary, so block_causal_softmax's blocks line up
            k = torch.cat([state["k"].to(k.dtype), k], dim=1)
            v = torch.cat([state["v"].to(v.dtype), v], dim=1)
            q = torch.cat([q.new_zeros(q.shape[0], k.shape[1] - T, *q.shape[2:]), q], dim=1)
        o = block_causal_softmax(q, k, v, self.block_size)[:, -T:]
        keep = (pos + T) % self.block_size
        new_state = {
            "k": k[:, k.shape[1] - keep :],
            "v": v[:, v.shape[1] - keep :],
            "pos": position_tensor(pos + T, q.device),
        }
        return merge_heads(o), new_state

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, Dh = self.num_heads, self.head_dim
        if self.attn_type == "norm":
            return {"recurrent": shape("B H D/H D/H", batch_size, H, Dh, Dh)}
        kv = shape("B P H D/H", batch_size, None, H, Dh)
        return {"k": kv, "v": kv, "pos": shape("")}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``H (D/H)^2`` for ``norm``; for ``diag`` the largest block cache,
        ``2 * min(seq_len, block_size - 1) * D`` (bounded in ``seq_len``)."""
        if self.attn_type == "norm":
            return self.num_heads * self.head_dim * self.head_dim
        return 2 * max(1, min(seq_len, self.block_size - 1)) * self.d_model


declare_paper(
    arxiv="2210.10340",
    short="TransNormer",
    title="The Devil in Linear Transformer",
    authors="Qin, Han, Sun, Li, Kong, Barnes, Zhong",
    venue="EMNLP 2022",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.transnormer.TransNormerAttention",
        "linearlab.layers.mixers.transnormer.block_causal_softmax",
        "linearlab.layers.norms.SimpleRMSNorm",
    ),
    registered=("mixer:transnormer", "feature map:elu"),
    recipes=("mqar --mixers softmax,linear_elu1,transnormer",),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("transnormer", d_model=64, attn_type="norm")(x)  # "diag" in early layers'
    ),
    claim=(
        "The attention denominator makes gradients unbounded and linear attention dilutes its weights; "
        "with NormAttention (normalised output, no denominator) and DiagAttention (block softmax in the "
        "early layers) TransNormer beats the vanilla Transformer and other linear variants on "
        "WikiText-103, text classification and LRA with less time and memory (abstract; the table "
        "numbers are not verified in our notes)."
    ),
    figures=("mqar:transnormer *",),
    note=(
        "URPE positions are not included; build TransNormer's layout (DiagAttention in the first half "
        "of the layers, NormAttention in the second) with ModelConfig's pattern_kwargs."
    ),
)
