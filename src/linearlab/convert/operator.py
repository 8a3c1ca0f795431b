"""The attention operator a linearised layer runs in place of softmax attention.

A :class:`LinearizedOperator` takes the layer's own (already projected, rotated and head-expanded)
queries, keys and values and computes one of:

- ``t2r`` / ``hedgehog``: normalised linear attention ``o_i = sum_j phi(q_i).phi(k_j) v_j / sum_j
  phi(q_i).phi(k_j)`` over all ``j <= i`` (``linear_attn`` ops);
- ``lolcats``: softmax over the last ``w`` tokens plus linear attention over everything older, one
  shared normaliser, a learned per-head window factor (``lolcats_attn`` ops);
- ``still`` (Meng et al., arXiv 2602.02180): softmax over the window, a bounded set of salient
  tokens (picked by self-saliency) and the tokens awaiting selection, linear attention (the
  norm-preserving map) over the rest, one normaliser (``still_attn`` ops);
- ``liger`` / ``liger_gdn`` (Lan et al., arXiv 2503.01496): ``0.5 * sliding-window softmax + 0.5 *
  gated recurrence`` over the same q, k, v, no new parameters: the recurrence's feature map is a
  softmax over the head dimension of the *unrotated* q and k, and its forget gate is built from the
  unrotated key itself (``logsigmoid(k) / 16`` per key channel for GLA; for Gated DeltaNet the key
  averaged over each head, see :func:`liger_gdn_gates`).

Its trainable parameters are the feature maps (``q_map``, ``k_map``) and, for ``lolcats``, the
per-head ``window_logit`` (``sigmoid`` of it is the window factor). Everything else in the layer
stays the pretrained model's.

In *distillation mode* (:meth:`LinearizedOperator.distill`) the operator also computes the softmax
attention the layer had before (the teacher, from the same q, k, v), records the per-layer losses
(MSE of the outputs, cross-entropy of the attention weights) and returns the teacher's output, so
the next layer sees exactly the teacher's input and every layer trains at once (LoLCATs' stage 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from linearlab import ops
from linearlab.layers.feature_maps import create_feature_map

#: methods whose softmax terms share one normaliser with the linear terms (a learned window factor)
HYBRID_METHODS = ("lolcats", "still")
#: methods built on Liger's key-derived gates (no new parameters)
LIGER_METHODS = ("liger", "liger_gdn")
#: Liger's gate temperature: log forget gate = logsigmoid(.) / 16 (as GLA)
GATE_LOGIT_NORMALIZER = 16.0


def liger_gdn_gates(k_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated DeltaNet's per-head gates from the unrotated key ``[B, T, H, D]``, no parameters.

    Liger builds GLA's per-channel gate by pooling the key projection to the gate's size. Gated
    DeltaNet wants one decay and one write strength per head, so the key is pooled to one value per
    head, ``m = mean_d k``; the log decay is ``logsigmoid(m) / 16`` (Liger's / GLA's temperature)
    and the write strength ``beta = sigmoid(m)``. The paper gives no formula for this variant; this
    is our choice, made to stay parameter-free like the GLA one.
    """
    pooled = k_raw.float().mean(-1)
    return torch.nn.functional.logsigmoid(pooled) / GATE_LOGIT_NORMALIZER, torch.sigmoid(pooled)


