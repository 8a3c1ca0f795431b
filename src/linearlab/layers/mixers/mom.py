"""Mixture-of-Memories mixer (``mom``).

Paper: "MoM: Linear Sequence Modeling with Mixture-of-Memories",
Jusen Du, Weigao Sun, Disen Lan, Jiaxi Hu, Yu Cheng (arXiv 2502.13685).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.decay import init_mamba2_decay, mamba2_log_decay
from linearlab.layers.mixer_checks import check_mixer_input, check_positive_int
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.multihead import head_dims
from linearlab.layers.norms import GatedRMSNorm, l2norm
from linearlab.layers.precision import compute_dtype
from linearlab.layers.registry import register_mixer
from linearlab.layers.routers import GATE_ACTIVATIONS, ActivationD2SGate
from linearlab.layers.short_conv import ShortConvQKV
from linearlab.papers import MIXERS, declare_paper


class Routing(NamedTuple):
    """Router decision for ``N`` tokens over ``M`` routed memories.

    Attributes:
        probs: ``[B, T, M]`` softmax router probabilities.
        indices: ``[B, T, topk]`` the chosen memories, highest probability first.
        weights: ``[B, T, M]`` mixing weights: the chosen memories' probabilities renormalised to
            sum to 1 per token, 0 for memories not chosen.
        mask: ``[B, T, M]`` bool, True where a memory is chosen (exactly ``topk`` per token).
    """

    probs: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor
    mask: torch.Tensor


def load_balancing_loss(probs: torch.Tensor, indices: torch.Tensor, num_memories: int) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``M * sum_m f_m * P_m`` (Fedus et al., arXiv 2101.03961).

    ``f_m`` is the fraction of routing slots (``tokens * topk``) given to memory ``m`` and ``P_m``
    the mean router probability of ``m``. It equals 1 for uniform router probabilities and grows
    to ``M / topk`` when every token prefers the same memories; only ``P`` carries gradient.

    Args:
        probs: ``[..., M]`` router probabilities.
        indices: ``[..., topk]`` chosen memories.
        num_memories: ``M``.

    Returns:
        A scalar tensor.
    """
    probs = probs.reshape(-1, num_memories)
    counts = torch.zeros(num_memories, dtype=probs.dtype, device=probs.device)
    counts.scatter_add_(
        0, indices.reshape(-1), torch.ones(indices.numel(), dtype=probs.dtype, device=probs.device)
    )
    f = counts / indices.numel()
    return num_memories * (f * probs.mean(0)).sum()


