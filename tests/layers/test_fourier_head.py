"""Fourier head: a normalised non-negative density, the paper's regulariser, and the GMM toy vs a linear head."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.heads.fourier import FourierHead


def sharp_head(**kwargs) -> FourierHead:
    """A head with the default init scaled up, so densities are far from uniform."""
    head = FourierHead(8, 40, 6, init_denominator_weight=0.5, init_denominator_bias=0.5, **kwargs)
    return head.double()


def test_log_probabilities_are_normalised():
    head = sharp_head()
    h = torch.randn(5, 3, 8, dtype=torch.float64)
    out = head(h)
    assert out.shape == (5, 3, 40) and out.dtype == torch.float64
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(5, 3, dtype=torch.float64))
    assert out.exp().std(-1).min() > 1e-3  # far from uniform: the test is not trivial


def test_density_is_non_negative_and_integrates_to_one():
    head = sharp_head()
    h = torch.randn(6, 8, dtype=torch.float64)
    z = torch.linspace(-1, 1, 4001, dtype=torch.float64)
    p = head.pdf(h, z)
    assert p.min() >= -1e-12
    integral = torch.trapezoid(p, z, dim=-1)
    torch.testing.assert_close(integral, torch.ones(6, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_density_equals_squared_modulus_of_the_predicted_series():
    """p(z) = |sum_j a_j e^{i pi j z}|^2 / (2 c_0): the Fejer-Riesz form that makes p >= 0."""
    head = sharp_head()
    h = torch.randn(4, 8, dtype=torch.float64)
    out = head.fc(h)
    a = torch.complex(out[:, :7], out[:, 7:])
    z = torch.linspace(-1, 1, 33, dtype=torch.float64)
    series = (
        a[:, :, None] * torch.exp(1j * math.pi * torch.arange(7, dtype=torch.float64)[None, :, None] * z)
    ).sum(1)
    c0 = (a.abs() ** 2).sum(-1, keepdim=True)
    torch.testing.assert_close(head.pdf(h, z), series.abs() ** 2 / (2 * c0))


def test_autocorrelation_matches_a_direct_sum():
    head = sharp_head()
    h = torch.randn(3, 8, dtype=torch.float64)
    out = head.fc(h)
    a = torch.complex(out[:, :7], out[:, 7:])
    direct = torch.stack([(a[:, k:] * a[:, : 7 - k].conj()).sum(-1) for k in range(7)], dim=-1)
    torch.testing.assert_close(head.coefficients(h), direct)


def test_bin_probabilities_are_the_density_at_bin_centres():
    head = sharp_head(eps=1e-12)
    h = torch.randn(2, 8, dtype=torch.float64)
    centres = -1 + (2 * torch.arange(40, dtype=torch.float64) + 1) / 40
    p = head.pdf(h, centres)
    torch.testing.assert_close(head(h).exp(), p / p.sum(-1, keepdim=True), rtol=1e-9, atol=1e-9)


def test_regulariser_follows_the_paper_formula_and_has_gradients():
    head = sharp_head(regularization_gamma=1e-3)
    h = torch.randn(4, 8, dtype=torch.float64)
    head(h)
    c = head.coefficients(h)
    k = torch.arange(7, dtype=torch.float64)
    expected = 1e-3 * 2 * (2 * math.pi**2 * k**2 * c.abs() ** 2).sum(-1).mean()
    torch.testing.assert_close(head.regularization_loss, expected)
    head.regularization_loss.backward()
    assert head.fc.weight.grad.abs().sum() > 0
    plain = sharp_head()
    plain(h)
    assert float(plain.regularization_loss) == 0.0


def test_parameter_count():
    assert sum(p.numel() for p in FourierHead(384, 4096, 550).parameters()) == 384 * 1102 + 1102


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_features": 0}, "in_features: expected a positive integer, got 0"),
        ({"num_bins": -2}, "num_bins: expected a positive integer, got -2"),
        ({"num_frequencies": 2.5}, "num_frequencies: expected a positive integer, got 2.5"),
        ({"regularization_gamma": -1.0}, "regularization_gamma: expected >= 0, got -1.0"),
        ({"eps": 0.0}, "eps: expected > 0, got 0.0"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"in_features": 4, "num_bins": 10, "num_frequencies": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        FourierHead(**args)


def test_bad_input_width():
    with pytest.raises(ValueError, match=r"h: expected last dimension in_features=4, got shape \(2, 5\)"):
        FourierHead(4, 10, 3)(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"z: expected a 1-D tensor of points, got shape \(2, 2\)"):
        FourierHead(4, 10, 3).pdf(torch.randn(2, 4), torch.zeros(2, 2))


# The paper's toy (toy_synthetic.py, "gmm2"): a 2-d input sets the means of a 2-component Gaussian
# mixture over [-1, 1]; the model sees one quantised sample per input and must recover the mixture
# over 50 bins. Scaled down here (1000 samples, 20 epochs) to run in seconds.
BINS, SIGMA = 50, 0.1


def _true_bin_probs(x: torch.Tensor) -> torch.Tensor:
    edges = torch.linspace(-1, 1, BINS + 1, dtype=torch.float64)
    cdf = 0.5 * (1 + torch.erf((edges - x.double()[:, :, None]) / (SIGMA * math.sqrt(2))))
    cdf[..., 0], cdf[..., -1] = 0.0, 1.0  # samples are clipped to [-1, 1]: tails land in end bins
    return (cdf[..., 1:] - cdf[..., :-1]).mean(1)


def _sample(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 2, generator=gen) * 1.2 - 0.6
    component = torch.randint(0, 2, (n,), generator=gen)
    z = x[torch.arange(n), component] + SIGMA * torch.randn(n, generator=gen)
    return x, ((z.clamp(-1, 1) + 1) / 2 * BINS).long().clamp(0, BINS - 1)


def _toy_kl(head: nn.Module) -> float:
    gen = torch.Generator().manual_seed(0)
    x, target = _sample(1000, gen)
    x_test, _ = _sample(500, gen)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU())
    opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=1e-3)
    for _ in range(20):
        for i in range(0, 1000, 64):
            loss = F.cross_entropy(head(body(x[i : i + 64])), target[i : i + 64])
            loss = loss + getattr(head, "regularization_loss", 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        log_q = F.log_softmax(head(body(x_test)), -1).double()
    p = _true_bin_probs(x_test)
    return float((p * (torch.log(p + 1e-12) - log_q)).sum(-1).mean())


def test_fourier_head_beats_a_linear_head_on_the_gmm_toy():
    torch.manual_seed(0)
    linear_kl = _toy_kl(nn.Linear(32, BINS))
    torch.manual_seed(0)
    fourier_kl = _toy_kl(FourierHead(32, BINS, 12, regularization_gamma=1e-6))
    assert fourier_kl < 0.75 * linear_kl, (fourier_kl, linear_kl)
