"""Deep linear networks ``x -> W_L ... W_1 x`` (Saxe, McClelland & Ganguli 2013).

Only the network and its initialisations live here; the teacher ``T = U diag(s) V^T``, the mode
strengths and the closed-form learning dynamics are in :mod:`linearlab.analysis.deep_linear_theory`,
and the full-batch GD that trains these nets is ``linearlab.train.train`` with plain SGD (see the
``deep-linear-dynamics`` recipe).

Example:
    >>> net = DeepLinearNet([8, 8, 8], init="small", scale=0.01, seed=0)   # two 8x8 layers
    >>> net.product().shape                                                # torch.Size([8, 8])
    >>> DeepLinearNet.decoupled(u_basis, v_basis, depth=3, u0=0.05)         # every mode at 0.05
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
