"""Closed forms for in-context linear regression: what the reference learners and their trained
look-alikes should achieve.

Setting: prompts ``(x_i, y_i = w^T x_i + eps_i)`` with ``x ~ N(0, S)``, ``w ~ N(0, I_d)``, noise
variance ``noise_var``.

- One step of GD from zero (Mahankali et al. 2023), the global optimum of a one-layer linear
  self-attention: the best preconditioner is ``Gamma* = ((n+1)/n S + (tr S + noise_var)/n I)^{-1}``;
  for ``S = I`` it is ``eta* I`` with ``eta* = n / (n + d + 1 + noise_var)`` and test MSE
  ``noise_var + d (1 - eta*)``. ``one_step_mse`` is the exact population MSE of any ``Gamma``.
- OLS after ``k`` examples (Akyürek et al. 2022): normalised test error ``(d - k) / d`` for ``k < d``
  and 0 from ``k = d`` when noiseless; ``noise_var (1 + d / (k - d - 1)) / d`` for ``k > d + 1``.
- Multi-step GD on ``n = r d`` Gaussian examples (Chen et al. 2024): the eigenvalues of
  ``X^T X / n`` fill the Marchenko-Pastur bulk ``[(1 - sqrt(d/n))^2, (1 + sqrt(d/n))^2]``, which
  sets the condition number and the geometric error-decay rate per step.

The Monte Carlo checks of these formulas are in ``tests/analysis/test_icl_theory.py``.
"""

from __future__ import annotations

import math

import torch


def optimal_one_step_lr(n: int, d: int, noise_var: float = 0.0) -> float:
    """Best one-step GD size for ``x ~ N(0, I_d)``, ``w ~ N(0, I_d)``: ``n / (n + d + 1 + noise_var)``."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d: expected integers >= 1, got n={n!r}, d={d!r}")
    return n / (n + d + 1 + noise_var)


def optimal_one_step_mse(n: int, d: int, noise_var: float = 0.0) -> float:
    """Test MSE of the best one-step GD (and of the optimal one-layer LSA): ``noise_var + d (1 - eta*)``."""
    return noise_var + d * (1.0 - optimal_one_step_lr(n, d, noise_var))


def optimal_preconditioner(covariance: torch.Tensor, n: int, noise_var: float = 0.0) -> torch.Tensor:
    """Best one-step preconditioner ``Gamma* = ((n+1)/n S + (tr S + noise_var)/n I)^{-1}`` for
    ``x ~ N(0, S)``, ``w ~ N(0, I)``; prediction ``(1/n) sum_i y_i x_i^T Gamma* x_q``. ``[d, d]`` float64."""
    s = covariance.double()
    d = s.shape[0]
    return torch.linalg.inv(
        (n + 1) / n * s + (torch.trace(s) + noise_var) / n * torch.eye(d, dtype=torch.float64)
    )


def one_step_mse(covariance: torch.Tensor, gamma: torch.Tensor, n: int, noise_var: float = 0.0) -> float:
    """Population test MSE of the one-step predictor ``(1/n) sum_i y_i x_i^T gamma x_q`` with
    ``w ~ N(0, I)`` (exact for Gaussian data): ``tr S + s2 - 2 tr(S G S) + tr(G S G^T H)``,
    ``H = E[h h^T] = (n+1)/n S^2 + (tr S + s2)/n S``."""
    s, g = covariance.double(), gamma.double()
    h = (n + 1) / n * s @ s + (torch.trace(s) + noise_var) / n * s
    mse = torch.trace(s) + noise_var - 2 * torch.trace(s @ g @ s) + torch.trace(g @ s @ g.T @ h)
    return float(mse)


def ols_error_by_k(d: int, n_points: int, noise_var: float) -> list[float | None]:
    """Expected OLS test error ``/ d`` on the next point after ``k = 0 .. n_points - 1`` examples
    (``x ~ N(0, I_d)``, ``w ~ N(0, I_d)``); ``None`` where no closed form applies (noisy, ``1 <= k <= d + 1``)."""
    out: list[float | None] = []
    for k in range(n_points):
        if noise_var == 0:
            out.append(max(d - k, 0) / d)
        elif k > d + 1:
            out.append(noise_var * (1 + d / (k - d - 1)) / d)
        elif k == 0:
            out.append((d + noise_var) / d)
        else:
            out.append(None)
    return out


def marchenko_pastur_gd_rates(d: int, n: int) -> dict[str, float]:
    """GD on ``1/(2n) ||X w - y||^2`` with ``n > d`` Gaussian examples, from the Marchenko-Pastur edges
    ``lambda_+- = (1 +- sqrt(d/n))^2`` of ``X^T X / n``.

    Returns ``eta_fixed = 1 / lambda_+`` (a step safe for every prompt), ``kappa_mp = lambda_+ / lambda_-``,
    the per-step error-decay rate with that step ``rate_fixed = 1 - 1/kappa`` and with the best step
    ``rate_opt = (kappa - 1) / (kappa + 1)``.
    """
    if not 1 <= d < n:
        raise ValueError(f"n: expected more examples than dimensions (n > d = {d}), got n={n!r}")
    q = math.sqrt(d / n)
    lam_plus, lam_minus = (1 + q) ** 2, (1 - q) ** 2
    kappa = lam_plus / lam_minus
    return {
        "eta_fixed": 1.0 / lam_plus,
        "kappa_mp": kappa,
        "rate_fixed": 1 - 1 / kappa,
        "rate_opt": (kappa - 1) / (kappa + 1),
    }
