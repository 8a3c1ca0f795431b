"""Synthetic activations built from sparse features: the ground truth for sparse-autoencoder studies.

``x = sum_i c_i f_i + D u + noise`` with ``n_features`` unit directions ``f_i`` in ``R^d``, sparse
non-negative coefficients ``c_i ~ Bernoulli(p) * Exp(1)``, a dense low-rank part ``D u`` (``u ~ N(0, I_r)``,
``D`` with orthonormal columns times ``dense_scale``) and isotropic Gaussian noise. With more true
features than an SAE's width, part of every SAE's error is unlearned features and the dense subspace:
the "dark matter" Engels et al. (arXiv 2410.14670) model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SparseFeatureData:
    """Activations and the ground truth behind them.

    Attributes:
        x: ``[N, d]`` activations.
        features: ``[n_features, d]`` unit feature directions.
        coefficients: ``[N, n_features]`` sparse non-negative coefficients.
        dense_basis: ``[d, r]`` orthonormal basis of the dense subspace.
    """

    x: torch.Tensor
    features: torch.Tensor
    coefficients: torch.Tensor
    dense_basis: torch.Tensor


def sparse_feature_activations(
    n: int,
    d: int = 64,
    n_features: int = 512,
    p: float = 0.02,
    dense_rank: int = 4,
    dense_scale: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> SparseFeatureData:
    """Draw ``n`` activations (see the module docstring); deterministic in ``seed``."""
    for name, value in (("n", n), ("d", d), ("n_features", n_features)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not 0 < p <= 1:
        raise ValueError(f"p: expected a probability in (0, 1], got {p}")
    if not isinstance(dense_rank, int) or not 0 <= dense_rank <= d:
        raise ValueError(f"dense_rank: expected an int in [0, d={d}], got {dense_rank!r}")
    if dense_scale < 0 or noise < 0:
        raise ValueError(f"dense_scale, noise: expected values >= 0, got {dense_scale}, {noise}")
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n_features, d, generator=g)
    features = features / features.norm(dim=1, keepdim=True)
    active = torch.rand(n, n_features, generator=g) < p
    coeff = torch.where(active, -torch.log(torch.rand(n, n_features, generator=g).clamp_min(1e-12)), 0.0)
    basis = torch.linalg.qr(torch.randn(d, max(dense_rank, 1), generator=g))[0][:, :dense_rank]
    dense = torch.randn(n, dense_rank, generator=g) @ basis.T * dense_scale
    x = coeff @ features + dense + noise * torch.randn(n, d, generator=g)
    return SparseFeatureData(x=x, features=features, coefficients=coeff, dense_basis=basis)
