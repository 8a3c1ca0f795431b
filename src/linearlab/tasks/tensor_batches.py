"""Minibatches of an in-memory dataset for the training loop, reshuffled every epoch."""

from __future__ import annotations

import math

import torch


class ShuffledBatches:
    """``step -> (x[idx], y[idx])``: batch ``step`` of a fresh permutation per epoch.

    A pure function of the step (epoch ``e``'s permutation is drawn from ``seed`` and ``e``), so a
    resumed training sees exactly the batches an uninterrupted one would have. Each epoch covers every
    example once; its last batch is short when ``batch_size`` does not divide the dataset.

    Shapes: ``x: [N, ...]``, ``y: [N, ...]`` -> ``([B, ...], [B, ...])`` with ``B <= batch_size``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        if len(x) != len(y):
            raise ValueError(f"x, y: expected as many inputs as targets, got {len(x)} and {len(y)}")
        if not 1 <= batch_size <= len(x):
            raise ValueError(f"batch_size: expected 1..{len(x)} (the dataset's size), got {batch_size}")
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.per_epoch = math.ceil(len(y) / batch_size)
        self._perm: tuple[int, torch.Tensor] | None = None  # the current epoch and its order

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(step, self.per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.y), generator=g))
        idx = self._perm[1][i * self.batch_size : (i + 1) * self.batch_size]
        return self.x[idx], self.y[idx]
