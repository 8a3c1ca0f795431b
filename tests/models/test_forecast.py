"""Linear forecasters: parameter counts from the papers, shapes, gradients, channel independence, math."""

from __future__ import annotations

import math

import pytest
import torch

from linearlab.models.forecast import (
    FORECASTERS,
    SWIFT,
    DLinear,
    FourierForecaster,
    Linear,
    MixLinear,
    NLinear,
    Repeat,
    conv1d_same,
    create_forecaster,
    haar_forward,
    haar_inverse,
    list_forecasters,
    moving_average,
)
from linearlab.registry import Registry, UnknownNameError

SMALL = {"mixlinear": {"lpf": 2}, "swift": {"dropout": 0.0}}


def in_float64(build):
    """Build a model with float64 (complex128) parameters: ``.double()`` would drop imaginary parts."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return build()
    finally:
        torch.set_default_dtype(previous)


def small(name: str, lookback: int = 48, horizon: int = 24, n_channels: int = 3, **kwargs):
    return create_forecaster(name, lookback, horizon, n_channels, **{**SMALL.get(name, {}), **kwargs})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (Linear(336, 96, 7), 32_352),
        (NLinear(336, 720, 7), 242_640),
        (DLinear(336, 96, 7), 64_704),
        (DLinear(336, 720, 7), 485_280),  # SparseTSF paper: "485.3K"
        (DLinear(720, 720, 7), 1_038_240),  # SparseTSF TPAMI: "1.04M"
        (Linear(336, 96, 7, individual=True), 7 * 32_352),
        (DLinear(336, 96, 7, individual=True), 7 * 64_704),
        (MixLinear(720, 96, 7, lpf=1), 59),  # official ETTh1 settings: about 0.1K
        (MixLinear(720, 192, 7, lpf=5), 87),
        (MixLinear(720, 336, 7, lpf=2), 105),
        (MixLinear(720, 720, 7, lpf=19), 195),
        (SWIFT(720, 96, 7), 17_380),
        (SWIFT(720, 720, 7), 130_012),
        (Repeat(336, 96, 7), 0),
        (
            FourierForecaster(336, 96, 7, d_model=64, num_bins=64, num_frequencies=12),
            336 * 64 + 64 + 96 * 64 + 64 * 26 + 26,
        ),
    ],
)
def test_parameter_counts_match_the_papers(model, expected):
    assert model.num_parameters() == expected


def test_mixlinear_real_parameter_count_doubles_complex_weights():
    model = MixLinear(720, 720, 7, lpf=19)
    # (w+1) + 2 s_x s_y = 25 + 2*6*6 real, then 2*lpf + 2*m complex weights counted twice.
    assert model.num_real_parameters() == 25 + 72 + 2 * (2 * 19 + 2 * 30) == 293


@pytest.mark.parametrize("name", list_forecasters())
def test_shapes_and_gradients(name):
    model = small(name)
    x = torch.randn(4, 48, 3)
    y = model(x)
    assert y.shape == (4, 24, 3) and torch.isfinite(y).all()
    loss = model.loss(x, torch.randn(4, 24, 3))
    assert loss.ndim == 0 and torch.isfinite(loss)
    if name == "repeat":
        assert list(model.parameters()) == []
        return
    loss.backward()
    for pname, p in model.named_parameters():
        assert (
            p.grad is not None
            and torch.isfinite(torch.view_as_real(p.grad) if p.is_complex() else p.grad).all()
        ), pname
        assert p.grad.abs().sum() > 0, f"{name}.{pname} gets no gradient"


@pytest.mark.parametrize("name", list_forecasters())
def test_channels_are_independent(name):
    """Shared (CI) models map each channel alone: changing channel 0 leaves the others' forecasts."""
    model = small(name).eval()
    x = torch.randn(2, 48, 3)
    x2 = x.clone()
    x2[..., 0] += torch.randn(2, 48)
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    torch.testing.assert_close(y[..., 1:], y2[..., 1:])
    if name != "repeat" or not torch.equal(x[:, -1, 0], x2[:, -1, 0]):
        assert not torch.allclose(y[..., 0], y2[..., 0])


@pytest.mark.parametrize("name", ["repeat", "nlinear", "mixlinear", "swift", "fourier"])
def test_level_shift_equivariance(name):
    """Models that remove the last value or the window mean follow a constant shift of the input."""
    model = in_float64(lambda: small(name)).eval()
    x = torch.randn(2, 48, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x + 3.5), model(x) + 3.5, rtol=1e-9, atol=1e-9)


