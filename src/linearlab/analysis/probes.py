"""Linear probes: ridge regression from hidden states to a target, scored by R^2 on held-out data.

A probe answers "is ``target`` linearly decodable from these features?" (Alain & Bengio 2016;
Akyürek et al. 2022 decode ``X^T Y`` and ``w_OLS`` from a transformer's hidden states). Features are
standardised with training statistics, the ridge penalty is ``lam * n_train`` so it does not
depend on the sample count, and R^2 is ``1 - SS_res / SS_tot`` per target column, averaged
uniformly (scikit-learn's ``multioutput="uniform_average"``).

Example:
    >>> probe = LinearProbe.fit(h_train, t_train, lam=1e-3)   # h: [N, F], t: [N, K]
    >>> probe.score(h_test, t_test)                             # held-out R^2, a float
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _as_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() not in (1, 2):
        raise ValueError(
            f"{name}: expected a [N] or [N, K] tensor, got shape {tuple(getattr(t, 'shape', ()))}"
        )
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: contains NaN or inf")
    return (t.unsqueeze(-1) if t.dim() == 1 else t).double()


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-column ``R^2 = 1 - SS_res / SS_tot``: ``pred, target: [N, K]`` (or ``[N]``) -> ``[K]``."""
    p, t = _as_2d("pred", pred), _as_2d("target", target)
    if p.shape != t.shape:
        raise ValueError(f"pred: expected the shape of target {tuple(t.shape)}, got {tuple(p.shape)}")
    if t.shape[0] < 2:
        raise ValueError(f"target: R^2 needs at least 2 rows, got {t.shape[0]}")
    ss_res = ((t - p) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0).clamp_min(1e-300)
    return 1.0 - ss_res / ss_tot


@dataclass
class LinearProbe:
    """An affine map ``target ~ ((features - mean) / std) @ weight + bias``.

    Attributes:
        mean, std: ``[F]`` feature standardisation from the training set.
        weight: ``[F, K]``; bias: ``[K]``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    @classmethod
    def fit(cls, features: torch.Tensor, targets: torch.Tensor, lam: float = 1e-3) -> LinearProbe:
        """Ridge fit on ``features: [N, F]``, ``targets: [N, K]`` (or ``[N]``) with penalty ``lam * N``."""
        x, t = _as_2d("features", features), _as_2d("targets", targets)
        if x.shape[0] != t.shape[0]:
            raise ValueError(f"targets: expected {x.shape[0]} rows to match features, got {t.shape[0]}")
        if not lam >= 0:
            raise ValueError(f"lam: expected a value >= 0, got {lam!r}")
        n, f = x.shape
        mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
        xs = (x - mean) / std
        t_mean = t.mean(0)
        gram = xs.T @ xs + lam * n * torch.eye(f, dtype=torch.float64)
        # lstsq instead of solve: lam = 0 with constant or duplicated features stays well defined
        weight = torch.linalg.lstsq(gram, xs.T @ (t - t_mean)).solution
        return cls(mean=mean, std=std, weight=weight, bias=t_mean)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """``features: [N, F]`` -> ``[N, K]``."""
        x = _as_2d("features", features)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features: expected {self.mean.shape[0]} columns, got {x.shape[1]}")
        return ((x - self.mean) / self.std) @ self.weight + self.bias

    def score(self, features: torch.Tensor, targets: torch.Tensor) -> float:
        """Mean held-out R^2 over target columns."""
        return float(r2_score(self.predict(features), _as_2d("targets", targets)).mean())


def probe_r2(
    train_features: torch.Tensor,
    train_targets: torch.Tensor,
    test_features: torch.Tensor,
    test_targets: torch.Tensor,
    lam: float = 1e-3,
) -> float:
    """Fit a ridge probe on the training split and return its R^2 on the test split."""
    return LinearProbe.fit(train_features, train_targets, lam).score(test_features, test_targets)
