"""A 1-D Darcy flow problem for neural operators: ``-(a u')' = f`` on (0, 1), ``u(0) = u(1) = 0``.

The coefficient ``a`` is piecewise constant, ``a = hi`` where a Gaussian random field is >= 0 and
``lo`` elsewhere (the thresholded-GRF construction of the FNO / MgNO Darcy benchmarks, in 1-D), and
``f = 1``. The field is ``sum_k xi_k (pi^2 k^2 + tau^2)^(-alpha/2) sqrt(2) cos(pi k x)`` with
``xi_k ~ N(0, 1)``, the Neumann-eigenfunction expansion of ``(-Laplace + tau^2)^(-alpha)`` noise used
by those benchmarks' generators.

Discretisation: ``n`` nodes ``x_i = i / (n - 1)`` including both boundaries; the flux uses ``a`` at
the midpoints (harmonic mean of the two nodes, exact for a jump between them), giving a tridiagonal
system for the ``n - 2`` interior values. For constant ``a`` the scheme is exact:
``u = x (1 - x) / (2 a)``.

Example:
    >>> a, u = darcy_1d(100, resolution=128, seed=0)     # [100, 128] each, float32
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from scipy.linalg import solve_banded

from linearlab.io import atomic_save_safetensors


def gaussian_random_field(
    n_samples: int, resolution: int, seed: int, alpha: float = 2.0, tau: float = 3.0
) -> np.ndarray:
    """``[n_samples, resolution]`` samples of the cosine-series GRF on the nodes ``i / (resolution - 1)``."""
    rng = np.random.default_rng(seed)
    k = np.arange(1, resolution)
    coeff = (np.pi**2 * k**2 + tau**2) ** (-alpha / 2)
    x = np.linspace(0.0, 1.0, resolution)
    basis = np.sqrt(2) * np.cos(np.pi * k[:, None] * x[None, :])  # [K, n]
    xi = rng.standard_normal((n_samples, len(k)))
    return (xi * coeff) @ basis


def solve_darcy_1d(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """Finite-difference solution ``u [n]`` of ``-(a u')' = f`` with zero boundary values for nodal
    coefficients ``a [n] > 0``; ``f`` scalar or nodal ``[n]``."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 3:
        raise ValueError(f"a: expected a 1-D array of >= 3 nodal values, got shape {a.shape}")
    if not np.all(a > 0):
        raise ValueError(f"a: the coefficient must be positive everywhere, got min {a.min()}")
    n = a.shape[0]
    h = 1.0 / (n - 1)
    mid = 2 * a[:-1] * a[1:] / (a[:-1] + a[1:])  # a at x_{i+1/2}, i = 0..n-2
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (n,))[1:-1] * h**2
    # row i (interior node i+1): -mid[i] u_i + (mid[i] + mid[i+1]) u_{i+1} - mid[i+1] u_{i+2}
    ab = np.zeros((3, n - 2))
    ab[0, 1:] = -mid[1:-1]
    ab[1] = mid[:-1] + mid[1:]
    ab[2, :-1] = -mid[1:-1]
    u = np.zeros(n)
    u[1:-1] = solve_banded((1, 1), ab, rhs)
    return u


def darcy_1d(
    n_samples: int,
    resolution: int = 128,
    seed: int = 0,
    lo: float = 3.0,
    hi: float = 12.0,
    alpha: float = 2.0,
    tau: float = 3.0,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, u)``, each ``[n_samples, resolution]`` float32: coefficients and solutions.

    Deterministic in all arguments. With ``cache_dir`` the pair is stored there (safetensors, written
    atomically, named by a hash of the arguments) and read back on the next call.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples: expected >= 1, got {n_samples}")
    if resolution < 3:
        raise ValueError(f"resolution: expected >= 3 nodes, got {resolution}")
    if not 0 < lo < hi:
        raise ValueError(f"lo, hi: expected 0 < lo < hi, got {lo}, {hi}")
    key = dict(n=n_samples, res=resolution, seed=seed, lo=lo, hi=hi, alpha=alpha, tau=tau)
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"darcy1d_{digest}.safetensors"
        if path.is_file():
            from safetensors.torch import load_file

            data = load_file(str(path))
            return data["a"], data["u"]
    field = gaussian_random_field(n_samples, resolution, seed, alpha, tau)
    a = np.where(field >= 0, hi, lo)
    u = np.stack([solve_darcy_1d(row) for row in a])
    a_t, u_t = torch.from_numpy(a).float(), torch.from_numpy(u).float()
    if path is not None:
        atomic_save_safetensors(path, {"a": a_t, "u": u_t}, metadata={k: str(v) for k, v in key.items()})
    return a_t, u_t


def relative_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample relative L2 error ``|pred - target| / |target|`` over all but the batch dim: ``[B]``."""
    if pred.shape != target.shape:
        raise ValueError(f"pred, target: shapes differ, {tuple(pred.shape)} vs {tuple(target.shape)}")
    diff = (pred - target).flatten(1).norm(dim=1)
    return diff / target.flatten(1).norm(dim=1).clamp_min(1e-12)