def test_individual_linear_uses_one_map_per_channel():
    torch.manual_seed(0)
    model = Linear(10, 4, 3, individual=True)
    x = torch.randn(2, 10, 3)
    expected = torch.stack([x[..., c] @ model.map.weight[c].T + model.map.bias[c] for c in range(3)], dim=-1)
    torch.testing.assert_close(model(x), expected)


def test_average_init_starts_from_the_window_mean():
    x = torch.randn(2, 30, 2)
    for model in (Linear(30, 5, 2, init="average"), DLinear(30, 5, 2, init="average", individual=True)):
        maps = [model.map] if isinstance(model, Linear) else [model.seasonal, model.trend]
        with torch.no_grad():
            for m in maps:
                m.bias.zero_()
        torch.testing.assert_close(model(x), x.mean(1, keepdim=True).expand(-1, 5, -1))


def test_dlinear_decomposition_matches_a_padded_average():
    x = torch.randn(2, 30, 2, dtype=torch.float64)
    trend = moving_average(x, 25)
    padded = torch.cat([x[:, :1].repeat(1, 12, 1), x, x[:, -1:].repeat(1, 12, 1)], dim=1)
    expected = torch.stack([padded[:, t : t + 25].mean(1) for t in range(30)], dim=1)
    torch.testing.assert_close(trend, expected)
    model = DLinear(30, 5, 2).double()
    manual = (x - trend).transpose(1, 2) @ model.seasonal.weight.T + model.seasonal.bias
    manual = manual + trend.transpose(1, 2) @ model.trend.weight.T + model.trend.bias
    torch.testing.assert_close(model(x), manual.transpose(1, 2))


def test_conv1d_same_matches_torch():
    x = torch.randn(3, 2, 17, dtype=torch.float64)
    weight = torch.randn(2, 2, 5, dtype=torch.float64)
    torch.testing.assert_close(conv1d_same(x, weight), torch.nn.functional.conv1d(x, weight, padding=2))


def test_haar_round_trip_and_energy():
    x = torch.randn(3, 16, dtype=torch.float64)
    a, d = haar_forward(x)
    torch.testing.assert_close(haar_inverse(a, d), x)
    torch.testing.assert_close(a.square().sum() + d.square().sum(), x.square().sum())  # orthonormal


def test_mixlinear_matches_a_loop_reference():
    """Time branch W2 S W1^T over the phase x segment grid, frequency branch via a rank-2 spectral map."""
    torch.manual_seed(0)
    L, H, w = 96, 60, 12  # n = 8 segments (pad to 9 = 3x3), m = 5 output segments (s_y = 3)
    model = in_float64(lambda: MixLinear(L, H, 1, period=w, lpf=3, alpha=0.7))
    assert model.v.dtype == torch.complex128
    x = torch.randn(1, L, 1, dtype=torch.float64)
    s = x[0, :, 0]
    mean = s.mean()
    s = s - mean
    kernel = model.smooth.weight[0, 0]
    padded = torch.cat([torch.zeros(w // 2, dtype=s.dtype), s, torch.zeros(w // 2, dtype=s.dtype)])
    s = s + torch.stack([(padded[t : t + w + 1] * kernel).sum() for t in range(L)])
    out = torch.zeros(9 * w, dtype=s.dtype)
    freq = torch.zeros(5 * w, dtype=s.dtype)
    for p in range(w):
        row = torch.stack([s[k * w + p] for k in range(8)] + [torch.zeros((), dtype=s.dtype)])
        o = model.w2 @ row.reshape(3, 3) @ model.w1.T
        for k in range(9):
            out[k * w + p] = o.flatten()[k]
        spec = torch.fft.fft(row[:8])[:3]
        g = model.u @ (model.v @ spec)
        f = torch.fft.ifft(g).real
        for k in range(5):
            freq[k * w + p] = f[k]
    expected = 0.7 * out[:H] + 0.3 * freq[:H] + mean
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0, :, 0], expected)


def test_swift_matches_a_manual_forward():
    torch.manual_seed(0)
    model = SWIFT(16, 8, 1, kernel_size=3, dropout=0.0).double()
    x = torch.randn(1, 16, 1, dtype=torch.float64)
    s = x[0, :, 0]
    mean = s.mean()
    a, d = haar_forward(s - mean)
    bands = torch.stack([a, d])
    bands = bands + torch.nn.functional.conv1d(bands[None], model.mix.weight, padding=1)[0]
    mapped = bands @ model.map.weight.T + model.map.bias
    expected = haar_inverse(mapped[0], mapped[1]) + mean
    torch.testing.assert_close(model(x)[0, :, 0], expected)


def test_fourier_forecaster_distribution_is_normalised_and_mean_is_the_forecast():
    model = FourierForecaster(48, 24, 3, num_bins=20, num_frequencies=4)
    x = torch.randn(2, 48, 3)
    log_probs, values = model.distribution(x)
    assert log_probs.shape == (2, 24, 3, 20) and values.shape == (2, 1, 3, 20)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 24, 3))
    torch.testing.assert_close(model(x), (log_probs.exp() * values).sum(-1))
    # Bin centres span +-value_range window-standard-deviations around the window mean.
    mean, std = x.mean(1), x.std(1, unbiased=False)
    torch.testing.assert_close(values[:, 0, :, 0], mean - (1 - 1 / 20) * 4.0 * std, rtol=1e-4, atol=1e-4)


