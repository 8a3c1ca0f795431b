"""The exact learning dynamics of deep linear networks (Saxe, McClelland & Ganguli 2013).

A depth-``L`` linear net ``x -> W_L ... W_1 x`` (:class:`~linearlab.models.deep_linear.DeepLinearNet`)
trained on whitened inputs minimises ``1/2 ||T - W_L ... W_1||_F^2`` for the input-output correlation
``T = U diag(s) V^T`` (:func:`teacher`). Started from a *decoupled* (balanced, aligned)
initialisation, every mode ``alpha`` learns on its own; its strength
``u = u_alpha^T (W_L ... W_1) v_alpha`` (:func:`mode_strengths`) obeys, with ``tau = 1 / lr`` (time
in steps)::

    tau du/dt = L u^(2 - 2/L) (s - u)

For ``L = 2`` this is the logistic ``tau du/dt = 2 u (s - u)`` with the closed form
``u(t) = s e^(2st/tau) / (e^(2st/tau) - 1 + s/u0)`` and half time ``t_1/2 = tau/(2s) ln(s/u0 - 1)``.
For any ``L`` the time to go from ``u0`` to ``u1`` is ``(tau/L) int_{u0}^{u1} du / (u^(2-2/L) (s-u))``.

Example:
    >>> t, u_basis, v_basis = teacher(8, 8, [4.0, 2.0, 1.0, 0.5], seed=0)
    >>> net = DeepLinearNet.decoupled(u_basis, v_basis, depth=2, u0=1e-4)
    >>> mode_strengths(net.product(), u_basis, v_basis, 4)   # tensor([1e-4, 1e-4, 1e-4, 1e-4])
    >>> half_time(4.0, 1e-4, tau=100.0)                       # steps to reach s/2 = 2.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from linearlab.models.deep_linear import random_orthogonal


def teacher(
    d_out: int, d_in: int, singular_values: Sequence[float], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The correlation matrix ``T = U diag(s) V^T`` the theory is written in, with random orthonormal
    singular vectors.

    Returns ``T: [d_out, d_in]`` and the full orthonormal bases ``U: [d_out, d_out]``,
    ``V: [d_in, d_in]`` whose first ``len(s)`` columns carry ``s`` (float64).
    """
    s = torch.as_tensor(list(singular_values), dtype=torch.float64)
    if s.dim() != 1 or len(s) == 0 or len(s) > min(d_out, d_in) or (s <= 0).any():
        raise ValueError(
            f"singular_values: expected 1..min(d_out, d_in)={min(d_out, d_in)} positive values, got {s.tolist()}"
        )
    g = torch.Generator().manual_seed(seed)
    u, v = random_orthogonal(d_out, d_out, g), random_orthogonal(d_in, d_in, g)
    r = len(s)
    return u[:, :r] @ torch.diag(s) @ v[:, :r].T, u, v


def mode_strengths(
    product: torch.Tensor, u_basis: torch.Tensor, v_basis: torch.Tensor, rank: int | None = None
) -> torch.Tensor:
    """``u_alpha = u_alpha^T P v_alpha`` of ``product: [d_out, d_in]`` for the first ``rank`` modes
    (default all): ``[rank]`` float64."""
    r = min(u_basis.shape[1], v_basis.shape[1]) if rank is None else rank
    return torch.einsum(
        "ia,ij,ja->a", u_basis[:, :r].double(), product.detach().double(), v_basis[:, :r].double()
    )


def strength_closed_form(t: torch.Tensor | float, s: float, u0: float, tau: float) -> torch.Tensor:
    """Two-layer mode strength ``u(t) = s e^(2st/tau) / (e^(2st/tau) - 1 + s/u0)`` (``t`` in steps)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    # divide through by e^(2st/tau) so large t does not overflow
    decay = torch.exp(-2.0 * s * t / tau)
    return s / (1.0 - decay + (s / u0) * decay)


def half_time(s: float, u0: float, tau: float) -> float:
    """Two-layer time to half strength ``t_1/2 = tau/(2s) ln(s/u0 - 1)`` (needs ``u0 < s/2``)."""
    if not 0 < u0 < s / 2:
        raise ValueError(f"u0: expected 0 < u0 < s/2 = {s / 2}, got {u0!r}")
    return tau / (2.0 * s) * math.log(s / u0 - 1.0)


def deep_half_time(s: float, u0: float, tau: float, depth: int) -> float:
    """Time to half strength for a depth-``L`` decoupled net:
    ``(tau/L) int_{u0}^{s/2} du / (u^(2-2/L) (s-u))`` (numerical quadrature in ``log u``)."""
    from scipy.integrate import quad

    if not 0 < u0 < s / 2:
        raise ValueError(f"u0: expected 0 < u0 < s/2 = {s / 2}, got {u0!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth: expected an integer >= 1, got {depth!r}")
    p = 2.0 - 2.0 / depth

    # substitute u = e^v: du = u dv, which keeps the integrand smooth across many decades
    def integrand(v: float) -> float:
        u = math.exp(v)
        return u ** (1.0 - p) / (s - u)

    value, _ = quad(integrand, math.log(u0), math.log(s / 2), limit=200)
    return tau / depth * value


def half_time_index(strengths: torch.Tensor, s: float) -> float:
    """First (linearly interpolated) step at which ``strengths: [steps + 1]`` reaches ``s / 2``;
    ``inf`` if it never does."""
    hit = torch.nonzero(strengths >= s / 2)
    if len(hit) == 0:
        return math.inf
    k = int(hit[0])
    if k == 0:
        return 0.0
    a, b = float(strengths[k - 1]), float(strengths[k])
    return k - 1 + (s / 2 - a) / (b - a)
