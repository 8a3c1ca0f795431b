"""A 3-D U-Net whose blocks are reversible MBConv couplings (Pendse et al. 2020, after RevNet).

Every level holds a :class:`~linearlab.layers.vision.reversible.ReversibleSequence` of blocks
``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)`` with ``F`` and ``G`` inverted-bottleneck branches on half the
channels (1x1x1 expand x t -> GroupNorm -> ReLU6 -> 3x3x3 depthwise -> GroupNorm -> ReLU6 -> *linear*
1x1x1 project -> GroupNorm). The stem, the strided down-sampling convs, the transposed up-sampling
convs, the skip merges and the head are ordinary layers. With ``reversible=False`` the same
parameters run under plain autograd, so the two nets compute the same function and differ only in
what backward stores.
"""

from __future__ import annotations

import torch
from torch import nn

from linearlab.layers.vision.inverted_residual import InvertedResidual
from linearlab.layers.vision.reversible import ReversibleBlock, ReversibleSequence


def _rev_stack(channels: int, n: int, expand: int, reversible: bool) -> ReversibleSequence:
    def branch() -> InvertedResidual:
        return InvertedResidual(
            channels // 2, channels // 2, expand=expand, dims=3, norm="group", residual=False
        )

    return ReversibleSequence([ReversibleBlock(branch(), branch()) for _ in range(n)], reversible)


class ReversibleUNet3d(nn.Module):
    """Reversible-MBConv 3-D U-Net for voxel segmentation.

    Args:
        in_channels: input modalities C_in.
        num_classes: output classes (logits per voxel).
        base: channels of the first level (even); level i has ``base * 2**i``.
        levels: resolution levels (input sides must be divisible by ``2 ** (levels - 1)``).
        blocks: reversible blocks per stack (one stack per encoder and decoder level).
        expand: expansion factor t of the MBConv branches.
        reversible: recompute activations in backward (True) or store them (False).

    Example:
        >>> net = ReversibleUNet3d(1, 2, base=8, levels=3, blocks=2)
        >>> net(torch.randn(1, 1, 16, 16, 16)).shape
        torch.Size([1, 2, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base: int = 8,
        levels: int = 3,
        blocks: int = 2,
        expand: int = 4,
        reversible: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1),
                                 ("levels", levels, 1), ("blocks", blocks, 1), ("expand", expand, 1)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        if isinstance(base, bool) or not isinstance(base, int) or base < 2 or base % 2:
            raise ValueError(
                f"base: expected an even int >= 2 (reversible blocks split channels), got {base!r}"
            )
        self.in_channels, self.levels = in_channels, levels
        ch = [base * 2**i for i in range(levels)]
        self.stem = nn.Conv3d(in_channels, base, 3, padding=1)
        self.down_stacks = nn.ModuleList(_rev_stack(c, blocks, expand, reversible) for c in ch)
        self.downs = nn.ModuleList(nn.Conv3d(ch[i], ch[i + 1], 2, stride=2) for i in range(levels - 1))
        self.ups = nn.ModuleList(nn.ConvTranspose3d(ch[i + 1], ch[i], 2, stride=2) for i in range(levels - 1))
        self.merges = nn.ModuleList(nn.Conv3d(2 * ch[i], ch[i], 1) for i in range(levels - 1))
        self.up_stacks = nn.ModuleList(
            _rev_stack(ch[i], blocks, expand, reversible) for i in range(levels - 1)
        )
        self.head = nn.Conv3d(base, num_classes, 1)

    def set_reversible(self, reversible: bool) -> None:
        """Switch every stack between recomputing (True) and storing (False) activations."""
        for m in self.modules():
            if isinstance(m, ReversibleSequence):
                m.reversible = reversible

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C_in, D, H, W] -> logits [B, num_classes, D, H, W]``."""
        if not isinstance(x, torch.Tensor) or x.dim() != 5:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: ReversibleUNet3d expects a volume [B, C, D, H, W] (5 dims), got {got}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"x: expected {self.in_channels} input channels in dim 1, got {x.shape[1]}")
        m = 2 ** (self.levels - 1)
        if any(s % m for s in x.shape[2:]):
            raise ValueError(
                f"x: spatial sizes {list(x.shape[2:])} must be divisible by 2**(levels-1) = {m} (levels={self.levels})"
            )
        h = self.stem(x)
        skips = []
        for i, stack in enumerate(self.down_stacks):
            h = stack(h)
            if i < self.levels - 1:
                skips.append(h)
                h = self.downs[i](h)
        for i in reversed(range(self.levels - 1)):
            h = self.merges[i](torch.cat([self.ups[i](h), skips[i]], dim=1))
            h = self.up_stacks[i](h)
        return self.head(h)