class LinearizedOperator(nn.Module):
    """Linear (or hybrid) attention on per-head ``q, k: [B, T, H, D]``, ``v: [B, T, H, Dv]``.

    Args:
        method: ``"t2r"``, ``"hedgehog"``, ``"lolcats"``, ``"still"``, ``"liger"`` or ``"liger_gdn"``.
        feature_map: name of a registered feature map (``linearlab.layers.feature_maps``).
        head_dim, num_heads: ``D`` and ``H`` of the queries (keys are already repeated to ``H``).
        scale: the softmax scale of the teacher (``D ** -0.5`` for the supported models).
        window_size: ``w`` of the softmax window (lolcats, still, liger): the query and the ``w - 1``
            tokens before it.
        init_window_factor: the window factor ``sigmoid(window_logit)`` at initialisation.
        chunk_size: chunk length of the chunked ops.
        teacher_window: the teacher's own sliding window (Mistral, Qwen2), used for the
            distillation target only; None = full causal attention.
        budget, block_size: ``still``: salient tokens kept per head, tokens between selections.

    State (between calls): the op's final state: ``{"recurrent": [B, H, F, Dv + 1]}`` for linear
    attention, the ``lolcats_attn`` / ``still_attn`` state dict, or Liger's ``{"recurrent", "k",
    "v"}`` (the ``w - 1``-token window cache); its size does not grow with the tokens seen.
    """

    def __init__(
        self,
        method: str,
        feature_map: str,
        head_dim: int,
        num_heads: int,
        scale: float,
        window_size: int = 64,
        init_window_factor: float = 0.1,
        chunk_size: int = 64,
        teacher_window: int | None = None,
        budget: int = 32,
        block_size: int = 16,
    ) -> None:
        super().__init__()
        self.method = method
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.scale = float(scale)
        self.window_size = window_size
        self.chunk_size = chunk_size
        self.teacher_window = teacher_window
        self.budget = budget
        self.block_size = block_size
        # a per-query shift of the features (the exp maps' overflow guard) cancels in normalised
        # linear attention, but not beside lolcats' softmax terms, which it would rescale
        q_role = "key" if method in HYBRID_METHODS else "query"
        if method in LIGER_METHODS:
            self.q_map = self.k_map = None  # parameter-free: softmax over the head dimension
        else:
            self.q_map = create_feature_map(feature_map, head_dim, num_heads, role=q_role)
            self.k_map = create_feature_map(feature_map, head_dim, num_heads, role="key")
        if method in HYBRID_METHODS:
            logit = math.log(init_window_factor / (1 - init_window_factor))
            self.window_logit = nn.Parameter(torch.full((num_heads,), logit))
        else:
            self.register_parameter("window_logit", None)
        self.distilling = False
        self.distill_losses: dict[str, torch.Tensor] = {}

    @property
    def hybrid(self) -> bool:
        return self.window_logit is not None

    def window_factor(self) -> torch.Tensor:
        """``[H]`` weight of the softmax-window terms relative to the linear ones (in (0, 1))."""
        return torch.sigmoid(self.window_logit.float())

    def extra_repr(self) -> str:
        window = f", window_size={self.window_size}" if self.hybrid else ""
        return f"method={self.method!r}, heads={self.num_heads}, head_dim={self.head_dim}{window}"

    def distill(self, on: bool = True) -> None:
        """Switch distillation mode on or off (see the module docstring)."""
        self.distilling = on
        self.distill_losses = {}

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: dict[str, torch.Tensor] | None = None,
        output_final_state: bool = False,
        q_raw: torch.Tensor | None = None,
        k_raw: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """``q, k: [B, T, H, D]`` (rotated), ``v: [B, T, H, Dv]`` -> ``(o: [B, T, H, Dv], state or None)``.

        ``q_raw, k_raw``: the same heads before the rotary embedding; Liger's feature map and gates
        read them (the other methods ignore them). In distillation mode the output is the
        teacher's and no state is returned (see the module docstring).
        """
        if self.method in LIGER_METHODS and (q_raw is None or k_raw is None):
            raise ValueError(f"q_raw, k_raw: method {self.method!r} needs the unrotated q and k")
        if not self.distilling:
            return self._student(q, k, v, state, output_final_state, q_raw, k_raw)[:2]
        if state is not None:
            raise ValueError("state: distillation runs whole sequences; call without a cache")
        # the student's output through its real (chunked) op, so the loss trains what will run
        y_pred, _, features = self._student(q, k, v, None, False, q_raw, k_raw)
        # normalised weights exist for the linear maps and LoLCATs; Liger's gated recurrence has
        # none, and STILL's depend on a discrete selection: those compare outputs only
        weights = (
            None if features is None or self.method == "still" else self.student_weights(q, k, *features)
        )
        return self._distill_outputs(q, k, v, y_pred, weights), None

    def _student(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: dict[str, torch.Tensor] | None,
        output_final_state: bool,
        q_raw: torch.Tensor | None,
        k_raw: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """``(o, state, (fq, fk) or None)``: the operator's own output, whatever the mode."""
        if self.method in LIGER_METHODS:
            return (*self._liger(q, k, v, state, output_final_state, q_raw, k_raw), None)
        fq, fk = self.q_map(q), self.k_map(k)
        run = self._hybrid if self.hybrid else self._linear
        return (*run(q, k, v, fq, fk, state, output_final_state), (fq, fk))

    def _hybrid(self, q, k, v, fq, fk, state, output_final_state):  # type: ignore[no-untyped-def]
        """LoLCATs / STILL: window (and salient) softmax + linear attention, one normaliser."""
        kwargs = dict(
            window_factor=self.window_factor(),
            window_size=self.window_size,
            scale=self.scale,
            initial_state=state,
            output_final_state=output_final_state,
        )
        if self.method == "still":
            kwargs.update(budget=self.budget, block_size=self.block_size)
            recurrent, chunked = ops.fused_recurrent_still_attn, ops.chunk_still_attn
        else:
            recurrent, chunked = ops.fused_recurrent_lolcats_attn, ops.chunk_lolcats_attn
        if q.shape[1] == 1:
            return recurrent(q, k, v, fq, fk, **kwargs)
        return chunked(q, k, v, fq, fk, chunk_size=self.chunk_size, **kwargs)

    def _linear(self, q, k, v, fq, fk, state, output_final_state):  # type: ignore[no-untyped-def]
        """T2R / Hedgehog: normalised linear attention (no query scale: it would cancel)."""
        kwargs = dict(
            scale=1.0,
            initial_state=None if state is None else state["recurrent"],
            output_final_state=output_final_state,
            normalize=True,
        )
        if q.shape[1] == 1:
            o, S = ops.fused_recurrent_linear_attn(fq, fk, v, **kwargs)
        else:
            o, S = ops.chunk_linear_attn(fq, fk, v, chunk_size=self.chunk_size, **kwargs)
        return o, (None if S is None else {"recurrent": S})

    def _liger(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        state: dict[str, torch.Tensor] | None,
        output_final_state: bool,
        q_raw: torch.Tensor,
        k_raw: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """``0.5 * sliding-window softmax(q, k) + 0.5 * gated recurrence(softmax(q_raw), softmax(k_raw))``."""
        T = q.shape[1]
        fq = torch.softmax(q_raw.float(), dim=-1).to(v.dtype)
        fk = torch.softmax(k_raw.float(), dim=-1).to(v.dtype)
        initial = None if state is None else state["recurrent"]
        common = dict(scale=1.0, initial_state=initial, output_final_state=True)
        if self.method == "liger":
            g = torch.nn.functional.logsigmoid(k_raw.float()) / GATE_LOGIT_NORMALIZER
            if T == 1:
                o_rec, S = ops.fused_recurrent_gla(fq, fk, v, gk=g, **common)
            else:
                o_rec, S = ops.chunk_gla(fq, fk, v, g, chunk_size=self.chunk_size, **common)
        else:
            g, beta = liger_gdn_gates(k_raw)
            if T == 1:
                o_rec, S = ops.fused_recurrent_gated_delta_rule(fq, fk, v, g=g, beta=beta, **common)
            else:
                o_rec, S = ops.chunk_gated_delta_rule(
                    fq, fk, v, g, beta, chunk_size=self.chunk_size, **common
                )
        cache = None if state is None else (state["k"], state["v"])
        o_swa, (k_cache, v_cache) = ops.attention_step(
            q, k, v, cache, window_size=self.window_size, scale=self.scale
        )
        o = 0.5 * o_swa + 0.5 * o_rec.to(o_swa.dtype)
        if not output_final_state:
            return o, None
        return o, {"recurrent": S, "k": k_cache, "v": v_cache}

    # -- distillation -------------------------------------------------------------------------

    def teacher_weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The teacher's causal softmax weights ``[B, H, T, T]`` (float32) from the same q, k."""
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * self.scale
        T = q.shape[1]
        allowed = _band(T, self.teacher_window, q.device)
        return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)

    def student_weights(
        self, q: torch.Tensor, k: torch.Tensor, fq: torch.Tensor, fk: torch.Tensor
    ) -> torch.Tensor:
        """The operator's own normalised attention weights ``[B, H, T, T]`` (float32), rows sum to 1.

        Quadratic in ``T``: for the distillation loss and for analysis at small ``T``; the forward
        pass never builds it.
        """
        T = q.shape[1]
        causal = _band(T, None, q.device)
        linear = torch.einsum("bihf,bjhf->bhij", fq.float(), fk.float())
        if not self.hybrid:
            a = linear.masked_fill(~causal, 0.0)
            return a / (a.sum(-1, keepdim=True) + 1e-6)
        window = _band(T, self.window_size, q.device)
        older = causal & ~window
        scores = torch.einsum("bihd,bjhd->bhij", q.float(), k.float()) * self.scale
        scores = scores.masked_fill(~window, float("-inf"))
        peak = scores.amax(-1, keepdim=True)
        soft = self.window_factor()[None, :, None, None] * torch.exp(scores - peak)
        a = soft + linear.masked_fill(~older, 0.0)
        return a / a.sum(-1, keepdim=True)

    def _distill_outputs(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        y_pred: torch.Tensor,
        a_pred: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Record the losses of ``y_pred`` (and weights ``a_pred``) against the teacher; return the teacher's output."""
        with torch.no_grad():
            a_true = self.teacher_weights(q, k)
            y_true = torch.einsum("bhij,bjhd->bihd", a_true, v.float())
            entropy = -(a_true * torch.log(a_true.clamp_min(1e-12))).sum(-1).mean()
        mse = (y_pred.float() - y_true).pow(2).mean()
        if a_pred is None:  # no normalised weights to compare (Liger's gated recurrence)
            xent = torch.full((), float("nan"))
        else:
            # Hedgehog's loss: cross-entropy of the student's weights under the teacher's, per query row
            xent = -(a_true * torch.log(a_pred.clamp_min(1e-12))).sum(-1).mean()
        self.distill_losses = {"mse": mse, "xent": xent, "teacher_entropy": entropy}
        return y_true.to(v.dtype)


def _band(T: int, window: int | None, device: torch.device) -> torch.Tensor:
    """``[T, T]`` bool: key ``j`` visible to query ``i`` (causal, and ``i - j < window`` if given)."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= i - j < window
    return allowed
