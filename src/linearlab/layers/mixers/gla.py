"""Gated Linear Attention mixer (``gla``).

Paper: "Gated Linear Attention Transformers with Hardware-Efficient Training",
Songlin Yang, Bailin Wang, Yikang Shen, Rameswar Panda, Yoon Kim (arXiv 2312.06635, ICML 2024).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_mixer_input, check_positive_int
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import head_dims
from linearlab.layers.norms import GatedRMSNorm
from linearlab.layers.precision import compute_dtype
from linearlab.layers.registry import register_mixer
from linearlab.papers import MIXERS, declare_paper


@register_mixer("gla")
class GatedLinearAttention(nn.Module):
    """Gated Linear Attention: linear attention with a data-dependent per-key-channel forget gate.

    Per head, with state ``S: [K, V]`` (Yang et al., arXiv 2312.06635)::

        S_t = Diag(exp(gk_t)) S_{t-1} + k_t^T v_t,     o_t = (q_t / sqrt(K)) S_t
        gk_t = logsigmoid(x_t W1 W2 + b) / gate_logit_normalizer          (log-space, <= 0)
        y_t = (RMSNorm(o_t) * swish(x_t W_r)) W_o                          (per-head norm)

    The gate projection is low rank (``d_model -> gate_low_rank_dim -> key_dim``); dividing the
    log-sigmoid by 16 keeps the initial forget factors close to 1 (long memory). Prefill runs
    ``chunk_gla``; single-token steps run ``fused_recurrent_gla``.

    Args:
        d_model: model width ``D``.
        num_heads: number of heads ``H``. Default: 4.
        expand_k: total key width is ``D * expand_k`` (``K = D * expand_k / H`` per head). Default: 0.5.
        expand_v: total value width is ``D * expand_v``. Default: 1.0.
        gate_low_rank_dim: rank of the forget-gate projection. Default: 16.
        gate_logit_normalizer: divisor ``tau`` of the log gate. Default: 16.
        clamp_min: optional lower bound on the log gate (fla's ``clamp_min``). Default: None.
        use_output_gate: multiply the normed read-out by ``swish(x W_r)``. Default: True.
        norm_eps: RMSNorm epsilon. Default: 1e-5.
        chunk_size: chunk length of the prefill op. Default: 64.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    Shapes:
        ``x: [B, T, D]`` -> ``y: [B, T, D]``; state ``{"recurrent": [B, H, K, V]}`` (float32, or
        float64 for float64 input).

    Example:
        >>> mixer = GatedLinearAttention(64, num_heads=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
        >>> y_next, state = mixer(torch.randn(1, 1, 64), state)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        clamp_min: float | None = None,
        use_output_gate: bool = True,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("gate_low_rank_dim", gate_low_rank_dim)
        check_positive_int("chunk_size", chunk_size)
        if gate_logit_normalizer <= 0:
            raise ValueError(
                f"gate_logit_normalizer: expected a positive number, got {gate_logit_normalizer!r}"
            )
        if clamp_min is not None and clamp_min >= 0:
            raise ValueError(f"clamp_min: a log-gate lower bound must be < 0 (or None), got {clamp_min!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_k_dim, self.head_v_dim = head_dims(d_model, num_heads, expand_k, expand_v)
        self.key_dim = self.head_k_dim * num_heads
        self.value_dim = self.head_v_dim * num_heads
        self.gate_logit_normalizer = float(gate_logit_normalizer)
        self.clamp_min = clamp_min
        self.use_output_gate = use_output_gate
        self.chunk_size = chunk_size
        self.layer_idx = layer_idx
        self.num_layers = num_layers

        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        # low-rank gate projection: the bias lives on the second layer, as in the paper and fla
        self.gk_proj = nn.Sequential(
            nn.Linear(d_model, gate_low_rank_dim, bias=False), nn.Linear(gate_low_rank_dim, self.key_dim)
        )
        if use_output_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
            self.g_norm: nn.Module = GatedRMSNorm(self.head_v_dim, eps=norm_eps)
        else:
            self.g_norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        return {"recurrent": shape("B H K V", batch_size, self.num_heads, self.head_k_dim, self.head_v_dim)}

    def state_size(self, seq_len: int) -> int:
        """Scalars in the state per sequence: ``H * K * V`` (independent of ``seq_len``)."""
        return self.num_heads * self.head_k_dim * self.head_v_dim

    def log_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-key log forget gate ``gk: [B, T, H, K]`` (<= 0) for ``x: [B, T, D]``, in ``compute_dtype(x)``."""
        B, T, _ = x.shape
        # the op accumulates the log gates: bfloat16 would lose the small ones (the slow forgetting)
        gk = F.logsigmoid(self.gk_proj(x).to(compute_dtype(x))) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            gk = gk.clamp_min(self.clamp_min)
        return gk.view(B, T, self.num_heads, self.head_k_dim)

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mix ``x: [B, T, D]``; return ``(y: [B, T, D], state)`` (pass ``state`` back to continue)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        H = self.num_heads
        q = self.q_proj(x).view(B, T, H, self.head_k_dim)
        k = self.k_proj(x).view(B, T, H, self.head_k_dim)
        v = self.v_proj(x).view(B, T, H, self.head_v_dim)
        gk = self.log_gate(x)
        h0 = None if state is None else state["recurrent"]
        if T == 1:
            o, ht = ops.fused_recurrent_gla(q, k, v, gk=gk, initial_state=h0, output_final_state=True)
        else:
            o, ht = ops.chunk_gla(
                q, k, v, gk, initial_state=h0, output_final_state=True, chunk_size=self.chunk_size
            )
        if self.use_output_gate:
            o = self.g_norm(o, self.g_proj(x).view(B, T, H, self.head_v_dim))
        else:
            o = self.g_norm(o)
        y = self.o_proj(o.reshape(B, T, self.value_dim))
        return y, {"recurrent": ht}


declare_paper(
    arxiv="2312.06635",
    short="GLA",
    title="Gated Linear Attention Transformers with Hardware-Efficient Training",
    authors="Yang, Wang, Shen, Panda, Kim",
    venue="ICML 2024",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.gla.GatedLinearAttention",
        "linearlab.ops.chunk_gla",
        "linearlab.ops.fused_recurrent_gla",
        "linearlab.ops.naive_recurrent_gla",
    ),
    registered=("mixer:gla",),
    recipes=("mqar", "lm"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("gla", d_model=64, num_heads=2)(x)  # x: [B, T, 64]'
    ),
    claim=(
        "Competitive with Transformer++, RetNet and Mamba at 340M params / 15B tokens and 1.3B / 100B; "
        "trained at 2K tokens it extrapolates past 20K; its chunked kernel beats FlashAttention-2 even "
        "at 1K length (abstract). In Zoology's MQAR sweep: recall about 0.53, 0.77 and 0.95 at states "
        "of 4.6K, 18K and 69K scalars."
    ),
    figures=("mqar:gla *", "lm:gla *"),
)