def test_fourier_forecaster_learns():
    torch.manual_seed(0)
    t = torch.arange(200.0)
    series = torch.sin(2 * math.pi * t / 12)[:, None]
    x = torch.stack([series[i : i + 24] for i in range(0, 150, 3)])
    y = torch.stack([series[i + 24 : i + 30] for i in range(0, 150, 3)])
    model = FourierForecaster(24, 6, 1, d_model=16, num_bins=24, num_frequencies=6)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        first = float(torch.nn.functional.mse_loss(model(x), y))
    for _ in range(100):
        opt.zero_grad()
        model.loss(x, y).backward()
        opt.step()
    with torch.no_grad():
        assert float(torch.nn.functional.mse_loss(model(x), y)) < 0.25 * first


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Linear(0, 4, 1), "lookback: expected a positive integer, got 0"),
        (lambda: DLinear(10, 4, 1, kernel_size=4), "kernel_size: expected an odd size"),
        (
            lambda: NLinear(10, 4, 1, init="zeros"),
            r"init: expected one of \('default', 'average'\), got 'zeros'",
        ),
        (lambda: MixLinear(46, 23, 1, period=23), "period: expected an even period"),
        (lambda: MixLinear(50, 24, 1), "lookback: MixLinear needs a multiple of period=24, got lookback=50"),
        (lambda: MixLinear(48, 24, 1, lpf=3), "lpf: expected at most L/period=2 frequency bins, got 3"),
        (lambda: MixLinear(48, 24, 1, alpha=1.5), r"alpha: expected a mixing weight in \[0, 1\], got 1.5"),
        (lambda: SWIFT(47, 24, 1), "lookback: the Haar split needs an even length, got 47"),
        (lambda: SWIFT(48, 23, 1), "horizon: the Haar split needs an even length, got 23"),
        (lambda: SWIFT(48, 24, 1, dropout=1.0), r"dropout: expected a probability in \[0, 1\), got 1.0"),
        (lambda: FourierForecaster(48, 24, 1, value_range=0), "value_range: expected > 0, got 0"),
        (
            lambda: create_forecaster("patchtst", 48, 24, 1),
            "models: unknown forecaster 'patchtst'; choose from: dlinear, fourier, linear, mixlinear",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_input_shape_is_rejected():
    model = NLinear(48, 24, 3)
    with pytest.raises(ValueError, match=r"x: expected \[B, L=48, C=3\], got shape \(2, 47, 3\)"):
        model(torch.randn(2, 47, 3))


def test_forecasters_are_one_registry():
    assert isinstance(FORECASTERS, Registry)
    assert list_forecasters() == ["dlinear", "fourier", "linear", "mixlinear", "nlinear", "repeat", "swift"]
    assert FORECASTERS.get("dlinear") is DLinear and FORECASTERS.get("fourier") is FourierForecaster
    assert type(create_forecaster("nlinear", 48, 24, 2)) is NLinear
    with pytest.raises(UnknownNameError) as info:  # also a KeyError and a ValueError
        create_forecaster("patchtst", 48, 24, 1)
    assert isinstance(info.value, KeyError) and info.value.known == list_forecasters()
