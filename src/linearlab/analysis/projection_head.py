"""Pieces of the projection-head experiment: spectral contrastive loss, augmented feature data,
per-feature weights per layer, and linear probes.

Xue, Gan, Ni, Joshi, Mirzasoleiman (ICLR 2024), "Investigating the Benefits of Projection Head for
Representation Learning". Trained from a small start, a two-layer linear network stays balanced
(``W1 W1^T = W2^T W2``), so the singular values of ``W1`` are the square roots of those of
``W2 W1``: a feature weighted ``sigma`` after the head is weighted ``sqrt(sigma)`` before it, and
pre-projection features are more evenly weighted.

The spectral contrastive loss (HaoChen et al. 2021) on a batch of positive pairs ``(z1_i, z2_i)``:

    L = -2/N sum_i z1_i . z2_i  +  1/(N(N-1)) sum_{i != j} (z1_i . z2_j)^2

For a linear ``f(x) = W x`` on data whose feature ``j`` (coordinate ``j``, values ``+-1``) survives each
of the two augmentations independently with probability ``keep_j`` (else it is redrawn), the views'
cross-covariance on feature ``j`` is ``keep_j^2`` and the optimum weights feature ``j`` by
``||W e_j|| = keep_j``; noise coordinates, redrawn in every view, get weight 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def spectral_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``z1, z2: [N, k]`` embeddings of the two views of ``N`` inputs (row ``i`` a positive pair) ->
    scalar loss; the negatives are the ``N (N - 1)`` pairs ``(z1_i, z2_j)``, ``i != j``."""
    if z1.dim() != 2 or z1.shape != z2.shape or z1.shape[0] < 2:
        raise ValueError(
            f"z1, z2: expected two [N, k] tensors of one shape with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    n = z1.shape[0]
    dots = (z1 * z2).sum(1)
    # sum_{i,j} (z1_i . z2_j)^2 = <Z1^T Z1, Z2^T Z2>: [k, k] matrices, never the [N, N] Gram matrix
    off = ((z1.T @ z1) * (z2.T @ z2)).sum() - (dots**2).sum()
    pos = dots.mean()
    return -2.0 * pos + off / (n * (n - 1))


def feature_pairs(
    n: int,
    keep: Sequence[float],
    dim: int = 20,
    strengths: Sequence[float] | None = None,
    noise: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two augmented views of ``n`` inputs with ``F = len(keep)`` features.

    Input ``i`` has features ``z_i in {-1, +1}^F``; a view puts ``strengths_j * z_ij`` (``z_ij``
    redrawn with probability ``1 - keep_j``) at coordinate ``j < F`` and fresh ``N(0, noise^2)`` on
    the other ``dim - F`` coordinates. Returns ``(x1 [n, dim], x2 [n, dim], z [n, F])``.
    """
    f = len(keep)
    if not 0 < f < dim or any(not 0 <= k <= 1 for k in keep):
        raise ValueError(f"keep: expected 1..{dim - 1} probabilities in [0, 1], got {list(keep)}")
    s = torch.ones(f) if strengths is None else torch.tensor(list(strengths), dtype=torch.float32)
    if s.shape != (f,):
        raise ValueError(f"strengths: expected {f} values (one per feature), got {list(strengths or [])}")
    kp = torch.tensor(list(keep), dtype=torch.float32)

    def sign(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator).float() * 2 - 1

    z = sign((n, f))

    def view() -> torch.Tensor:
        kept = torch.rand(n, f, generator=generator) < kp
        zf = torch.where(kept, z, sign((n, f)))
        return torch.cat([zf * s, noise * torch.randn(n, dim - f, generator=generator)], 1)

    return view(), view(), z


@torch.no_grad()
def balanced_init_(
    first: nn.Linear, second: nn.Linear, scale: float, generator: torch.Generator | None = None
) -> None:
    """Set ``W2 = second.weight`` Gaussian with std ``scale`` and ``W1 = first.weight = (W2^T W2)^(1/2) R``
    (``R`` with orthonormal rows), so ``W1 W1^T = W2^T W2`` exactly: a balanced start.

    Gradient flow conserves ``W1 W1^T - W2^T W2``, so from a balanced start the singular values of
    ``W1`` stay the square roots of those of ``W2 W1``, without needing a vanishing (and, for the
    quartic contrastive loss, vanishingly slow) initialisation.
    """
    hid, dim = first.weight.shape
    if second.weight.shape[1] != hid or hid > dim:
        raise ValueError(
            f"first, second: expected W1 [hid, dim] with hid <= dim and W2 [out, hid], got "
            f"{tuple(first.weight.shape)} and {tuple(second.weight.shape)}"
        )
    dtype = first.weight.dtype
    w2 = scale * torch.randn(second.weight.shape, generator=generator, dtype=torch.float64)
    evals, evecs = torch.linalg.eigh(w2.T @ w2)
    root = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    first.weight.copy_((root @ q[:, :hid].T).to(dtype))
    second.weight.copy_(w2.to(second.weight.dtype))


def feature_weights(layer_map: torch.Tensor, features: int) -> torch.Tensor:
    """``||M e_j||`` for ``j < features``: the weight of input coordinate ``j`` in the linear map
    ``M: [out, dim]`` (e.g. ``W1`` before the head, ``W2 W1`` after it) -> ``[features]``."""
    if layer_map.dim() != 2 or not 0 < features <= layer_map.shape[1]:
        raise ValueError(
            f"features: expected 1..{layer_map.shape[-1]} columns of a [out, dim] map, got {features} "
            f"for shape {tuple(layer_map.shape)}"
        )
    return layer_map[:, :features].norm(dim=0)


def jacobian_feature_weights(layer: nn.Module, x: torch.Tensor, features: int) -> torch.Tensor:
    """Mean over the rows of ``x: [N, dim]`` of ``||d layer(x) / d x_j||`` for ``j < features``
    (``[features]``): :func:`feature_weights` for a non-linear layer (equal to it for a linear one)."""
    jac = torch.func.vmap(torch.func.jacrev(lambda v: layer(v.unsqueeze(0)).squeeze(0)))(x)  # [N, out, dim]
    return jac[:, :, :features].norm(dim=1).mean(0)


def probe_accuracy(
    h_train: torch.Tensor, y_train: torch.Tensor, h_test: torch.Tensor, y_test: torch.Tensor, C: float = 1.0
) -> float:
    """Test accuracy of an L2-regularised logistic-regression probe (scikit-learn, inverse penalty
    ``C``) fitted on the raw representations ``h_train: [N, k]`` (not standardised: a feature the
    layer weights little pays more penalty, which is how weighting reaches the probe)."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=C, max_iter=2000)
    clf.fit(h_train.detach().double().numpy(), y_train.numpy())
    return float(clf.score(h_test.detach().double().numpy(), y_test.numpy()))
