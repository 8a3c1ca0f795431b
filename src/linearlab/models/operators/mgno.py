"""MgNO: every linear operator of a neural-operator layer is a multigrid V-cycle of convolutions.

He, Liu & Xu (ICLR 2024). A layer is ``u <- sigma(W u + K u)`` with ``K`` a 1x1 convolution and ``W``
the linear map "run a V-cycle on the right-hand side ``f = u``":

- smoothing on each level (:class:`MgIte`): ``u <- u + S (f - A u)`` with ``A``, ``S`` 3-point (1-D) or
  3x3 (2-D) convolutions, the first smoothing on the finest level being ``u = S f``;
- restriction (:class:`Restrict`) to the next coarser grid: ``u <- Pi u``, ``f <- R (f - A u)`` with
  stride-2 convolutions ``Pi``, ``R``;
- prolongation on the way back up: ``u_l <- u_l + P u_{l+1}`` with a stride-2 transposed convolution
  (kernel 4, padding 1, which exactly doubles the grid).

Without bias and normalisation, :class:`MgConv` is a linear operator in ``f``; boundary conditions come
from the convolutions' padding mode (zeros: Dirichlet). The default applies a GroupNorm(1, C) (a
LayerNorm over channels and space) to the V-cycle's output, as the official code does for its general
operator; ``normalize=False`` is the Dirichlet variant without it.

Grids must be divisible by ``2**(levels - 1)``.

Example:
    >>> net = MgNO(dim=1, in_channels=1, channels=16, num_layers=3, num_iteration=(1, 1, 1, 1))
    >>> y = net(torch.randn(8, 1, 128))                     # [8, 1, 128]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _conv(dim: int) -> type[nn.Module]:
    if dim not in (1, 2):
        raise ValueError(f"dim: expected 1 or 2 (spatial dimensions), got {dim}")
    return nn.Conv1d if dim == 1 else nn.Conv2d


def _conv_transpose(dim: int) -> type[nn.Module]:
    return nn.ConvTranspose1d if dim == 1 else nn.ConvTranspose2d


class MgIte(nn.Module):
    """One smoothing step ``u <- u + S (f - A u)``; with ``A = None`` the initial step ``u = S f``."""

    def __init__(self, A: nn.Module | None, S: nn.Module) -> None:
        super().__init__()
        self.A, self.S = A, S

    def forward(self, u: torch.Tensor | None, f: torch.Tensor) -> torch.Tensor:
        """``u: [B, Cu, *grid]`` (None for the initial step), ``f: [B, Cf, *grid]`` -> new ``u``."""
        if self.A is None or u is None:
            return self.S(f)
        return u + self.S(f - self.A(u))


class Restrict(nn.Module):
    """To the next coarser grid: ``(u, f) -> (Pi u, R (f - A u))`` with stride-2 ``Pi``, ``R``."""

    def __init__(self, Pi: nn.Module, R: nn.Module, A: nn.Module) -> None:
        super().__init__()
        self.Pi, self.R, self.A = Pi, R, A

    def forward(self, u: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.Pi(u), self.R(f - self.A(u))


class MgConv(nn.Module):
    """A V-cycle as a (linear) operator ``f [B, Cf, *grid] -> u [B, Cu, *grid]``.

    Args:
        dim: 1 or 2 spatial dimensions.
        num_iteration: smoothing steps per level, finest first; its length is the number of levels.
        channels_u, channels_f: channels of the solution and of the right-hand side.
        padding_mode: the convolutions' padding (``"zeros"``: Dirichlet; ``"circular"``: periodic, ...).
        normalize: GroupNorm(1, channels_u) on the output (False: the Dirichlet variant, linear in f).
    """

    def __init__(
        self,
        dim: int,
        num_iteration: Sequence[int],
        channels_u: int,
        channels_f: int,
        padding_mode: str = "zeros",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if not num_iteration or any(n < 1 for n in num_iteration):
            raise ValueError(
                f"num_iteration: expected >= 1 smoothing steps per level, got {list(num_iteration)}"
            )
        conv = _conv(dim)
        self.dim, self.levels = dim, len(num_iteration)

        def c(cin: int, cout: int, stride: int = 1) -> nn.Module:
            return conv(cin, cout, 3, stride=stride, padding=1, bias=False, padding_mode=padding_mode)

        self.restrict = nn.ModuleList(
            [Restrict(c(channels_u, channels_u, 2), c(channels_f, channels_f, 2), c(channels_u, channels_f))
             for _ in range(self.levels - 1)]
        )  # fmt: skip
        self.smooth = nn.ModuleList()
        for level, n in enumerate(num_iteration):
            steps = [
                MgIte(
                    None if (level == 0 and i == 0) else c(channels_u, channels_f), c(channels_f, channels_u)
                )
                for i in range(n)
            ]
            self.smooth.append(nn.ModuleList(steps))
        self.prolong = nn.ModuleList(
            [
                _conv_transpose(dim)(channels_u, channels_u, 4, stride=2, padding=1, bias=False)
                for _ in range(self.levels - 1)
            ]
        )
        self.norm = nn.GroupNorm(1, channels_u) if normalize else nn.Identity()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """``f: [B, channels_f, *grid] -> [B, channels_u, *grid]``."""
        grid = f.shape[2:]
        k = 2 ** (self.levels - 1)
        if len(grid) != self.dim or any(s % k for s in grid):
            raise ValueError(
                f"f: expected {self.dim} spatial dims divisible by 2**(levels-1) = {k}, got shape {tuple(f.shape)}"
            )
        u: torch.Tensor | None = None
        us = []
        for level in range(self.levels):
            if level > 0:
                u, f = self.restrict[level - 1](u, f)
            for step in self.smooth[level]:
                u = step(u, f)
            us.append(u)
        for level in range(self.levels - 2, -1, -1):
            us[level] = us[level] + self.prolong[level](us[level + 1])
        return self.norm(us[0])


class MgNO(nn.Module):
    """MgNO: ``num_layers`` layers ``u <- GELU(MgConv(u) + Conv1x1(u))``, then a 1x1 conv to the output.

    No lifting or projection network: the first V-cycle reads the input channels directly.
    ``x: [B, in_channels, *grid] -> [B, out_channels, *grid]``.
    """

    def __init__(
        self,
        dim: int = 1,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 16,
        num_layers: int = 3,
        num_iteration: Sequence[int] = (1, 1, 1, 1),
        padding_mode: str = "zeros",
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1 or channels < 1:
            raise ValueError(f"num_layers, channels: expected >= 1, got {num_layers}, {channels}")
        conv = _conv(dim)
        self.mg = nn.ModuleList(
            [MgConv(dim, num_iteration, channels, in_channels if i == 0 else channels, padding_mode, normalize)
             for i in range(num_layers)]
        )  # fmt: skip
        self.skip = nn.ModuleList(
            [conv(in_channels if i == 0 else channels, channels, 1, bias=False) for i in range(num_layers)]
        )
        self.act = nn.GELU()
        self.head = conv(channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for mg, skip in zip(self.mg, self.skip):
            x = self.act(mg(x) + skip(x))
        return self.head(x)
