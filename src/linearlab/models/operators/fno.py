"""FNO-1D baseline (Li et al. 2021): Fourier layers ``u <- GELU(F^-1 (R . F u) + W u)``.

:class:`SpectralConv1d` keeps the lowest ``modes`` Fourier modes and multiplies each by a learned
complex ``[in, out]`` matrix; it is a convolution with a periodic kernel, so it commutes with circular
shifts, and it implicitly treats the domain as periodic (hence errors next to non-periodic boundaries).

Example:
    >>> net = FNO1d(modes=16, width=32)
    >>> y = net(torch.randn(8, 1, 128))                     # [8, 1, 128]
"""

from __future__ import annotations

import torch
from torch import nn


class SpectralConv1d(nn.Module):
    """``x [B, in, N] -> irfft(R_k rfft(x)_k for k < modes) [B, out, N]`` with complex weights ``R``."""

    def __init__(self, in_channels: int, out_channels: int, modes: int) -> None:
        super().__init__()
        if modes < 1:
            raise ValueError(f"modes: expected >= 1, got {modes}")
        self.modes = modes
        scale = 1 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.randn(in_channels, out_channels, modes, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N = x.shape[-1]
        if self.modes > N // 2 + 1:
            raise ValueError(f"x: {N} points carry {N // 2 + 1} Fourier modes, fewer than modes={self.modes}")
        xf = torch.fft.rfft(x, dim=-1)
        w = torch.view_as_complex(self.weight.to(x.dtype).contiguous())
        out = torch.zeros(x.shape[0], w.shape[1], N // 2 + 1, dtype=xf.dtype, device=x.device)
        out[..., : self.modes] = torch.einsum("bik,iok->bok", xf[..., : self.modes], w)
        return torch.fft.irfft(out, n=N, dim=-1)


class FNO1d(nn.Module):
    """Lift ``(input, x)`` to ``width`` channels, ``num_layers`` Fourier layers, project through 128 units.

    ``x: [B, in_channels, N] -> [B, out_channels, N]``; the grid coordinate in [0, 1] is appended.
    """

    def __init__(
        self,
        modes: int = 16,
        width: int = 32,
        num_layers: int = 4,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        self.lift = nn.Conv1d(in_channels + 1, width, 1)
        self.spectral = nn.ModuleList([SpectralConv1d(width, width, modes) for _ in range(num_layers)])
        self.pointwise = nn.ModuleList([nn.Conv1d(width, width, 1) for _ in range(num_layers)])
        self.proj = nn.Sequential(nn.Conv1d(width, 128, 1), nn.GELU(), nn.Conv1d(128, out_channels, 1))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = torch.linspace(0, 1, x.shape[-1], dtype=x.dtype, device=x.device).expand(x.shape[0], 1, -1)
        h = self.lift(torch.cat([x, grid], 1))
        for i, (sc, pw) in enumerate(zip(self.spectral, self.pointwise)):
            h = sc(h) + pw(h)
            if i < len(self.spectral) - 1:
                h = self.act(h)
        return self.proj(h)
