"""scikit-learn's bundled handwritten digits (``load_digits``: 1,797 8x8 images, no download)."""

from __future__ import annotations

import torch


def digits_split(
    test_fraction: float = 0.2, seed: int = 0, images: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The digits scaled to [0, 1], split into train and test stratified by class.

    Returns ``(x_train, y_train, x_test, y_test)``: ``x`` is ``[N, 64]`` float32, or ``[N, 1, 8, 8]``
    with ``images=True``; ``y`` is ``[N]`` int64. The split is a function of ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: expected a value in (0, 1), got {test_fraction}")
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    if not images:
        x = x.flatten(1)
    y = torch.tensor(d.target, dtype=torch.long)
    idx_tr, idx_te = train_test_split(
        torch.arange(len(y)).numpy(), test_size=test_fraction, random_state=seed, stratify=y.numpy()
    )
    return x[idx_tr], y[idx_tr], x[idx_te], y[idx_te]
