"""A HiFi-GAN-v1-style generator (Kong et al. 2020), the speed baseline for APNet.

Mel frames are upsampled to samples by transposed convolutions (``upsample_rates``, product = hop),
each followed by a multi-receptive-field fusion (MRF): the mean of :class:`ResBlock1` outputs with
kernels ``resblock_kernels`` and dilations ``resblock_dilations``. V1 sizes: 512 initial channels,
halved at every upsampling, kernels (3, 7, 11), dilations (1, 3, 5). For 16 kHz and hop 80 the rates
are 5, 4, 2, 2 with kernels 2 x rate. Weight normalisation is left out: it is folded into the weights
for inference and does not change the speed.

Example:
    >>> g = HiFiGANGenerator()
    >>> wav = g(torch.randn(1, 80, 50))          # [1, 4000] (50 frames x hop 80)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

LRELU = 0.1


class ResBlock1(nn.Module):
    """HiFi-GAN's ResBlock1: for each dilation d, ``x <- x + conv1(lrelu(conv_d(lrelu(x))))``
    (kernel ``kernel``, same length). ``x: [B, C, T] -> [B, C, T]``."""

    def __init__(self, channels: int, kernel: int = 3, dilations: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [
                nn.Conv1d(channels, channels, kernel, dilation=d, padding=d * (kernel - 1) // 2)
                for d in dilations
            ]
        )
        self.convs2 = nn.ModuleList(
            [nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2) for _ in dilations]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU)), LRELU))
        return x


class MRF(nn.Module):
    """Multi-receptive-field fusion: the mean of one :class:`ResBlock1` per kernel size."""

    def __init__(self, channels: int, kernels: Sequence[int], dilations: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(kernels) != len(dilations):
            raise ValueError(
                f"kernels, dilations: expected one dilation list per kernel, got {len(kernels)} and {len(dilations)}"
            )
        self.blocks = nn.ModuleList([ResBlock1(channels, k, d) for k, d in zip(kernels, dilations)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(b(x) for b in self.blocks) / len(self.blocks)


class HiFiGANGenerator(nn.Module):
    """``mel [B, n_mels, T] -> waveform [B, T * prod(upsample_rates)]``."""

    def __init__(
        self,
        n_mels: int = 80,
        upsample_rates: Sequence[int] = (5, 4, 2, 2),
        upsample_kernels: Sequence[int] = (10, 8, 4, 4),
        initial_channels: int = 512,
        resblock_kernels: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
    ) -> None:
        super().__init__()
        if len(upsample_rates) != len(upsample_kernels):
            raise ValueError(
                f"upsample_kernels: expected one per rate ({len(upsample_rates)}), got {len(upsample_kernels)}"
            )
        for u, k in zip(upsample_rates, upsample_kernels):
            if k < u:
                raise ValueError(f"upsample_kernels: kernel {k} for rate {u} must be >= the rate")
        self.hop = 1
        for u in upsample_rates:
            self.hop *= u
        self.pre = nn.Conv1d(n_mels, initial_channels, 7, padding=3)
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        ch = initial_channels
        for u, k in zip(upsample_rates, upsample_kernels):
            # output length exactly u * input: pad (k - u) / 2 each side, the odd remainder at the end
            pad = (k - u + 1) // 2
            self.ups.append(
                nn.ConvTranspose1d(ch, ch // 2, k, stride=u, padding=pad, output_padding=(k - u) % 2)
            )
            ch //= 2
            self.mrfs.append(MRF(ch, resblock_kernels, resblock_dilations))
        self.post = nn.Conv1d(ch, 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.pre(mel)
        for up, mrf in zip(self.ups, self.mrfs):
            x = mrf(up(F.leaky_relu(x, LRELU)))
        return torch.tanh(self.post(F.leaky_relu(x))).squeeze(1)
