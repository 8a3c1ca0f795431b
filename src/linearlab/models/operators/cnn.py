"""A plain 1-D / 2-D CNN baseline for operator learning, sized to a parameter budget.

Example:
    >>> net = ConvNet.with_budget(dim=1, budget=20_000, depth=6)
    >>> y = net(torch.randn(8, 1, 128))                     # [8, 1, 128]
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.models.operators.mgno import _conv


class ConvNet(nn.Module):
    """``depth`` same-padding convolutions (kernel ``kernel``) of ``width`` channels with GELU between,
    zero padding; ``x: [B, in_channels, *grid] -> [B, out_channels, *grid]``."""

    def __init__(
        self,
        dim: int = 1,
        width: int = 32,
        depth: int = 6,
        kernel: int = 5,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if depth < 2 or width < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(
                f"depth, width, kernel: expected depth >= 2, width >= 1, odd kernel, got {depth}, {width}, {kernel}"
            )
        conv = _conv(dim)
        chans = [in_channels] + [width] * (depth - 1) + [out_channels]
        layers: list[nn.Module] = []
        for i in range(depth):
            layers.append(conv(chans[i], chans[i + 1], kernel, padding=kernel // 2))
            if i < depth - 1:
                layers.append(nn.GELU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @classmethod
    def with_budget(
        cls,
        dim: int,
        budget: int,
        depth: int = 6,
        kernel: int = 5,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> ConvNet:
        """The net of this ``depth`` whose width makes its parameter count closest to ``budget``."""
        if budget < 1:
            raise ValueError(f"budget: expected a positive parameter count, got {budget}")
        k = kernel**dim

        def count(w: int) -> int:  # weights + biases of in->w, (depth-2) x w->w, w->out
            return (
                k * in_channels * w + w + (depth - 2) * (k * w * w + w) + k * w * out_channels + out_channels
            )

        best = min(range(1, 4097), key=lambda w: abs(count(w) - budget))
        best = (best,)
        return cls(dim, best[0], depth, kernel, in_channels, out_channels)
