"""Reference in-context learners, run on the same prompts as the trained models.

All learners take the context ``x: [B, n, d]``, ``y: [B, n]`` and return weights ``w: [B, d]``;
``predict(w, x_query)`` turns them into predictions. They compute in float64 and return the
input dtype. Conventions (sums, not means, in ridge; means in gradient descent):

- ``ols``: minimum-norm least squares ``pinv(X) y`` (recovers ``w`` exactly when noiseless, ``n >= d``);
- ``ridge(lam)``: ``(X^T X + lam I)^{-1} X^T y``; ``lam -> 0`` gives OLS, ``lam -> inf`` gives 0;
- ``bayes_ridge``: the posterior mean under ``w ~ N(0, tau^2 I)``, noise ``sigma^2``: ridge with
  ``lam = sigma^2 / tau^2`` (the Bayes-optimal predictor for linear-Gaussian prompts);
- ``gd``: ``steps`` of (preconditioned) gradient descent from ``w_0 = 0`` on
  ``L(w) = 1/(2n) ||X w - y||^2``: ``w_{t+1} = w_t - lr * P (1/n) X^T (X w_t - y)``.

Closed forms of what these learners achieve are in :mod:`linearlab.analysis.icl_theory`.

Example:
    >>> w = ols(x_ctx, y_ctx)              # [B, n, d], [B, n] -> [B, d]
    >>> y_hat = predict(w, x_query)        # [B, m, d] -> [B, m]
"""

from __future__ import annotations

import torch


def _check_context(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a [B, n, d] tensor, got shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape[:2]:
        raise ValueError(
            f"y: expected shape [B, n] = {tuple(x.shape[:2])} to match x, got {tuple(getattr(y, 'shape', ()))}"
        )


def predict(w: torch.Tensor, x_query: torch.Tensor) -> torch.Tensor:
    """Linear predictions ``x_query @ w``: ``w: [B, d]``, ``x_query: [B, m, d]`` -> ``[B, m]``."""
    if w.dim() != 2 or x_query.dim() != 3 or x_query.shape[0] != w.shape[0] or x_query.shape[2] != w.shape[1]:
        raise ValueError(
            f"predict: expected w [B, d] and x_query [B, m, d], got {tuple(w.shape)} and {tuple(x_query.shape)}"
        )
    return (x_query @ w.unsqueeze(-1)).squeeze(-1)


def ols(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares ``pinv(X) y``: ``x: [B, n, d]``, ``y: [B, n]`` -> ``[B, d]``."""
    _check_context(x, y)
    B, n, d = x.shape
    if n == 0:
        return x.new_zeros(B, d)
    w = torch.linalg.pinv(x.double()) @ y.double().unsqueeze(-1)
    return w.squeeze(-1).to(x.dtype)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge regression ``(X^T X + lam I)^{-1} X^T y`` (``lam >= 0``; ``lam = 0`` needs ``n >= d``)."""
    _check_context(x, y)
    if not lam >= 0:
        raise ValueError(f"lam: expected a value >= 0, got {lam!r}")
    B, n, d = x.shape
    if n == 0:
        return x.new_zeros(B, d)
    xd, yd = x.double(), y.double()
    gram = xd.transpose(1, 2) @ xd + lam * torch.eye(d, dtype=torch.float64)
    w = torch.linalg.solve(gram, xd.transpose(1, 2) @ yd.unsqueeze(-1))
    return w.squeeze(-1).to(x.dtype)


def bayes_ridge(x: torch.Tensor, y: torch.Tensor, noise_var: float, w_var: float = 1.0) -> torch.Tensor:
    """Posterior mean of ``w`` under ``w ~ N(0, w_var I)`` and noise variance ``noise_var``: ridge with
    ``lam = noise_var / w_var`` (falls back to OLS when ``noise_var == 0``)."""
    if not w_var > 0:
        raise ValueError(f"w_var: expected a value > 0, got {w_var!r}")
    if not noise_var >= 0:
        raise ValueError(f"noise_var: expected a value >= 0, got {noise_var!r}")
    if noise_var == 0:
        return ols(x, y)
    return ridge(x, y, noise_var / w_var)


def gd(
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    lr: float | torch.Tensor,
    preconditioner: torch.Tensor | None = None,
    return_trajectory: bool = False,
) -> torch.Tensor:
    """Gradient descent from zero on ``1/(2n) ||X w - y||^2``.

    Args:
        x: ``[B, n, d]`` context inputs; y: ``[B, n]`` context targets.
        steps: number of steps (>= 0).
        lr: step size, a float or a ``[B]`` tensor (one per prompt).
        preconditioner: optional ``[d, d]`` matrix ``P`` (update ``-lr P grad``).
        return_trajectory: return all iterates ``[steps + 1, B, d]`` instead of the last ``[B, d]``.
    """
    _check_context(x, y)
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    B, n, d = x.shape
    if preconditioner is not None and preconditioner.shape != (d, d):
        raise ValueError(f"preconditioner: expected shape [{d}, {d}], got {tuple(preconditioner.shape)}")
    lr_t = torch.as_tensor(lr, dtype=torch.float64)
    if lr_t.dim() not in (0, 1) or (lr_t.dim() == 1 and lr_t.shape[0] != B):
        raise ValueError(f"lr: expected a float or a [B={B}] tensor, got shape {tuple(lr_t.shape)}")
    lr_t = lr_t.reshape(-1, 1) if lr_t.dim() == 1 else lr_t
    xd, yd = x.double(), y.double()
    p = None if preconditioner is None else preconditioner.double()
    w = torch.zeros(B, d, dtype=torch.float64)
    traj = [w]
    for _ in range(steps):
        residual = (xd @ w.unsqueeze(-1)).squeeze(-1) - yd
        grad = (xd.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1) / max(n, 1)
        if p is not None:
            grad = grad @ p.T
        w = w - lr_t * grad
        traj.append(w)
    out = torch.stack(traj) if return_trajectory else w
    return out.to(x.dtype)