@register_mixer("mom")
class MixtureOfMemories(ShortConvQKV):
    """Mixture-of-Memories: a router sends each token to ``topk`` of ``num_memories`` gated-delta-rule memories.

    Per token ``x_t`` (Du et al., arXiv 2502.13685), with ``M`` routed memories and one optional
    shared memory ``s`` that every token updates::

        p_t = softmax(x_t W_r),   T_t = TopK(p_t, topk),   w_{t,m} = p_{t,m} / sum_{m' in T_t} p_{t,m'}
        k^m_t, v^m_t, beta^m_t, g^m_t from memory m's own projections; q_t shared by all memories
        S^m_t = GatedDeltaUpdate(S^m_{t-1}; k^m_t, v^m_t, beta^m_t, g^m_t)   if m in T_t or m = s
        S^m_t = S^m_{t-1}                                                     otherwise
        o_t = sum_{m in T_t} w_{t,m} q_t S^m_t + q_t S^s_t,   y_t = (RMSNorm(o_t) * swish(x_t W_g)) W_o

    A token a memory is not routed to leaves that memory's state exactly unchanged, so the
    memories can run in two equivalent ways (``mode``): as extra heads of one
    ``chunk_gated_delta_rule`` call over the full sequence with ``g = beta = 0`` at unrouted
    tokens (``"mask"``), or each over its own routed tokens gathered into a padded batch
    (``"gather"``, the default: less work; the paper's sort-and-gather kernel in padded rather
    than varlen form). One difference from the paper: the short convolutions run over the full
    token stream, not over each memory's routed subsequence.

    In training mode ``forward`` sets ``self.aux_loss = aux_loss_scale * load_balancing_loss``
    (a scalar tensor; the model adds it to the task loss); in eval mode ``self.aux_loss`` is None.

    Args:
        d_model: model width ``D``.
        num_heads: heads per memory ``H``. Default: 4.
        expand_k: key width per memory ``D * expand_k``. Default: 1.0.
        expand_v: value width per memory ``D * expand_v``. Default: 1.0.
        num_memories: routed memories ``M``. Default: 4.
        topk: memories per token. Default: 2.
        shared_memory: add one memory updated by every token. Default: True.
        aux_loss_scale: weight of the load-balancing loss. Default: 0.01 (the paper's configs).
        use_short_conv: causal depthwise convs on q, k, v. Default: True.
        conv_size: short-conv kernel size. Default: 4.
        conv_bias: bias in the short convs. Default: False.
        norm_eps: RMSNorm epsilon. Default: 1e-5.
        chunk_size: chunk length of the prefill op. Default: 64.
        mode: how prefill runs the routed memories. ``"gather"``: each memory runs over its own
            routed tokens only (gathered per memory and padded to the longest; about
            ``(topk + 1) / (M + 1)`` of the work); ``"mask"``: every memory runs over every
            token with ``g = beta = 0`` where unrouted (simplest; the reference). Both give the
            same result; single-token steps always use the masked form, and so does ``"gather"``
            when its padded length would be the full sequence (nothing to save). Default: ``"gather"``.
        router: ``"linear"`` (``softmax(x W_r)``, the paper's) or the name of an activation of
            :data:`~linearlab.layers.routers.GATE_ACTIVATIONS` (e.g. ``"tanh"``): the activation
            dense-to-sparse gate ``softmax(sigma(x W_r + b) / router_tau)`` of
            :class:`~linearlab.layers.routers.ActivationD2SGate` (arXiv 2401.13875). Default ``"linear"``.
        router_tau: the activation gate's temperature (> 0; only with an activation router). Default 1.0.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    Shapes:
        ``x: [B, T, D]`` -> ``y: [B, T, D]``. With ``N = M + shared_memory`` memories the state is
        ``{"recurrent": [B, N*H, K, V]`` (memory-major: heads ``m*H .. m*H+H-1`` belong to memory
        ``m``; the shared memory is last), ``"conv_q": [B, H*K, conv_size-1]``, ``"conv_k":
        [B, N*H*K, conv_size-1]``, ``"conv_v": [B, N*H*V, conv_size-1]}`` (no conv entries when
        ``use_short_conv=False``); ``"recurrent"`` is float32 (float64 for float64 input).

    Example:
        >>> mixer = MixtureOfMemories(64, num_heads=2, num_memories=4, topk=2)
        >>> y, state = mixer(torch.randn(1, 10, 64))
        >>> y_next, state = mixer(torch.randn(1, 1, 64), state)
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int = 4,
        expand_k: float = 1.0,
        expand_v: float = 1.0,
        num_memories: int = 4,
        topk: int = 2,
        shared_memory: bool = True,
        aux_loss_scale: float = 0.01,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        norm_eps: float = 1e-5,
        chunk_size: int = 64,
        mode: str = "gather",
        router: str = "linear",
        router_tau: float = 1.0,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("num_memories", num_memories)
        if mode not in ("gather", "mask"):
            raise ValueError(f"mode: expected 'gather' or 'mask', got {mode!r}")
        check_positive_int("conv_size", conv_size)
        check_positive_int("chunk_size", chunk_size)
        if not isinstance(topk, int) or isinstance(topk, bool) or not 1 <= topk <= num_memories:
            raise ValueError(f"topk: expected an int in [1, num_memories = {num_memories}], got {topk!r}")
        if aux_loss_scale < 0:
            raise ValueError(f"aux_loss_scale: expected a number >= 0, got {aux_loss_scale!r}")
        self.d_model = d_model
        self.num_heads = num_heads
        self.head_k_dim, self.head_v_dim = head_dims(d_model, num_heads, expand_k, expand_v)
        self.key_dim = self.head_k_dim * num_heads
        self.value_dim = self.head_v_dim * num_heads
        self.num_memories = num_memories
        self.topk = topk
        self.shared_memory = shared_memory
        self.num_total = num_memories + int(shared_memory)
        self.aux_loss_scale = float(aux_loss_scale)
        self.use_short_conv = use_short_conv
        self.chunk_size = chunk_size
        self.mode = mode
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.aux_loss: torch.Tensor | None = None

        N, H = self.num_total, num_heads
        if router == "linear":
            self.router: nn.Module = nn.Linear(d_model, num_memories, bias=False)
        elif router in GATE_ACTIVATIONS:
            self.router = ActivationD2SGate(d_model, num_memories, activation=router, tau=router_tau)
        else:
            raise ValueError(
                f"router: expected 'linear' or an activation of {sorted(GATE_ACTIVATIONS)}, got {router!r}"
            )
        self.q_proj = nn.Linear(d_model, self.key_dim, bias=False)
        # one wide projection per quantity holds every memory's own weights (memory-major rows)
        self.k_proj = nn.Linear(d_model, N * self.key_dim, bias=False)
        self.v_proj = nn.Linear(d_model, N * self.value_dim, bias=False)
        self.b_proj = nn.Linear(d_model, N * H, bias=False)
        self.a_proj = nn.Linear(d_model, N * H, bias=False)
        A_log, dt_bias = init_mamba2_decay(N * H)
        self.A_log = nn.Parameter(A_log)
        self.dt_bias = nn.Parameter(dt_bias)
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.dt_bias._no_weight_decay = True  # type: ignore[attr-defined]
        self.init_qkv_convs(conv_size, conv_bias)
        self.g_proj = nn.Linear(d_model, self.value_dim, bias=False)
        self.o_norm = GatedRMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(self.value_dim, d_model, bias=False)

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        NH, K, V = self.num_total * self.num_heads, self.head_k_dim, self.head_v_dim
        return {
            "recurrent": shape("B N*H K V", batch_size, NH, K, V),
            **self.qkv_conv_state_shapes(batch_size),
        }

    def state_size(self, seq_len: int) -> int:
        """Scalars in the state per sequence: ``N * H * K * V`` plus conv buffers (constant in ``seq_len``)."""
        return (
            self.num_total * self.num_heads * self.head_k_dim * self.head_v_dim + self.qkv_conv_state_size()
        )

    def route(self, x: torch.Tensor) -> Routing:
        """Top-k routing of ``x: [B, T, D]`` over the ``M`` routed memories (see :class:`Routing`)."""
        if isinstance(self.router, ActivationD2SGate):
            probs = self.router.logits(x).to(compute_dtype(x)).softmax(-1)
        else:
            probs = self.router(x).to(compute_dtype(x)).softmax(-1)
        top, indices = probs.topk(self.topk, dim=-1)
        mask = torch.zeros_like(probs, dtype=torch.bool).scatter_(-1, indices, True)
        weights = torch.zeros_like(probs).scatter(-1, indices, top / top.sum(-1, keepdim=True))
        return Routing(probs, indices, weights, mask)

    def qkv(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None, normalize_keys: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Shared ``q: [B, T, H, K]``, per-memory ``k: [B, T, N*H, K]`` (both unit L2 norm; ``k``
        left unnormalised with ``normalize_keys=False``), ``v: [B, T, N*H, V]`` and the new conv states."""
        B, T, _ = x.shape
        N, H = self.num_total, self.num_heads
        q, k, v, conv_state = self.project_qkv(x, state)
        q = l2norm(q.view(B, T, H, self.head_k_dim))
        k = k.view(B, T, N * H, self.head_k_dim)
        if normalize_keys:
            k = l2norm(k)
        return q, k, v.view(B, T, N * H, self.head_v_dim), conv_state

    def _run_masked(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        beta: torch.Tensor,
        routing: Routing,
        h0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every memory over the full sequence as extra heads; unrouted tokens get ``g = beta = 0``."""
        B, T, H, K = q.shape
        N = self.num_total
        # which memories each token writes to, [B, T, N]: its top-k plus the shared memory
        active, mix = routing.mask, routing.weights
        if self.shared_memory:
            active = torch.cat([active, active.new_ones(B, T, 1)], dim=-1)
            mix = torch.cat([mix, mix.new_ones(B, T, 1)], dim=-1)
        active = active.repeat_interleave(H, dim=-1)
        # masked_fill rather than multiplying by the mask: exact zeros, and no 0 * inf hazards
        g, beta = g.masked_fill(~active, 0.0), beta.masked_fill(~active, 0.0)
        q = q.unsqueeze(2).expand(B, T, N, H, K).reshape(B, T, N * H, K)
        if T == 1:
            o, ht = ops.fused_recurrent_gated_delta_rule(
                q, k, v, g, beta=beta, initial_state=h0, output_final_state=True
            )
        else:
            o, ht = ops.chunk_gated_delta_rule(
                q, k, v, g, beta, initial_state=h0, output_final_state=True, chunk_size=self.chunk_size
            )
        # read-out is linear in the memory, so mixing readouts == reading the mixed memory
        o = (o.view(B, T, N, H, -1) * mix.to(o.dtype)[..., None, None]).sum(2)
        return o, ht

    def _run_gathered(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        g: torch.Tensor,
        beta: torch.Tensor,
        routing: Routing,
        h0: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each routed memory runs only over its own tokens (gathered, padded to the longest).

        ``k`` comes unnormalised: the per-row L2 norm is taken after the gather, on the
        ``topk + shared`` rows per token that are used rather than all ``N``. Same result as :meth:`_run_masked` (skipped tokens leave a memory unchanged), with about
        ``(topk + shared) / (M + shared)`` of its recurrence work.
        """
        B, T, H, K = q.shape
        V = v.shape[-1]
        M, N = self.num_memories, self.num_total
        counts = routing.mask.sum(1)  # [B, M]
        L = int(counts.max())
        # stable sort puts each memory's routed time steps first, in order: idx[b, l, m] = t
        idx = torch.sort((~routing.mask).to(torch.uint8), dim=1, stable=True).indices[:, :L]
        pad = torch.arange(L, device=q.device)[None, :, None] >= counts[:, None, :]  # [B, L, M]
        # flat row numbers: token (b, t) of q, and (b, t, memory) of the per-memory tensors; one
        # index_select per tensor for the routed and the shared rows together (its backward is
        # one index_add), no expanded copies and no zero-filled full-size grads of slices
        tok = (idx + T * torch.arange(B, device=q.device)[:, None, None]).reshape(-1)  # [B*L*M]
        row = tok * N + torch.arange(M, device=q.device).repeat(B * L)
        n_routed = row.numel()
        if self.shared_memory:
            row = torch.cat([row, torch.arange(B * T, device=q.device) * N + M])

        def take(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            """``[B, T, N*H, d]`` -> memory m's routed steps ``[B, L, M*H, d]`` and the shared
            memory's ``[B, T, H, d]`` (None without one)."""
            d = t.shape[-1]
            rows = t.reshape(B * T * N, H * d).index_select(0, row)
            shared = rows[n_routed:].view(B, T, H, d) if self.shared_memory else None
            return rows[:n_routed].view(B, L, M * H, d), shared

        qr = q.reshape(B * T, H * K).index_select(0, tok).view(B, L, M * H, K)
        (kr, k_s), (vr, v_s) = take(k), take(v)
        kr, k_s = l2norm(kr), None if k_s is None else l2norm(k_s)
        (gr, g_s), (br, beta_s) = take(g[..., None]), take(beta[..., None])
        # padding steps must not touch the state: no decay, no write
        pad_h = pad.repeat_interleave(H, dim=-1)
        gr, br = gr.squeeze(-1).masked_fill(pad_h, 0.0), br.squeeze(-1).masked_fill(pad_h, 0.0)
        h0r = None if h0 is None else h0[:, : M * H]
        o_r, ht = ops.chunk_gated_delta_rule(
            qr, kr, vr, gr, br, initial_state=h0r, output_final_state=True, chunk_size=self.chunk_size
        )
        # weight each read-out by its router weight and add it back at its time step
        w = routing.weights.gather(1, idx).masked_fill(pad, 0.0).to(o_r.dtype)  # [B, L, M]
        contrib = (o_r.reshape(B, L, M, H * V) * w[..., None]).reshape(B * L * M, H * V)
        o = o_r.new_zeros(B * T, H * V).index_add_(0, tok, contrib).view(B, T, H, V)
        if self.shared_memory:
            o_s, ht_s = ops.chunk_gated_delta_rule(
                q,
                k_s,
                v_s,
                g_s.squeeze(-1),
                beta_s.squeeze(-1),
                initial_state=None if h0 is None else h0[:, M * H :],
                output_final_state=True,
                chunk_size=self.chunk_size,
            )
            o, ht = o + o_s, torch.cat([ht, ht_s], dim=1)
        return o, ht

    def _gather_saves_nothing(self, routing: Routing, T: int) -> bool:
        """True when the gathered form's padded length is the full ``T`` (short or evenly routed
        inputs): then it does the masked form's recurrence work plus the gathers and a second
        chunk call, so the masked form (same result) is cheaper."""
        L = int(routing.mask.sum(1).max())
        # the chunk op's padding: chunks of min(chunk_size, next power of two >= L, at least 16)
        C = min(self.chunk_size, max(16, 1 << (L - 1).bit_length()))
        return -(-L // C) * C >= T

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mix ``x: [B, T, D]``; return ``(y: [B, T, D], state)`` (pass ``state`` back to continue)."""
        B, T = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        H = self.num_heads
        routing = self.route(x)
        masked = T == 1 or self.mode == "mask" or self._gather_saves_nothing(routing, T)
        q, k, v, conv_state = self.qkv(x, state, normalize_keys=masked)
        g = mamba2_log_decay(self.a_proj(x), self.A_log, self.dt_bias)  # [B, T, N*H], memory-major
        beta = torch.sigmoid(self.b_proj(x))
        h0 = None if state is None else state["recurrent"]
        if masked:
            o, ht = self._run_masked(q, k, v, g, beta, routing, h0)
        else:
            o, ht = self._run_gathered(q, k, v, g, beta, routing, h0)
        o = self.o_norm(o, self.g_proj(x).view(B, T, H, self.head_v_dim))
        y = self.o_proj(o.reshape(B, T, self.value_dim))

        if self.training:
            self.aux_loss = self.aux_loss_scale * load_balancing_loss(
                routing.probs, routing.indices, self.num_memories
            )
        else:
            self.aux_loss = None
        return y, {"recurrent": ht, **conv_state}


declare_paper(
    arxiv="2502.13685",
    short="MoM",
    title="MoM: Linear Sequence Modeling with Mixture-of-Memories",
    authors="Du, Sun, Lan, Hu, Cheng",
    venue="ICLR 2026",
    area=MIXERS,
    status="implemented",
    objects=(
        "linearlab.layers.mixers.mom.MixtureOfMemories",
        "linearlab.layers.mixers.mom.load_balancing_loss",
    ),
    registered=("mixer:mom",),
    recipes=("mqar",),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("mom", d_model=64, num_heads=2, num_memories=4, topk=2)(x)  # + .aux_loss'
    ),
    claim=(
        "Beats existing linear sequence models on downstream language tasks, most on recall-intensive "
        "ones (FDA, SWDE, SQuAD, NQ, TriviaQA, DROP), and approaches Transformer quality, with "
        "linear-time training and constant-memory inference (abstract; the per-task numbers are not "
        "in our notes)."
    ),
    figures=("mqar:mom *",),
    note="The short convolutions run over the whole token stream, not over each memory's routed tokens.",
)
