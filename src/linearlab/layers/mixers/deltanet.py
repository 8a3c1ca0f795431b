"""DeltaNet mixer (``deltanet``).

Paper: "Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
Songlin Yang, Bailin Wang, Yu Zhang, Yikang Shen, Yoon Kim (arXiv 2406.06484, NeurIPS 2024).
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.mixer_checks import check_mixer_input, check_positive_int
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import head_dims
from linearlab.layers.norms import GatedRMSNorm, l2norm
from linearlab.layers.registry import register_mixer
from linearlab.layers.short_conv import ShortConvQKV
from linearlab.papers import MIXERS, declare_paper


@register_mixer("deltanet")
class DeltaNet(ShortConvQKV):
    """DeltaNet: linear attention whose memory is updated by the delta rule.

    Per head, with state ``S: [K, V]`` (Yang et al., arXiv 2406.06484)::

        q, k = L2Norm(SiLU(ShortConv(x W_q))), L2Norm(SiLU(ShortConv(x W_k)))
        v    = SiLU(ShortConv(x W_v)),        beta_t = sigmoid(x_t W_beta)     (one per head)
        S_t  = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1}),   o_t = (q_t / sqrt(K)) S_t
        y_t  = (RMSNorm(o_t) * swish(x_t W_g)) W_o                               (per-head norm)

    Each token takes one SGD step of size ``beta_t`` on ``||k_t S - v_t||^2``: it overwrites
    what the memory stored for ``k_t`` instead of only adding to it. Unit-norm keys and
    ``beta in (0, 1)`` keep the transition ``I - beta k^T k`` contractive. Prefill runs
    ``chunk_delta_rule``; single-token steps run ``fused_recurrent_delta_rule``.

    Args:
        d_model: model width ``D``.
        num_heads: number of heads ``H``. Default: 4.
        expand_k: total key width is ``D * expand_k`` (``K = D * expand_k / H``). Default: 1.0.
        expand_v: total value width is ``D * expand_v``. Default: 1.0.
        use_short_conv: causal depthwise convs (kernel ``conv_size``) on q, k, v. Default: True.
        conv_size: short-conv kernel size. Default: 4.
        conv_bias: bias in the short convs. Default: False.
        use_gate: swish output gate in the per-head norm (else a plain RMSNorm). Default: True.
        allow_neg_eigval: ``beta in (0, 2)`` so the transition may have negative eigenvalues.
            Default: False.
        norm_eps: RMSNorm epsilon. Default: 1e-5.
        chunk_size: chunk length of the prefill op. Default: 64.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    Shapes:
        ``x: [B, T, D]`` -> ``y: [B, T, D]``; state ``{"recurrent": [B, H, K, V], "conv_q":
        [B, H*K, conv_size-1], "conv_k": [B, H*K, conv_size-1], "conv_v": [B, H*V, conv_size-1]}``
        (no conv entries when ``use_short_conv=False``); ``"recurrent"`` is float32 (float64 for
        float64 input), the conv buffers are in x's dtype.

    Example:
        >>> mixer = DeltaNet(64, num_heads=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
        >>> y_next, state = mixer(torch.randn(1, 1, 64), state)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        use_gate: bool = True,
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("conv_size", conv_size)
        check_positive_int("chunk_size", chunk_size)
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_k_dim, self.head_v_dim = head_dims(d_model, num_heads, expand_k, expand_v)
        self.key_dim = self.head_k_dim * num_heads
        self.value_dim = self.head_v_dim * num_heads
        self.use_short_conv = use_short_conv
        self.use_gate = use_gate
        self.allow_neg_eigval = allow_neg_eigval
        self.chunk_size = chunk_size
        self.layer_idx = layer_idx
        self.num_layers = num_layers

        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.k_proj = nn.Linear(d_model, self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.b_proj = nn.Linear(d_model, num_heads, bias=False)
        self.init_qkv_convs(conv_size, conv_bias)
        if use_gate:
            self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
            self.o_norm: nn.Module = GatedRMSNorm(self.head_v_dim, eps=norm_eps)
        else:
            self.o_norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        H, K, V = self.num_heads, self.head_k_dim, self.head_v_dim
        return {"recurrent": shape("B H K V", batch_size, H, K, V), **self.qkv_conv_state_shapes(batch_size)}

    def state_size(self, seq_len: int) -> int:
        """Scalars in the state per sequence: ``H * K * V`` plus the conv buffers (constant in ``seq_len``)."""
        return self.num_heads * self.head_k_dim * self.head_v_dim + self.qkv_conv_state_size()

    def qkv(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Feature-mapped ``q, k: [B, T, H, K]`` (unit L2 norm), ``v: [B, T, H, V]`` and the new conv states."""
        B, T, _ = x.shape
        q, k, v, conv_state = self.project_qkv(x, state)
        q = l2norm(q.view(B, T, self.num_heads, self.head_k_dim))
        k = l2norm(k.view(B, T, self.num_heads, self.head_k_dim))
        return q, k, v.view(B, T, self.num_heads, self.head_v_dim), conv_state

    def beta(self, x: torch.Tensor) -> torch.Tensor:
        """Per-head write strength ``beta: [B, T, H]`` in (0, 1), or (0, 2) with ``allow_neg_eigval``."""
        beta = torch.sigmoid(self.b_proj(x))
        return 2 * beta if self.allow_neg_eigval else beta

    def recurrence(
        self,
        x: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        beta: torch.Tensor,
        initial_state: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the delta rule: chunked for prefill, recurrent for one token. Returns ``(o, final_state)``."""
        if q.shape[1] == 1:
            return ops.fused_recurrent_delta_rule(
                q, k, v, beta, initial_state=initial_state, output_final_state=True
            )
        return ops.chunk_delta_rule(
            q, k, v, beta, initial_state=initial_state, output_final_state=True, chunk_size=self.chunk_size
        )

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mix ``x: [B, T, D]``; return ``(y: [B, T, D], state)`` (pass ``state`` back to continue)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        q, k, v, conv_state = self.qkv(x, state)
        h0 = None if state is None else state["recurrent"]
        o, ht = self.recurrence(x, q, k, v, self.beta(x), h0)
        if self.use_gate:
            o = self.o_norm(o, self.g_proj(x).view(B, T, self.num_heads, self.head_v_dim))
        else:
            o = self.o_norm(o)
        y = self.o_proj(o.reshape(B, T, self.value_dim))
        return y, {"recurrent": ht, **conv_state}


declare_paper(
    arxiv="2406.06484",
    short="DeltaNet",
    title="Parallelizing Linear Transformers with the Delta Rule over Sequence Length",
    authors="Yang, Wang, Zhang, Shen, Kim",
    venue="NeurIPS 2024",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.deltanet.DeltaNet",
        "linearlab.ops.chunk_delta_rule",
        "linearlab.ops.fused_recurrent_delta_rule",
        "linearlab.ops.naive_recurrent_delta_rule",
    ),
    registered=("mixer:deltanet",),
    recipes=("mqar", "lm"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("deltanet", d_model=64, num_heads=2)(x)  # x: [B, T, 64]'
    ),
    claim=(
        "At 1.3B params / 100B tokens DeltaNet beats Mamba and GLA in perplexity and zero-shot "
        "accuracy, recall tasks included, and two hybrids (sliding-window or two global attention "
        "layers) beat Transformer++ (abstract). In Zoology's MQAR sweep: recall about 0.79, 0.96 and "
        "0.995 at states of 9K, 35K and 135K scalars, above GLA at equal state."
    ),
    figures=("mqar:deltanet *", "lm:deltanet *"),
)
