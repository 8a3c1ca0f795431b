"""In-context regression models: one-layer linear self-attention (LSA) and a small transformer.

LSA (Mahankali et al. 2023; von Oswald et al. 2023). Tokens are ``z_i = (x_i, y_i)`` for the ``n``
context points and ``(x_q, 0)`` for queries, ``Z: [B, T, d + 1]``. One layer computes::

    f(Z)_t = z_t + W_PV (1/n) sum_{j <= n} z_j z_j^T W_KQ z_t

(keys and values come from the context only, the mask ``M`` of the papers), and the prediction for a
query is the last channel of ``f(Z)``. Writing ``Gamma = W_PV[d, d] * W_KQ[:d, :d]``, the part of the
prediction that is linear in the labels is ``(1/n) sum_i y_i x_i^T Gamma x_q``: one step of
preconditioned gradient descent from ``w = 0`` when the other blocks vanish.

Transformer regressor (Garg et al. 2022; Akyürek et al. 2022): pre-norm blocks ``h + mixer(LN(h))``,
``h + MLP(LN(h))`` between a linear read-in and read-out. Prompts are interleaved as
``(x_1, 0, 0), (x_1, y_1, 1), (x_2, 0, 0), (x_2, y_2, 1), ...``: a *query* token (label channel 0,
flag 0) followed by the *example* token that reveals its label. With a causal mixer the output at the
i-th query token predicts ``y_i`` from the ``i - 1`` examples before it, so one forward pass scores
every prefix length. Any registered mixer works (``mixer="softmax"``, ``"linear_attention"``, ...);
``mixer="builtin"`` is GPT-2's causal softmax attention (see :class:`GPT2Block`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from linearlab.layers import create_mixer, list_mixers
from linearlab.ops import attention


class LinearSelfAttention(nn.Module):
    """One layer of linear self-attention in the papers' parameterisation (no softmax, no norm).

    Args:
        d: input dimension; tokens have ``d + 1`` channels (inputs then label).
        init_scale: standard deviation of the Gaussian initialisation of ``W_KQ`` and ``W_PV``
            (default 0.002, von Oswald et al.'s value).
        label_only: keep only the last row of ``W_PV`` (the layer writes only into the label channel
            and the inputs pass through unchanged), as in looped-GD constructions (default False).

    Example:
        >>> lsa = LinearSelfAttention(d=5)
        >>> y_hat = lsa.predict(x_ctx, y_ctx, x_query)   # [B, n, 5], [B, n], [B, m, 5] -> [B, m]
    """

    def __init__(self, d: int, init_scale: float = 0.002, label_only: bool = False) -> None:
        super().__init__()
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"d: expected an integer >= 1, got {d!r}")
        self.d, self.label_only = d, label_only
        self.w_kq = nn.Parameter(torch.randn(d + 1, d + 1) * init_scale)
        self.w_pv = nn.Parameter(torch.randn(d + 1, d + 1) * init_scale)
        mask = torch.zeros(d + 1, d + 1)
        mask[d] = 1.0
        self.register_buffer("pv_mask", mask if label_only else torch.ones(d + 1, d + 1), persistent=False)

    def forward(self, z: torch.Tensor, n_context: int) -> torch.Tensor:
        """Apply the layer to ``z: [B, T, d + 1]`` whose first ``n_context`` tokens are the context.

        Returns ``[B, T, d + 1]`` (every token is updated, so the layer can be looped).
        """
        if z.dim() != 3 or z.shape[-1] != self.d + 1:
            raise ValueError(f"z: expected [B, T, d + 1 = {self.d + 1}], got {tuple(z.shape)}")
        if not isinstance(n_context, int) or not 1 <= n_context <= z.shape[1]:
            raise ValueError(f"n_context: expected an integer in [1, T={z.shape[1]}], got {n_context!r}")
        ctx = z[:, :n_context]
        # (1/n) sum_j z_j z_j^T is a [D, D] moment matrix, so the layer costs O(T D^2), not O(T^2)
        moment = ctx.transpose(1, 2) @ ctx / n_context
        w_kq, w_pv = self.w_kq.to(z.dtype), (self.w_pv * self.pv_mask).to(z.dtype)
        return z + z @ w_kq.T @ moment.transpose(1, 2) @ w_pv.T

    def predict(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Predictions for ``x_query: [B, m, d]`` from the context ``x: [B, n, d]``, ``y: [B, n]`` -> ``[B, m]``."""
        z = build_lsa_tokens(x, y, x_query, self.d)
        return self(z, x.shape[1])[:, x.shape[1] :, -1]

    @property
    def preconditioner(self) -> torch.Tensor:
        """The effective one-step preconditioner ``Gamma = W_PV[d, d] * W_KQ[:d, :d]``: ``[d, d]``."""
        d = self.d
        return (self.w_pv[d, d] * self.w_kq[:d, :d]).detach()

    @property
    def effective_w_pv(self) -> torch.Tensor:
        """``W_PV`` as used in the forward pass (masked to its last row when ``label_only``)."""
        return (self.w_pv * self.pv_mask).detach()

    @classmethod
    def from_gd(
        cls, d: int, lr: float, preconditioner: torch.Tensor | None = None, residual_form: bool = False
    ) -> LinearSelfAttention:
        """An LSA whose weights implement one step of (preconditioned) GD from ``w = 0`` exactly.

        With ``residual_form=False`` the query's label channel becomes the GD prediction
        ``lr * (1/n) sum_i y_i x_i^T P^T x_q``. With ``residual_form=True`` every token's label channel
        ``r`` becomes ``r - lr (1/n) sum_j r_j x_j^T P^T x_t``: context tokens carry the residuals
        ``y_j - w_t^T x_j`` and the query carries ``-w_t^T x_q``, so looping the layer runs GD
        (von Oswald et al. 2023).
        """
        layer = cls(d, init_scale=0.0, label_only=True)
        p = torch.eye(d) if preconditioner is None else preconditioner.float()
        if p.shape != (d, d):
            raise ValueError(f"preconditioner: expected shape [{d}, {d}], got {tuple(p.shape)}")
        with torch.no_grad():
            layer.w_kq.zero_()
            layer.w_pv.zero_()
            layer.w_kq[:d, :d] = lr * p.T
            layer.w_pv[d, d] = -1.0 if residual_form else 1.0
        return layer


def build_lsa_tokens(x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, d: int) -> torch.Tensor:
    """Tokens ``[(x_i, y_i)]_{i<=n} + [(x_q, 0)]_q``: ``[B, n + m, d + 1]``."""
    if x.dim() != 3 or x.shape[-1] != d:
        raise ValueError(f"x: expected [B, n, d={d}], got {tuple(x.shape)}")
    if y.shape != x.shape[:2]:
        raise ValueError(f"y: expected shape {tuple(x.shape[:2])}, got {tuple(y.shape)}")
    if x_query.dim() != 3 or x_query.shape[0] != x.shape[0] or x_query.shape[-1] != d:
        raise ValueError(f"x_query: expected [B={x.shape[0]}, m, d={d}], got {tuple(x_query.shape)}")
    ctx = torch.cat([x, y.unsqueeze(-1)], dim=-1)
    qry = torch.cat([x_query, x_query.new_zeros(*x_query.shape[:2], 1)], dim=-1)
    return torch.cat([ctx, qry.to(ctx.dtype)], dim=1)


def interleave(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Interleaved prompt tokens for the transformer: ``x: [B, N, d]``, ``y: [B, N]`` -> ``[B, 2N, d + 2]``.

    Token ``2i`` is the query ``(x_i, 0, 0)``, token ``2i + 1`` the example ``(x_i, y_i, 1)``.
    """
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(
            f"interleave: expected x [B, N, d] and y [B, N], got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    B, N, _ = x.shape
    zeros, ones = x.new_zeros(B, N, 1), x.new_ones(B, N, 1)
    query = torch.cat([x, zeros, zeros], dim=-1)
    example = torch.cat([x, y.unsqueeze(-1), ones], dim=-1)
    return torch.stack([query, example], dim=2).reshape(B, 2 * N, x.shape[-1] + 2)


class GPT2Block(nn.Module):
    """GPT-2's pre-norm block, the one Garg et al. and Akyürek et al. train on regression prompts:
    ``h + mixer(LN(h))`` then ``h + MLP(LN(h))``, with biased projections and a tanh-GELU MLP
    ``mlp_ratio`` x wide. ``[B, T, D] -> [B, T, D]``.

    ``mixer="builtin"`` is GPT-2's causal softmax attention: biased q/k/v and output projections
    around :func:`linearlab.ops.attention`, and no positions inside the mixer (the model adds learned
    ones). Any other name is a registered mixer from :func:`linearlab.layers.create_mixer`, built as
    ``create_mixer(name, d_model=d_model, **mixer_kwargs)``.

    Why not ``models.lm.Block`` with ``create_mixer("softmax", rope=False)``: that block is LLaMA-style
    (bias-free projections, exact GELU or SwiGLU) and the registered softmax mixer has bias-free
    projections, so the trained regressor, and the ``icl-algorithms`` numbers, would change.
    """

    def __init__(
        self, d_model: int, mixer: str, num_heads: int, mlp_ratio: int, mixer_kwargs: dict | None = None
    ) -> None:
        super().__init__()
        # creation order (norms, attention or mixer, MLP) fixes the draws from the global RNG, so a
        # seeded model starts from the same weights as before this block replaced the old one
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.num_heads = num_heads
        self.mixer: nn.Module | None = None
        self.qkv: nn.Linear | None = None
        self.out: nn.Linear | None = None
        if mixer == "builtin":
            if d_model % num_heads:
                raise ValueError(f"num_heads: {num_heads} does not divide d_model={d_model}")
            self.qkv = nn.Linear(d_model, 3 * d_model)
            self.out = nn.Linear(d_model, d_model)
        else:
            if mixer not in list_mixers():
                raise ValueError(
                    f"mixer: unknown mixer {mixer!r}; choose 'builtin' or a registered one: {list_mixers()}"
                )
            self.mixer = create_mixer(mixer, d_model=d_model, **(mixer_kwargs or {}))
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_ratio * d_model, d_model),
        )

    def _mix(self, x: torch.Tensor) -> torch.Tensor:
        """The token mixer on a whole prompt ``x: [B, T, D]`` (no state is carried between calls)."""
        if self.mixer is not None:
            return self.mixer(x)[0]
        B, T, D = x.shape
        q, k, v = self.qkv(x).reshape(B, T, 3, self.num_heads, D // self.num_heads).unbind(2)
        return self.out(attention(q, k, v, causal=True).reshape(B, T, D))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self._mix(self.norm1(h))
        return h + self.mlp(self.norm2(h))


class ICLTransformer(nn.Module):
    """A small pre-norm transformer regressor for in-context regression.

    Args:
        d: input dimension of the regression task.
        d_model: hidden width (default 64).
        n_layers: number of blocks (default 3).
        num_heads: heads of the built-in attention (default 2).
        mixer: ``"builtin"`` (causal softmax attention) or any registered (causal) mixer name.
        mixer_kwargs: extra keyword arguments for a registered mixer, e.g. ``{"num_heads": 2}``.
        mlp_ratio: MLP expansion (default 4).
        max_points: longest prompt in points (learned positions cover ``2 * max_points`` tokens).

    Example:
        >>> model = ICLTransformer(d=5)
        >>> pred = model(x, y)   # x: [B, N, 5], y: [B, N] -> pred: [B, N], pred[:, i] uses points < i
    """

    def __init__(
        self,
        d: int,
        d_model: int = 64,
        n_layers: int = 3,
        num_heads: int = 2,
        mixer: str = "builtin",
        mlp_ratio: int = 4,
        max_points: int = 64,
        mixer_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d", d),
            ("d_model", d_model),
            ("n_layers", n_layers),
            ("max_points", max_points),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        self.d, self.d_model, self.max_points = d, d_model, max_points
        self.read_in = nn.Linear(d + 2, d_model)
        self.pos = nn.Parameter(torch.randn(2 * max_points, d_model) / math.sqrt(d_model))
        self.blocks = nn.ModuleList(
            GPT2Block(d_model, mixer, num_heads, mlp_ratio, mixer_kwargs) for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.read_out = nn.Linear(d_model, 1)

    def forward_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run ``tokens: [B, T, d + 2]``; return the read-out at every token ``[B, T]`` and the hidden
        states ``[h_0 (after read-in), h_1, ..., h_L]``, each ``[B, T, d_model]``."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.d + 2:
            raise ValueError(f"tokens: expected [B, T, d + 2 = {self.d + 2}], got {tuple(tokens.shape)}")
        T = tokens.shape[1]
        if T > 2 * self.max_points:
            raise ValueError(f"tokens: {T} tokens exceed 2 * max_points = {2 * self.max_points}")
        h = self.read_in(tokens) + self.pos[:T]
        hidden = [h]
        for block in self.blocks:
            h = block(h)
            hidden.append(h)
        return self.read_out(self.norm(h)).squeeze(-1), hidden

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Predictions ``[B, N]`` for ``x: [B, N, d]``, ``y: [B, N]``; ``pred[:, i]`` sees points ``< i``.

        With ``return_hidden=True`` also return the hidden states at the query tokens,
        ``L + 1`` tensors ``[B, N, d_model]``.
        """
        out, hidden = self.forward_tokens(interleave(x, y))
        pred = out[:, 0::2]
        if return_hidden:
            return pred, [h[:, 0::2] for h in hidden]
        return pred

    def predict_query(self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
        """Predictions for many queries after the same context: ``x: [B, k, d]``, ``y: [B, k]``,
        ``x_query: [B, m, d]`` -> ``[B, m]`` (each query is placed alone after the ``k`` examples)."""
        B, k, d = x.shape
        m = x_query.shape[1]
        if x_query.shape != (B, m, d):
            raise ValueError(f"x_query: expected [B={B}, m, d={d}], got {tuple(x_query.shape)}")
        ctx = interleave(x, y).repeat_interleave(m, dim=0)
        q = torch.cat([x_query.reshape(B * m, 1, d), x_query.new_zeros(B * m, 1, 2)], dim=-1)
        out, _ = self.forward_tokens(torch.cat([ctx, q.to(ctx.dtype)], dim=1))
        return out[:, -1].reshape(B, m)
