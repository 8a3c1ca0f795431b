"""Reference in-context learners: exactness, stationarity, limits and GD's trajectory."""

import pytest
import torch

from linearlab.analysis.icl_learners import bayes_ridge, gd, ols, predict, ridge
from linearlab.tasks.icl import ICLTask


def _prompts(d=4, n=12, batch=16, noise=0.0, seed=0):
    b = ICLTask(d, n, noise_std=noise, seed=seed, dtype=torch.float64).sample(batch)
    return b.x, b.y, b.w


def test_ols_recovers_w_exactly_when_noiseless():
    for n in (4, 9):  # n == d and n > d
        x, y, w = _prompts(n=n)
        torch.testing.assert_close(ols(x, y), w, atol=1e-9, rtol=0)


def test_ols_underdetermined_is_min_norm_interpolant():
    x, y, _ = _prompts(d=6, n=3)
    w = ols(x, y)
    torch.testing.assert_close(predict(w, x), y, atol=1e-9, rtol=0)
    # min norm <=> w lies in the row space of X: w = X^T a
    a = torch.linalg.lstsq(x.transpose(1, 2), w.unsqueeze(-1)).solution
    torch.testing.assert_close((x.transpose(1, 2) @ a).squeeze(-1), w, atol=1e-9, rtol=0)
    assert torch.equal(ols(x[:, :0], y[:, :0]), torch.zeros(16, 6, dtype=torch.float64))


def test_ridge_stationarity_and_limits():
    x, y, _ = _prompts(noise=0.3)
    lam = 0.7
    w = ridge(x, y, lam)
    grad = (x.transpose(1, 2) @ (predict(w, x) - y).unsqueeze(-1)).squeeze(-1) + lam * w
    assert float(grad.abs().max()) < 1e-9
    torch.testing.assert_close(ridge(x, y, 1e-12), ols(x, y), atol=1e-8, rtol=0)
    big = ridge(x, y, 1e9)
    torch.testing.assert_close(
        big * 1e9, (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1), rtol=1e-6, atol=1e-6
    )


def test_bayes_ridge_is_ridge_with_noise_over_prior_and_beats_other_lambdas():
    x, y, _ = _prompts(noise=0.5)
    torch.testing.assert_close(bayes_ridge(x, y, 0.25, w_var=2.0), ridge(x, y, 0.125))
    torch.testing.assert_close(bayes_ridge(x, y, 0.0), ols(x, y))
    task = ICLTask(5, 9, noise_std=1.0, seed=2, dtype=torch.float64)
    b = task.sample(4000)
    xc, yc, xq, fq = b.x[:, :8], b.y[:, :8], b.x[:, 8:], (b.x[:, 8:] @ b.w.unsqueeze(-1)).squeeze(-1)

    def err(w):
        return float(((predict(w, xq) - fq) ** 2).mean())

    best = err(bayes_ridge(xc, yc, 1.0))
    assert best < err(ridge(xc, yc, 0.1)) and best < err(ridge(xc, yc, 10.0)) and best < err(ols(xc, yc))


def test_one_gd_step_equals_formula():
    x, y, _ = _prompts()
    lr = 0.37
    expected = lr * (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1) / x.shape[1]
    torch.testing.assert_close(gd(x, y, 1, lr), expected)
    p = torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))
    torch.testing.assert_close(gd(x, y, 1, lr, preconditioner=p), expected @ p.T)
    per_prompt = torch.linspace(0.1, 1.0, 16, dtype=torch.float64)
    torch.testing.assert_close(gd(x, y, 1, per_prompt), expected / lr * per_prompt.unsqueeze(-1))


def test_gd_trajectory_converges_to_ols():
    x, y, _ = _prompts(noise=0.2)
    lam_max = torch.linalg.eigvalsh(x.transpose(1, 2) @ x / x.shape[1])[:, -1]
    traj = gd(x, y, 400, 1.0 / lam_max, return_trajectory=True)
    assert traj.shape == (401, 16, 4) and torch.equal(traj[0], torch.zeros(16, 4, dtype=torch.float64))
    torch.testing.assert_close(traj[-1], ols(x, y), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, y: ols(x[0], y), "x: expected a [B, n, d] tensor, got shape (12, 4)"),
        (lambda x, y: ols(x, y[:, :3]), "y: expected shape [B, n] = (16, 12)"),
        (lambda x, y: ridge(x, y, -1.0), "lam: expected a value >= 0, got -1.0"),
        (lambda x, y: bayes_ridge(x, y, 0.1, w_var=0.0), "w_var: expected a value > 0"),
        (lambda x, y: bayes_ridge(x, y, -0.1), "noise_var: expected a value >= 0"),
        (lambda x, y: gd(x, y, -1, 0.1), "steps: expected an integer >= 0, got -1"),
        (lambda x, y: gd(x, y, 1, torch.ones(3)), "lr: expected a float or a [B=16] tensor, got shape (3,)"),
        (lambda x, y: gd(x, y, 1, 0.1, preconditioner=torch.eye(3)), "preconditioner: expected shape [4, 4]"),
        (lambda x, y: predict(torch.zeros(16, 3), x), "predict: expected w [B, d] and x_query [B, m, d]"),
    ],
)
def test_bad_arguments(call, message):
    x, y, _ = _prompts()
    with pytest.raises(ValueError) as err:
        call(x, y)
    assert message in str(err.value)
