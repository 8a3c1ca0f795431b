"""Closed forms of in-context linear regression, checked by Monte Carlo on the task's prompts."""

import pytest
import torch

from linearlab.analysis.icl_learners import gd, ols, predict
from linearlab.analysis.icl_theory import (
    marchenko_pastur_gd_rates,
    ols_error_by_k,
    one_step_mse,
    optimal_one_step_lr,
    optimal_one_step_mse,
    optimal_preconditioner,
)
from linearlab.tasks.icl import ICLTask


def test_optimal_one_step_closed_forms_against_monte_carlo():
    d, n = 5, 20
    eta = optimal_one_step_lr(n, d)
    assert eta == pytest.approx(20 / 26)
    assert optimal_one_step_mse(n, d) == pytest.approx(5 * 6 / 26)
    assert one_step_mse(torch.eye(d), eta * torch.eye(d), n) == pytest.approx(optimal_one_step_mse(n, d))
    b = ICLTask(d, n + 1, seed=4, dtype=torch.float64).sample(40000)
    h = (b.x[:, :n] * b.y[:, :n].unsqueeze(-1)).mean(1)
    g1 = (h * b.x[:, n]).sum(-1)  # one GD step with eta = 1
    yq = b.y[:, n]
    slope = float((g1 * yq).sum() / (g1 * g1).sum())  # best eta fitted on the prompts
    assert slope == pytest.approx(eta, abs=0.01)
    assert float(((eta * g1 - yq) ** 2).mean()) == pytest.approx(optimal_one_step_mse(n, d), rel=0.03)


def test_optimal_preconditioner_minimises_the_exact_loss():
    cov = torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    n, s2 = 10, 0.3
    g = optimal_preconditioner(cov, n, s2)
    best = one_step_mse(cov, g, n, s2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert (
            one_step_mse(cov, g + 0.01 * torch.randn(3, 3, generator=gen, dtype=torch.float64), n, s2) > best
        )
    # Monte Carlo check of the exact loss on anisotropic prompts
    b = ICLTask(3, n + 1, noise_std=s2**0.5, covariance=cov, seed=1, dtype=torch.float64).sample(40000)
    h = (b.x[:, :n] * b.y[:, :n].unsqueeze(-1)).mean(1)
    pred = (h @ g * b.x[:, n]).sum(-1)
    assert float(((pred - b.y[:, n]) ** 2).mean()) == pytest.approx(best, rel=0.03)


def test_ols_error_by_k_against_monte_carlo():
    d, N = 4, 10
    noiseless = ols_error_by_k(d, N, 0.0)
    assert noiseless == [1.0, 0.75, 0.5, 0.25] + [0.0] * 6
    noisy = ols_error_by_k(d, N, 0.25)
    assert noisy[0] == pytest.approx((4 + 0.25) / 4) and noisy[1:6] == [None] * 5
    b = ICLTask(d, N, noise_std=0.5, seed=3, dtype=torch.float64).sample(20000)
    for k in (6, 9):  # closed form from k = d + 2
        err = float(
            ((predict(ols(b.x[:, :k], b.y[:, :k]), b.x[:, k : k + 1]).squeeze(-1) - b.y[:, k]) ** 2).mean()
        )
        assert err / d == pytest.approx(noisy[k], rel=0.05)
    clean = ICLTask(d, N, seed=4, dtype=torch.float64).sample(20000)
    for k in (1, 3):
        pred = predict(ols(clean.x[:, :k], clean.y[:, :k]), clean.x[:, k : k + 1]).squeeze(-1)
        assert float(((pred - clean.y[:, k]) ** 2).mean()) / d == pytest.approx(noiseless[k], rel=0.05)


def test_marchenko_pastur_rates_match_the_spectrum_and_gd():
    d, n = 40, 160  # n = 4d: sqrt(d/n) = 1/2, edges 9/4 and 1/4
    mp = marchenko_pastur_gd_rates(d, n)
    assert mp["eta_fixed"] == pytest.approx(4 / 9) and mp["kappa_mp"] == pytest.approx(9.0)
    assert mp["rate_fixed"] == pytest.approx(1 - 1 / 9) and mp["rate_opt"] == pytest.approx(0.8)
    b = ICLTask(d, n, seed=0, dtype=torch.float64).sample(8)
    eig = torch.linalg.eigvalsh(b.x.transpose(1, 2) @ b.x / n)
    # the bulk edges, up to the finite-size (Tracy-Widom) fluctuations of a 40 x 160 matrix
    assert float(eig[:, -1].mean()) == pytest.approx(9 / 4, rel=0.08)
    assert float(eig[:, 0].mean()) == pytest.approx(1 / 4, rel=0.3)
    # GD with the fixed step contracts the error to OLS by at most max |1 - eta lambda| per step
    w = gd(b.x, b.y, 30, mp["eta_fixed"], return_trajectory=True)
    err = (w - ols(b.x, b.y)).norm(dim=-1)
    bound = (1 - mp["eta_fixed"] * eig).abs().max(-1).values
    assert bool((err[30] <= err[0] * bound**30 * (1 + 1e-9)).all())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: optimal_one_step_lr(0, 3), "n and d: expected integers >= 1"),
        (lambda: marchenko_pastur_gd_rates(10, 10), "n: expected more examples than dimensions (n > d = 10)"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)
