"""SAE dark matter (Engels, Riggs, Tegmark, arXiv 2410.14670): how much of an SAE's error is linear in x.

For activations ``x: [N, D]`` and an SAE's reconstruction ``x_hat``, the error is ``e = x - x_hat``.
Following the paper's repository (``JoshEngels/SAE-Dark-Matter``), on a train/test split:

- *vector R^2*: a linear map (with a bias) from ``x`` predicts ``e``; the pooled variance of ``e``
  it explains on held-out rows;
- *linear / nonlinear error*: ``LinearError = A x + b`` (the fitted prediction), ``NonlinearError =
  e - LinearError``;
- *norm R^2*: a linear regression with a bias column of ``|q|^2`` on ``x``, held-out R^2, for
  ``q`` = x, SAE(x), the error, the linear and the nonlinear error;
- *cross-width correlation*: the Pearson correlation of per-token ``|e|`` between SAEs of different
  widths (larger SAEs fail on the same tokens).

The regressions are the ridge probe of :mod:`linearlab.analysis.probes` with a negligible penalty.

Example:
    >>> dm = sae_dark_matter(acts, sae(acts)[0])
    >>> dm.vector_r2, dm.norm_r2["error"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from linearlab.analysis.probes import LinearProbe
from linearlab.papers import ANALYSIS, declare_paper

NORM_TARGETS = ("x", "sae", "error", "linear_error", "nonlinear_error")


@dataclass(frozen=True)
class DarkMatter:
    """What :func:`sae_dark_matter` measures (all on held-out rows).

    Attributes:
        vector_r2: pooled variance of the error explained by the linear prediction from ``x``.
        norm_r2: held-out R^2 of ``|q|^2 ~ x`` (with a bias) for each name in :data:`NORM_TARGETS`.
        linear_share: ``sum |LinearError|^2 / sum |e|^2``.
        fvu: the SAE's fraction of variance unexplained, ``sum |e|^2 / sum |x - mean x|^2``.
        n_train, n_test: split sizes.
    """

    vector_r2: float
    norm_r2: dict[str, float]
    linear_share: float
    fvu: float
    n_train: int
    n_test: int

    def to_dict(self) -> dict:
        return asdict(self)


def _split(n: int, train_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction: expected a value in (0, 1), got {train_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(round(train_fraction * n))
    if cut < 2 or n - cut < 2:
        raise ValueError(f"x: {n} rows leave fewer than 2 on one side of a {train_fraction} split")
    return perm[:cut], perm[cut:]


def pooled_r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - sum |target - pred|^2 / sum |target - mean(target)|^2`` over all entries of ``[N, K]``."""
    t, p = target.double(), pred.double()
    return float(1 - ((t - p) ** 2).sum() / ((t - t.mean(0)) ** 2).sum().clamp_min(1e-300))


def sae_dark_matter(
    x: torch.Tensor, x_hat: torch.Tensor, train_fraction: float = 0.8, seed: int = 0, lam: float = 1e-8
) -> DarkMatter:
    """Measure the linearly predictable part of the SAE error ``x - x_hat`` (``[N, D]`` each)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise ValueError(f"x: expected [N, D] activations, got {getattr(x, 'shape', type(x).__name__)}")
    if not isinstance(x_hat, torch.Tensor) or x_hat.shape != x.shape:
        raise ValueError(
            f"x_hat: expected the reconstruction with the shape of x {tuple(x.shape)}, "
            f"got {getattr(x_hat, 'shape', type(x_hat).__name__)}"
        )
    x, x_hat = x.detach().double(), x_hat.detach().double()
    e = x - x_hat
    tr, te = _split(x.shape[0], train_fraction, seed)
    probe = LinearProbe.fit(x[tr], e[tr], lam)
    lin = probe.predict(x)
    vector_r2 = pooled_r2(lin[te], e[te])
    quantities = {"x": x, "sae": x_hat, "error": e, "linear_error": lin, "nonlinear_error": e - lin}
    norm_r2 = {}
    for name, q in quantities.items():
        target = (q**2).sum(-1)
        norm_r2[name] = LinearProbe.fit(x[tr], target[tr], lam).score(x[te], target[te])
    return DarkMatter(
        vector_r2=vector_r2,
        norm_r2=norm_r2,
        linear_share=float((lin[te] ** 2).sum() / (e[te] ** 2).sum().clamp_min(1e-300)),
        fvu=float((e**2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-300)),
        n_train=len(tr),
        n_test=len(te),
    )


def error_norm_correlation(errors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Pearson correlation ``[W, W]`` of per-row error norms between SAEs (errors ``[N, D]`` each)."""
    if len(errors) < 2:
        raise ValueError(f"errors: expected the errors of at least 2 SAEs, got {len(errors)}")
    shapes = {tuple(e.shape) for e in errors}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"errors: expected [N, D] tensors of one shape, got {sorted(shapes)}")
    norms = torch.stack([e.detach().double().norm(dim=-1) for e in errors])
    return torch.corrcoef(norms)


declare_paper(
    arxiv="2410.14670",
    short="SAE dark matter",
    title="Decomposing The Dark Matter of Sparse Autoencoders",
    authors="Engels, Riggs, Tegmark",
    venue="TMLR 2025",
    area=ANALYSIS,
    status="implemented",
    objects=(
        "linearlab.analysis.sae.TopKSAE",
        "linearlab.analysis.sae.train_sae",
        "linearlab.analysis.sae_dark_matter.sae_dark_matter",
        "linearlab.analysis.sae_dark_matter.error_norm_correlation",
    ),
    recipes=("sae-dark-matter",),
    usage=(
        "from linearlab.analysis.sae import train_sae; from linearlab.analysis.sae_dark_matter import sae_dark_matter\n"
        "acts = x.reshape(-1, 64); dm = sae_dark_matter(acts, train_sae(acts, width=128, k=8, steps=50)(acts)[0])"
    ),
    claim=(
        "About half of an SAE's error vector and over 90% of its norm are linearly predictable from the "
        "input activation; per-token error norms of SAEs of different sizes are strongly correlated "
        "(abstract)."
    ),
    note="The gradient-pursuit and earlier-layer-SAE reductions of the nonlinear error are not implemented.",
)
