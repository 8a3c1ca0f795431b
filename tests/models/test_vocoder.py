"""Vocoder parts: mel filterbank, anti-wrapping losses, consistency, ISTFT synthesis, the phase head, HiFi-GAN shapes."""

import math

import pytest
import torch

from linearlab.models.vocoder import APNet, HiFiGANGenerator, LogMel, PhasePredictor, mel_filterbank
from linearlab.models.vocoder.losses import (
    amplitude_loss,
    anti_wrapping,
    consistency_loss,
    phase_losses,
    real_imag_loss,
    snr_db,
    waveform_l1,
)
from linearlab.models.vocoder.mel import hz_to_mel, mel_to_hz


def test_slaney_mel_scale_known_values_and_inverse():
    assert float(hz_to_mel(torch.tensor(1000.0))) == pytest.approx(15.0)
    assert float(hz_to_mel(torch.tensor(200.0))) == pytest.approx(3.0)
    assert float(hz_to_mel(torch.tensor(2000.0))) == pytest.approx(15 + 27 * math.log(2) / math.log(6.4))
    f = torch.tensor([0.0, 123.0, 999.0, 1000.0, 4321.0, 8000.0], dtype=torch.float64)
    torch.testing.assert_close(mel_to_hz(hz_to_mel(f)), f)


def test_filterbank_triangles_are_area_normalised_and_peak_at_their_centres():
    sr, n_fft, n_mels = 16000, 2048, 40
    fb = mel_filterbank(sr, n_fft, n_mels, 0.0, 8000.0).double()
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.min() >= 0
    df = sr / n_fft
    # each triangle has height 2/(right-left) and width right-left: area 1 (in Hz), up to sampling
    torch.testing.assert_close((fb.sum(1) * df), torch.ones(n_mels, dtype=torch.float64), rtol=0.06, atol=0)
    edges = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0))), n_mels + 2))
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    peaks = freqs[fb.argmax(1)]
    assert torch.all((peaks - edges[1:-1]).abs() <= df)
    # support within [left, right]
    for m in (0, 20, 39):
        support = freqs[fb[m] > 0]
        assert support.min() >= edges[m] and support.max() <= edges[m + 2]
    with pytest.raises(
        ValueError, match=r"fmin, fmax: expected 0 <= fmin < fmax <= sample_rate/2 = 8000.0, got 0.0, 9000"
    ):
        mel_filterbank(16000, 1024, 80, 0.0, 9000)


def test_logmel_of_a_sine_peaks_at_its_band():
    sr = 16000
    t = torch.arange(sr) / sr
    mel = LogMel(sr, 1024, 80, 320, 80)
    m = mel(torch.sin(2 * math.pi * 1000 * t)[None])
    assert m.shape == (1, 80, sr // 80 + 1)
    centres = mel_to_hz(torch.linspace(0, float(hz_to_mel(torch.tensor(8000.0))), 82))[1:-1]
    band = int(m[0, :, 50].argmax())
    assert abs(float(centres[band]) - 1000) < 60


def test_anti_wrapping_and_phase_losses():
    assert float(anti_wrapping(torch.tensor(2 * math.pi + 0.1, dtype=torch.float64))) == pytest.approx(0.1)
    assert float(anti_wrapping(torch.tensor(-0.3 - 4 * math.pi, dtype=torch.float64))) == pytest.approx(0.3)
    g = torch.Generator().manual_seed(0)
    phi = (torch.rand(2, 9, 7, generator=g) * 2 - 1) * math.pi
    shift = 2 * math.pi * torch.randint(-3, 4, phi.shape, generator=g)
    for v in phase_losses(phi + shift, phi).values():
        assert float(v) < 1e-5  # multiples of 2 pi cost nothing
    # a constant offset changes the instantaneous phase but neither group delay nor IAF
    off = phase_losses(phi + 0.5, phi)
    assert (
        float(off["ip"]) == pytest.approx(0.5, abs=1e-5)
        and float(off["gd"]) < 1e-5
        and float(off["iaf"]) < 1e-5
    )
    # a linear-in-time ramp (a frequency error) shows in IAF only
    ramp = phase_losses(phi + 0.2 * torch.arange(7.0), phi)
    assert float(ramp["iaf"]) == pytest.approx(0.2, abs=1e-5) and float(ramp["gd"]) < 1e-5
    with pytest.raises(ValueError, match="pred, target: expected equal"):
        phase_losses(phi, phi[:1])


def test_istft_synthesis_of_the_analysed_spectra_gives_back_the_signal_and_is_consistent():
    net = APNet(channels=8, resblock_kernels=(3,), resblock_dilations=((1,),))
    x = torch.randn(2, 4000, dtype=torch.float32) * 0.1
    log_amp, phase = net.analyze(x)
    y = net.synthesize(log_amp, phase)
    assert y.shape == (2, 4000)
    assert snr_db(y, x) > 60
    spec = net.spectrum(log_amp, phase)
    assert float(consistency_loss(spec, 1024, 80, 320, net.window)) < 1e-8
    rand = torch.polar(torch.rand_like(log_amp), torch.rand_like(phase) * 6.28)
    assert float(consistency_loss(rand, 1024, 80, 320, net.window)) > 1e-3
    assert float(real_imag_loss(spec, spec)) == 0 and float(amplitude_loss(log_amp, log_amp)) == 0
    assert float(waveform_l1(y, x)) < 1e-3


def test_parallel_head_is_atan2_of_two_linear_convs_and_direct_head_is_one():
    torch.manual_seed(0)
    p = PhasePredictor(10, 17, 8, (3,), ((1, 3),), head="parallel")
    mel = torch.randn(2, 10, 12)
    h = p.mrf(p.inp(mel))
    torch.testing.assert_close(p(mel), torch.atan2(p.out_i(h), p.out_r(h)))
    assert p(mel).abs().max() <= math.pi
    d = PhasePredictor(10, 17, 8, (3,), ((1, 3),), head="direct")
    assert d.out_i is None and d(mel).shape == (2, 17, 12)
    with pytest.raises(ValueError, match=r"head: expected one of \('parallel', 'direct'\), got 'complex'"):
        PhasePredictor(10, 17, 8, (3,), ((1,),), head="complex")


def test_generators_output_lengths_and_official_sizes():
    a = APNet(channels=16, resblock_kernels=(3,), resblock_dilations=((1, 3, 5),))
    log_amp, phase, wav = a(torch.randn(1, 80, 21))
    assert log_amp.shape == phase.shape == (1, 513, 21) and wav.shape == (1, 20 * 80)
    g = HiFiGANGenerator(initial_channels=32)
    assert g(torch.randn(2, 80, 7)).shape == (2, 7 * 80)
    # the official APNet config: two 512-channel predictors with MRF (3, 7, 11) x (1, 3, 5)
    n = sum(p.numel() for p in APNet().parameters())
    assert 70e6 < n < 75e6
