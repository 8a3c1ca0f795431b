"""Looped linear transformer: one weight-tied LSA block applied ``b`` times (Chen et al. 2024;
Yang et al. 2023).

Tokens ``(x_j, y_j)`` for the context and ``(x_q, 0)`` for queries pass through the same
:class:`~linearlab.models.icl.LinearSelfAttention` block again and again. The label channel carries
the *residual*: with the GD construction (``LinearSelfAttention.from_gd(..., residual_form=True)``) the
context channel holds ``y_j - w_t^T x_j`` and the query channel holds ``-w_t^T x_q`` after ``t``
loops, so the prediction after loop ``t`` is ``-z_q[d]``. A trained block is read out the same way.

Example:
    >>> model = LoopedLSA(d=5, n_loops=10)
    >>> preds = model(x_ctx, y_ctx, x_query)          # [n_loops, B, m]: prediction after each loop
    >>> loss = looped_loss(preds, y_query, last=5)    # mean squared error over the last 5 loops
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.models.icl import LinearSelfAttention, build_lsa_tokens


class LoopedLSA(nn.Module):
    """One LSA block looped ``n_loops`` times.

    Args:
        d: input dimension.
        n_loops: default number of loops ``b`` (>= 1).
        init_scale: Gaussian initialisation scale of the block (default 0.002).
        label_only: the block writes only into the label channel (default True). A full ``W_PV`` also
            rewrites the inputs, which makes each loop a cubic map of the tokens; looped many times
            that diverges in training, while the GD construction never needs it.
    """

    def __init__(self, d: int, n_loops: int, init_scale: float = 0.002, label_only: bool = True) -> None:
        super().__init__()
        if not isinstance(n_loops, int) or n_loops < 1:
            raise ValueError(f"n_loops: expected an integer >= 1, got {n_loops!r}")
        self.d, self.n_loops = d, n_loops
        self.block = LinearSelfAttention(d, init_scale=init_scale, label_only=label_only)

    @classmethod
    def from_gd(
        cls, d: int, lr: float, n_loops: int, preconditioner: torch.Tensor | None = None
    ) -> LoopedLSA:
        """A looped block set by hand so that ``t`` loops equal ``t`` steps of (preconditioned) GD
        from zero with step ``lr`` on ``1/(2n) ||X w - y||^2``."""
        model = cls(d, n_loops, init_scale=0.0)
        model.block = LinearSelfAttention.from_gd(d, lr, preconditioner, residual_form=True)
        return model

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, x_query: torch.Tensor, n_loops: int | None = None
    ) -> torch.Tensor:
        """Predictions after every loop: ``x: [B, n, d]``, ``y: [B, n]``, ``x_query: [B, m, d]``
        -> ``[n_loops, B, m]``."""
        loops = self.n_loops if n_loops is None else n_loops
        if not isinstance(loops, int) or loops < 1:
            raise ValueError(f"n_loops: expected an integer >= 1, got {loops!r}")
        n = x.shape[1]
        z = build_lsa_tokens(x, y, x_query, self.d)
        preds = []
        for _ in range(loops):
            z = self.block(z, n)
            preds.append(-z[:, n:, -1])
        return torch.stack(preds)


def looped_loss(preds: torch.Tensor, y_query: torch.Tensor, last: int | None = None) -> torch.Tensor:
    """Mean squared error over the last ``last`` loops (all loops when ``None``), as in Yang et al.:
    ``preds: [b, B, m]``, ``y_query: [B, m]`` -> scalar."""
    if preds.dim() != 3 or preds.shape[1:] != y_query.shape:
        raise ValueError(
            f"preds: expected [b, *y_query.shape] = [b, {', '.join(map(str, y_query.shape))}], "
            f"got {tuple(preds.shape)}"
        )
    b = preds.shape[0]
    last = b if last is None else last
    if not isinstance(last, int) or not 1 <= last <= b:
        raise ValueError(f"last: expected an integer in [1, {b}], got {last!r}")
    return ((preds[-last:] - y_query) ** 2).mean()
