"""Log-mel spectrograms without torchaudio or librosa: a Slaney-style mel filterbank and ``torch.stft``.

The mel scale is Slaney's (linear below 1 kHz at 200/3 Hz per mel, logarithmic above, with 27 mels per
factor 6.4) and each triangle is area-normalised (``2 / (f_right - f_left)``): the defaults of
``librosa.filters.mel``, which HiFi-GAN and APNet use. Features are
``log(clamp(M |STFT(x)|, 1e-5))`` with a Hann window, centred frames and reflect padding.

Example:
    >>> mel = LogMel(sample_rate=16000, n_fft=1024, hop_length=80, win_length=320, n_mels=80)
    >>> m = mel(torch.randn(2, 16000))        # [2, 80, 201]
"""

from __future__ import annotations

import math

import torch
from torch import nn

_F_SP = 200.0 / 3  # Hz per mel below the break
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # 15
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel of frequencies ``f`` (Hz), any shape."""
    f = torch.as_tensor(f, dtype=torch.float64)
    return torch.where(
        f >= _MIN_LOG_HZ, _MIN_LOG_MEL + torch.log(f.clamp_min(1e-10) / _MIN_LOG_HZ) / _LOGSTEP, f / _F_SP
    )


def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    m = torch.as_tensor(m, dtype=torch.float64)
    return torch.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * torch.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), m * _F_SP)


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """``[n_mels, n_fft // 2 + 1]`` float32 area-normalised triangular filters on the Slaney mel scale."""
    fmax = sample_rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"fmin, fmax: expected 0 <= fmin < fmax <= sample_rate/2 = {sample_rate / 2}, got {fmin}, {fmax}"
        )
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels, n_fft: expected >= 1 and >= 2, got {n_mels}, {n_fft}")
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(
            float(hz_to_mel(torch.tensor(fmin))),
            float(hz_to_mel(torch.tensor(fmax))),
            n_mels + 2,
            dtype=torch.float64,
        )
    )
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - left) / (centre - left)
    down = (right - freqs[None]) / (right - centre)
    tri = torch.clamp(torch.minimum(up, down), min=0)
    return (tri * (2.0 / (right - left))).float()


class LogMel(nn.Module):
    """``x: [B, N] -> log-mel [B, n_mels, N // hop_length + 1]`` (centred frames)."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        hop_length: int = 80,
        win_length: int = 320,
        n_mels: int = 80,
        fmin: float = 0.0,
        fmax: float | None = 8000.0,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length: must be <= n_fft ({n_fft}), got {win_length}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(x, self.n_fft, self.hop_length, self.win_length, self.window, center=True,
                          pad_mode="reflect", return_complex=True)  # fmt: skip
        mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
        return torch.log(torch.clamp(self.fb @ mag, min=1e-5))
