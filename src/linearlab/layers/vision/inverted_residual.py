"""MobileNetV2's inverted residual block with a linear bottleneck, for 2-D images and 3-D volumes.

    x -> 1x1 expand (x t) -> norm -> ReLU6 -> 3x3 depthwise (stride s) -> norm -> ReLU6
      -> 1x1 project -> norm -> [bottleneck_act] -> (+ x when s == 1 and in == out)

The projection to the narrow bottleneck is *linear* (``bottleneck_act=None``): Sandler et al. argue
that a ReLU on a low-dimensional manifold destroys information a wide layer could keep, and
``bottleneck_act="relu6"`` is their ablation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

BOTTLENECK_ACTS = (None, "relu6")
NORMS = ("batch", "group", "none")


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    return value


def make_norm(norm: str, channels: int, dims: int) -> nn.Module:
    """``"batch"`` (BatchNorm2d/3d), ``"group"`` (GroupNorm, ``gcd(8, channels)`` groups: its output does
    not depend on the rest of the batch and it keeps no running statistics, so recomputing it in a
    reversible block's backward gives the same numbers) or ``"none"``."""
    if norm == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")


def check_spatial_input(x: torch.Tensor, dims: int, channels: int, who: str) -> None:
    """``x`` must be ``[B, C, H, W]`` (dims=2) or ``[B, C, D, H, W]`` (dims=3) with ``C == channels``."""
    layout = "[B, C, H, W]" if dims == 2 else "[B, C, D, H, W]"
    if not isinstance(x, torch.Tensor) or x.dim() != dims + 2:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: {who} is {dims}-D and expects {layout} ({dims + 2} dims), got {got}")
    if x.shape[1] != channels:
        raise ValueError(f"x: {who} expects {channels} channels in dim 1 of {layout}, got {x.shape[1]}")


class InvertedResidual(nn.Module):
    """Inverted residual block (MobileNetV2), 2-D or 3-D.

    Args:
        in_channels, out_channels: bottleneck widths.
        stride: stride of the depthwise conv (1 or 2); the shortcut exists when ``stride == 1`` and
            ``in_channels == out_channels``.
        expand: expansion factor t (hidden width ``t * in_channels``; 1 skips the expansion conv).
        bottleneck_act: None (linear bottleneck, the paper's choice) or ``"relu6"`` (the ablation).
        dims: 2 (images ``[B, C, H, W]``) or 3 (volumes ``[B, C, D, H, W]``).
        norm: ``"batch"``, ``"group"`` or ``"none"`` (see :func:`make_norm`).
        kernel_size: depthwise kernel (3).
        residual: add the shortcut where shapes allow (False: the block is the bare branch, as inside
            a reversible coupling, which supplies its own residual).

    Example:
        >>> blk = InvertedResidual(8, 8, stride=1, expand=6)
        >>> blk(torch.randn(2, 8, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expand: int = 6,
        bottleneck_act: str | None = None,
        dims: int = 2,
        norm: str = "batch",
        kernel_size: int = 3,
        residual: bool = True,
    ) -> None:
        super().__init__()
        _check_int("in_channels", in_channels, 1)
        _check_int("out_channels", out_channels, 1)
        _check_int("expand", expand, 1)
        if stride not in (1, 2) or isinstance(stride, bool):
            raise ValueError(f"stride: expected 1 or 2, got {stride!r}")
        if bottleneck_act not in BOTTLENECK_ACTS:
            raise ValueError(f"bottleneck_act: expected None (linear) or 'relu6', got {bottleneck_act!r}")
        if dims not in (2, 3) or isinstance(dims, bool):
            raise ValueError(f"dims: expected 2 (images) or 3 (volumes), got {dims!r}")
        if kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"kernel_size: expected an odd int >= 1, got {kernel_size!r}")
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
        self.in_channels, self.out_channels, self.stride, self.dims = in_channels, out_channels, stride, dims
        self.use_shortcut = bool(residual) and stride == 1 and in_channels == out_channels
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [
                conv(in_channels, hidden, 1, bias=norm == "none"),
                make_norm(norm, hidden, dims),
                nn.ReLU6(),
            ]
        layers += [
            conv(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=norm == "none"),
            make_norm(norm, hidden, dims),
            nn.ReLU6(),
            conv(hidden, out_channels, 1, bias=norm == "none"),
            make_norm(norm, out_channels, dims),
        ]
        if bottleneck_act == "relu6":
            layers.append(nn.ReLU6())
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, in, (D,) H, W] -> [B, out, (D,) H/s, W/s]``."""
        check_spatial_input(x, self.dims, self.in_channels, f"InvertedResidual(dims={self.dims})")
        y = self.body(x)
        return x + y if self.use_shortcut else y
