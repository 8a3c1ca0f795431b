"""APNet's losses: amplitude, anti-wrapping phase losses, STFT consistency, real/imaginary and waveform.

The phase losses compare wrapped differences with the anti-wrapping function
``f_AW(x) = |x - 2 pi round(x / 2 pi)|`` (the distance on the circle, in ``[0, pi]``):

- instantaneous phase (IP): ``mean f_AW(phi_hat - phi)``;
- group delay (GD): ``mean f_AW(D_f phi_hat - D_f phi)``, ``D_f`` the difference along frequency;
- instantaneous angular frequency (IAF): ``mean f_AW(D_t phi_hat - D_t phi)``, along time.

Spectra are ``[B, F, T]`` (frequency bins, frames), as ``torch.stft`` returns them.
"""

from __future__ import annotations

import math

import torch


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """``|x - 2 pi round(x / 2 pi)|``: the absolute phase difference folded into ``[0, pi]``."""
    return torch.abs(x - 2 * math.pi * torch.round(x / (2 * math.pi)))


def phase_losses(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"ip", "gd", "iaf"}`` anti-wrapping losses of phase spectra ``[B, F, T]`` (scalars)."""
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(
            f"pred, target: expected equal [B, F, T] phase spectra, got {tuple(pred.shape)}, {tuple(target.shape)}"
        )
    return {
        "ip": anti_wrapping(pred - target).mean(),
        "gd": anti_wrapping(torch.diff(pred, dim=1) - torch.diff(target, dim=1)).mean(),
        "iaf": anti_wrapping(torch.diff(pred, dim=2) - torch.diff(target, dim=2)).mean(),
    }


def amplitude_loss(log_amp_pred: torch.Tensor, log_amp: torch.Tensor) -> torch.Tensor:
    """MSE between log-amplitude spectra ``[B, F, T]``."""
    return torch.mean((log_amp_pred - log_amp) ** 2)


def consistency_loss(
    spec: torch.Tensor, n_fft: int, hop_length: int, win_length: int, window: torch.Tensor
) -> torch.Tensor:
    """STFT consistency: ``mean |STFT(ISTFT(S)) - S|^2`` over real and imaginary parts of a complex
    ``spec [B, F, T]``; 0 (to rounding) for the STFT of any signal."""
    x = torch.istft(spec, n_fft, hop_length, win_length, window, center=True)
    again = torch.stft(x, n_fft, hop_length, win_length, window, center=True, return_complex=True)
    T = min(again.shape[-1], spec.shape[-1])
    d = again[..., :T] - spec[..., :T]
    return torch.mean(d.real**2) + torch.mean(d.imag**2)


def real_imag_loss(spec_pred: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """L1 between the real parts plus L1 between the imaginary parts of complex spectra."""
    return torch.mean(torch.abs(spec_pred.real - spec.real)) + torch.mean(
        torch.abs(spec_pred.imag - spec.imag)
    )


def waveform_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Time-domain L1 over the common length of ``[B, N]`` waveforms."""
    n = min(pred.shape[-1], target.shape[-1])
    return torch.mean(torch.abs(pred[..., :n] - target[..., :n]))


def snr_db(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Signal-to-noise ratio ``10 log10(|x|^2 / |x - x_hat|^2)`` in dB over the common length."""
    n = min(pred.shape[-1], target.shape[-1])
    noise = float(((pred[..., :n] - target[..., :n]) ** 2).sum())
    signal = float((target[..., :n] ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)
