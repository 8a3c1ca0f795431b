"""Deep linear networks and the exact learning dynamics of Saxe, McClelland & Ganguli (2013).

A depth-``L`` linear net computes ``x -> W_L ... W_1 x``. With whitened inputs the squared loss is
``1/2 ||T - W_L ... W_1||_F^2`` for the input-output correlation ``T = U diag(s) V^T``. Started from a
*decoupled* (balanced, aligned) initialisation, every mode ``alpha`` learns on its own; its strength
``u = u_alpha^T (W_L ... W_1) v_alpha`` obeys, with ``tau = 1 / lr`` (time in steps)::

    tau du/dt = L u^(2 - 2/L) (s - u)

For ``L = 2`` this is the logistic ``tau du/dt = 2 u (s - u)`` with the closed form
``u(t) = s e^(2st/tau) / (e^(2st/tau) - 1 + s/u0)`` and half time ``t_1/2 = tau/(2s) ln(s/u0 - 1)``.
For any ``L`` the time to go from ``u0`` to ``u1`` is ``(tau/L) int_{u0}^{u1} du / (u^(2-2/L) (s-u))``.

Example:
    >>> t, u_basis, v_basis = teacher(8, 8, [4.0, 2.0, 1.0, 0.5], seed=0)
    >>> net = DeepLinearNet.decoupled(u_basis, v_basis, depth=2, u0=1e-4)
    >>> mode_strengths(net.product(), u_basis, v_basis)   # tensor([1e-4, 1e-4, 1e-4, 1e-4])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

INITS = ("orthogonal", "gaussian", "small")


def random_orthogonal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A ``[rows, cols]`` matrix with orthonormal columns (``rows >= cols``) or rows, Haar-distributed."""
    a = torch.randn(max(rows, cols), min(rows, cols), generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # sign fix makes the distribution uniform (Haar)
    return q if rows >= cols else q.T


def teacher(
    d_out: int, d_in: int, singular_values: Sequence[float], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A correlation matrix ``T = U diag(s) V^T`` with random orthonormal singular vectors.

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


class DeepLinearNet(nn.Module):
    """``x -> W_L ... W_1 x`` with layer widths ``dims = [d_in, h_1, ..., d_out]`` (float64).

    Args:
        dims: widths, at least two entries.
        init: ``"orthogonal"`` (each ``W_l`` a random (semi-)orthogonal matrix times ``scale``),
            ``"gaussian"`` (entries ``N(0, scale^2 / fan_in)``, i.e. scaled Gaussian), or ``"small"``
            (entries ``N(0, scale^2)``, a small random start when ``scale`` is small).
        scale: gain of the initialisation (default 1.0).
        seed: seed of the initialisation.
    """

    def __init__(
        self, dims: Sequence[int], init: str = "orthogonal", scale: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__()
        dims = list(dims)
        if len(dims) < 2 or any(not isinstance(k, int) or k < 1 for k in dims):
            raise ValueError(f"dims: expected at least two positive integer widths, got {dims!r}")
        if init not in INITS:
            raise ValueError(f"init: expected one of {INITS}, got {init!r}")
        if not scale > 0:
            raise ValueError(f"scale: expected a value > 0, got {scale!r}")
        g = torch.Generator().manual_seed(seed)
        weights = []
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            if init == "orthogonal":
                w = scale * random_orthogonal(fan_out, fan_in, g)
            elif init == "gaussian":
                w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * scale / math.sqrt(fan_in)
            else:
                w = torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * scale
            weights.append(nn.Parameter(w))
        self.weights = nn.ParameterList(weights)
        self.dims = dims

    @property
    def depth(self) -> int:
        """Number of weight matrices ``L``."""
        return len(self.weights)

    @classmethod
    def decoupled(
        cls, u_basis: torch.Tensor, v_basis: torch.Tensor, depth: int, u0: float, seed: int = 0
    ) -> DeepLinearNet:
        """Balanced, aligned start: every mode has strength ``u0`` and each layer gain ``u0^(1/L)``.

        ``W_1 = a R_1 V^T``, ``W_l = a R_l R_{l-1}^T``, ``W_L = a U R_{L-1}^T`` with random orthogonal
        ``R_l`` and ``a = u0^(1/L)``, so ``W_L ... W_1 = u0 U V^T`` (square layers of width ``d``).
        """
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth: expected an integer >= 1, got {depth!r}")
        if not u0 > 0:
            raise ValueError(f"u0: expected a value > 0, got {u0!r}")
        d = u_basis.shape[0]
        if u_basis.shape != (d, d) or v_basis.shape != (d, d):
            raise ValueError(
                f"u_basis, v_basis: expected two square bases of the same size, got {tuple(u_basis.shape)} "
                f"and {tuple(v_basis.shape)}"
            )
        net = cls([d] * (depth + 1), init="orthogonal", seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        rotations = [random_orthogonal(d, d, g) for _ in range(depth - 1)]
        left = rotations + [u_basis.double()]
        right = [v_basis.double()] + rotations
        a = u0 ** (1.0 / depth)
        with torch.no_grad():
            for w, lft, rgt in zip(net.weights, left, right):
                w.copy_(a * lft @ rgt.T)
        return net

    def product(self) -> torch.Tensor:
        """The end-to-end matrix ``W_L ... W_1``: ``[d_out, d_in]``."""
        p = self.weights[0]
        for w in self.weights[1:]:
            p = w @ p
        return p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [..., d_in]`` -> ``[..., d_out]``."""
        return x @ self.product().T.to(x.dtype)


def mode_strengths(
    product: torch.Tensor, u_basis: torch.Tensor, v_basis: torch.Tensor, rank: int | None = None
) -> torch.Tensor:
    """``u_alpha = u_alpha^T P v_alpha`` for the first ``rank`` modes (default all): ``[rank]``."""
    r = min(u_basis.shape[1], v_basis.shape[1]) if rank is None else rank
    return torch.einsum(
        "ia,ij,ja->a", u_basis[:, :r].double(), product.detach().double(), v_basis[:, :r].double()
    )


def train_full_batch(
    net: DeepLinearNet, target: torch.Tensor, lr: float, steps: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch GD on ``1/2 ||target - net.product()||_F^2`` (whitened inputs).

    Returns the products after each step ``[steps + 1, d_out, d_in]`` (index 0 is the start) and the
    losses ``[steps + 1]``.
    """
    from tqdm.auto import tqdm

    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps: expected an integer >= 0, got {steps!r}")
    target = target.double()
    products, losses = [], []
    # disable=None lets tqdm hide the bar when stderr is not a terminal
    bar = tqdm(
        range(steps + 1), disable=None if progress else True, desc=f"deep linear L={net.depth}", leave=False
    )
    for _ in bar:
        net.zero_grad(set_to_none=True)
        p = net.product()
        loss = 0.5 * ((target - p) ** 2).sum()
        products.append(p.detach().clone())
        losses.append(loss.detach())
        if len(products) == steps + 1:
            break
        loss.backward()
        with torch.no_grad():
            for w in net.weights:
                w -= lr * w.grad
    return torch.stack(products), torch.stack(losses)


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
