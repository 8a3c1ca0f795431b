"""APNet (Ai & Ling 2023): a vocoder that predicts amplitude and phase spectra at frame rate.

- Amplitude spectrum predictor (ASP): ``log-mel -> conv(7) -> MRF -> LeakyReLU -> conv(7) -> log |S|``.
- Phase spectrum predictor (PSP): ``log-mel -> conv(7) -> MRF -> two parallel linear convs R, I -> phi =
  atan2(I, R)``: the phase is the angle of a learned complex number, so it is wrapped by construction
  and the network never regresses across the +-pi cut. ``phase_head="direct"`` replaces the two
  convolutions by one that outputs phi itself (the paper's ablation).
- Synthesis: ``S = exp(log|S|) e^{i phi}``, waveform by ``torch.istft`` (Hann window).

Everything runs at the frame rate (hop 80 at 16 kHz), which is why it is fast on a CPU. The defaults
are the official release's config (512 channels, MRF kernels 3, 7, 11 with dilations 1, 3, 5, n_fft
1024, hop 80, window 320, 80 mels).

Example:
    >>> net = APNet(channels=64, resblock_kernels=(3,), resblock_dilations=((1, 3, 5),))
    >>> log_amp, phase, wav = net(torch.randn(1, 80, 50))   # [1, 513, 50], [1, 513, 50], [1, 3920]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.models.vocoder.hifigan import LRELU, MRF

PHASE_HEADS = ("parallel", "direct")


class AmplitudePredictor(nn.Module):
    """``mel [B, n_mels, T] -> log-amplitude [B, n_fft // 2 + 1, T]``."""

    def __init__(
        self,
        n_mels: int,
        n_bins: int,
        channels: int,
        kernels: Sequence[int],
        dilations: Sequence[Sequence[int]],
    ) -> None:
        super().__init__()
        self.inp = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.mrf = MRF(channels, kernels, dilations)
        self.out = nn.Conv1d(channels, n_bins, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.out(F.leaky_relu(self.mrf(self.inp(mel)), LRELU))


class PhasePredictor(nn.Module):
    """``mel [B, n_mels, T] -> phase [B, n_fft // 2 + 1, T]``; ``head="parallel"``: atan2 of two
    parallel linear convolutions (R, I); ``"direct"``: one linear convolution outputs the phase."""

    def __init__(
        self,
        n_mels: int,
        n_bins: int,
        channels: int,
        kernels: Sequence[int],
        dilations: Sequence[Sequence[int]],
        head: str = "parallel",
    ) -> None:
        super().__init__()
        if head not in PHASE_HEADS:
            raise ValueError(f"head: expected one of {PHASE_HEADS}, got {head!r}")
        self.head = head
        self.inp = nn.Conv1d(n_mels, channels, 7, padding=3)
        self.mrf = MRF(channels, kernels, dilations)
        self.out_r = nn.Conv1d(channels, n_bins, 7, padding=3)
        self.out_i = nn.Conv1d(channels, n_bins, 7, padding=3) if head == "parallel" else None

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.mrf(self.inp(mel))  # no activation before the heads: R and I are linear in h
        if self.out_i is None:
            return self.out_r(h)
        return torch.atan2(self.out_i(h), self.out_r(h))


class APNet(nn.Module):
    """The APNet generator: ``mel [B, n_mels, T] -> (log-amplitude, phase [B, F, T], waveform [B, (T-1) hop])``."""

    def __init__(
        self,
        n_mels: int = 80,
        n_fft: int = 1024,
        hop_length: int = 80,
        win_length: int = 320,
        channels: int = 512,
        resblock_kernels: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        phase_head: str = "parallel",
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length: must be <= n_fft ({n_fft}), got {win_length}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        n_bins = n_fft // 2 + 1
        self.asp = AmplitudePredictor(n_mels, n_bins, channels, resblock_kernels, resblock_dilations)
        self.psp = PhasePredictor(n_mels, n_bins, channels, resblock_kernels, resblock_dilations, phase_head)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def spectrum(self, log_amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """The complex spectrum ``exp(log_amp) e^{i phase}``, ``[B, F, T]``."""
        return torch.polar(torch.exp(log_amp), phase)

    def synthesize(self, log_amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """ISTFT of ``exp(log_amp) e^{i phase}`` (``[B, F, T]``) -> waveform ``[B, (T - 1) * hop]``."""
        return torch.istft(
            self.spectrum(log_amp, phase),
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
        )

    def analyze(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-amplitude and phase spectra ``[B, F, T]`` of ``wav [B, N]`` (the training targets)."""
        spec = torch.stft(
            wav, self.n_fft, self.hop_length, self.win_length, self.window, center=True, return_complex=True
        )
        return torch.log(spec.abs().clamp_min(1e-5)), torch.angle(spec)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_amp, phase = self.asp(mel), self.psp(mel)
        return log_amp, phase, self.synthesize(log_amp, phase)
