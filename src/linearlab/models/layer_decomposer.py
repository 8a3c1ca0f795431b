"""A tiny U-Net that splits an image into layers: (image, object mask) -> background RGB + foreground RGBA.

The CPU-sized stand-in for LayerDecomp's diffusion transformer (Yang et al., CVPR 2025): same inputs
and outputs, so the same recomposition (consistency) loss applies,
``|over(fg, bg) - image|`` (:func:`linearlab.layers.compositing.recomposition_loss`).

Example:
    >>> net = LayerDecomposer(base=16)
    >>> bg, fg = net(torch.rand(2, 3, 32, 32), torch.ones(2, 1, 32, 32))   # [2, 3, 32, 32], [2, 4, 32, 32]
"""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(1, cout),
        nn.GELU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(1, cout),
        nn.GELU(),
    )


class LayerDecomposer(nn.Module):
    """U-Net with ``depth`` down/up levels of widths ``base * 2**i``; 7 output channels (3 background,
    4 foreground), squashed to [0, 1] by a sigmoid. ``H, W`` must be divisible by ``2**depth``.

    The background and foreground colour heads predict residuals (in logit space) on the input image:
    most of the background is visible, and an opaque foreground's colour is the image's.
    """

    def __init__(self, base: int = 16, depth: int = 2) -> None:
        super().__init__()
        if base < 1 or depth < 1:
            raise ValueError(f"base, depth: expected positive integers, got {base}, {depth}")
        self.depth = depth
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(4 if i == 0 else widths[i - 1], widths[i]) for i in range(depth)])
        self.mid = _block(widths[depth - 1], widths[depth])
        self.up = nn.ModuleList(
            [nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth))]
        )
        self.dec = nn.ModuleList([_block(2 * widths[i], widths[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(widths[0], 7, 1)
        self.pool = nn.AvgPool2d(2)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image: [B, 3, H, W]``, ``mask: [B, 1, H, W]`` -> ``(background [B, 3, H, W], foreground
        [B, 4, H, W])``, straight RGBA in [0, 1]."""
        if image.dim() != 4 or image.shape[1] != 3 or mask.shape != (image.shape[0], 1, *image.shape[2:]):
            raise ValueError(
                f"image, mask: expected [B, 3, H, W] and [B, 1, H, W], got {tuple(image.shape)}, {tuple(mask.shape)}"
            )
        k = 2**self.depth
        if image.shape[-1] % k or image.shape[-2] % k:
            raise ValueError(
                f"image: H and W must be divisible by 2**depth = {k}, got {tuple(image.shape[-2:])}"
            )
        h = torch.cat([image, mask], 1)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.mid(h)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            h = dec(torch.cat([up(h), skip], 1))
        o = self.out(h)
        logit_img = torch.logit(image.clamp(1e-3, 1 - 1e-3))
        bg = torch.sigmoid(logit_img + o[:, :3])
        fg_rgb = torch.sigmoid(logit_img + o[:, 3:6])  # where the object is opaque its colour is the image's
        alpha = torch.sigmoid(o[:, 6:7])
        return bg, torch.cat([fg_rgb, alpha], 1)
