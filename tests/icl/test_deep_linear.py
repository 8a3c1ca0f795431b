import math

import pytest
import torch
from scipy.integrate import solve_ivp

from linearlab.models.deep_linear import (
    DeepLinearNet,
    deep_half_time,
    half_time,
    half_time_index,
    mode_strengths,
    strength_closed_form,
    teacher,
    train_full_batch,
)


@pytest.mark.parametrize("s, u0, tau", [(4.0, 1e-4, 100.0), (0.5, 1e-3, 30.0), (2.0, 0.3, 10.0)])
def test_closed_form_matches_numeric_ode(s, u0, tau):
    t_end = 3 * half_time(s, u0, tau)
    ts = torch.linspace(0, t_end, 200, dtype=torch.float64)
    sol = solve_ivp(
        lambda t, u: 2 * u * (s - u) / tau, (0, t_end), [u0], t_eval=ts.numpy(), rtol=1e-10, atol=1e-14
    )
    numeric = torch.as_tensor(sol.y[0])
    assert float((strength_closed_form(ts, s, u0, tau) - numeric).abs().max()) < 1e-6 * s


@pytest.mark.parametrize("depth", [2, 3, 5])
def test_deep_half_time_matches_ode_event(depth):
    s, u0, tau = 1.5, 0.01, 20.0

    def rhs(t, u):
        return depth * u ** (2 - 2 / depth) * (s - u) / tau

    def half(t, u):
        return u[0] - s / 2

    half.terminal = True
    sol = solve_ivp(rhs, (0, 1e6), [u0], events=half, rtol=1e-10, atol=1e-14)
    assert deep_half_time(s, u0, tau, depth) == pytest.approx(float(sol.t_events[0][0]), rel=1e-6)
    if depth == 2:
        assert deep_half_time(s, u0, tau, 2) == pytest.approx(half_time(s, u0, tau), rel=1e-8)


def test_teacher_and_decoupled_start():
    T, U, V = teacher(6, 6, [3.0, 1.0], seed=0)
    torch.testing.assert_close(
        torch.linalg.svdvals(T)[:3], torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    )
    net = DeepLinearNet.decoupled(U, V, depth=3, u0=0.02)
    torch.testing.assert_close(net.product(), 0.02 * U @ V.T)
    torch.testing.assert_close(
        mode_strengths(net.product(), U, V, 2), torch.full((2,), 0.02, dtype=torch.float64)
    )
    w = net.weights
    for lower, upper in zip(w[:-1], w[1:]):  # balanced: W_{l+1}^T W_{l+1} = W_l W_l^T
        torch.testing.assert_close(upper.T @ upper, lower @ lower.T)


def test_gd_from_decoupled_start_follows_the_sigmoid():
    s_values = [2.0, 1.0]
    T, U, V = teacher(4, 4, s_values, seed=1)
    net = DeepLinearNet.decoupled(U, V, depth=2, u0=1e-3)
    products, losses = train_full_batch(net, T, lr=0.02, steps=300)
    assert products.shape == (301, 4, 4) and losses[-1] < losses[0]
    for i, s in enumerate(s_values):
        traj = torch.stack([mode_strengths(p, U, V, 2)[i] for p in products])
        theory = half_time(s, 1e-3, 50.0)
        assert half_time_index(traj, s) == pytest.approx(theory, rel=0.03)
        closed = strength_closed_form(torch.arange(301.0), s, 1e-3, 50.0)
        assert float((traj - closed).abs().max()) < 0.06 * s


def test_inits():
    ortho = DeepLinearNet([5, 5, 3], init="orthogonal", scale=2.0, seed=0)
    torch.testing.assert_close(ortho.weights[0] @ ortho.weights[0].T, 4 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(ortho.weights[1] @ ortho.weights[1].T, 4 * torch.eye(3, dtype=torch.float64))
    gauss = DeepLinearNet([400, 300], init="gaussian", scale=1.0, seed=0)
    assert float(gauss.weights[0].detach().std()) == pytest.approx(1 / math.sqrt(400), rel=0.02)
    small = DeepLinearNet([400, 300], init="small", scale=1e-3, seed=0)
    assert float(small.weights[0].detach().std()) == pytest.approx(1e-3, rel=0.02)
    assert ortho.depth == 2 and ortho(torch.zeros(7, 5)).shape == (7, 3)


def test_half_time_index_interpolates():
    assert half_time_index(torch.tensor([0.0, 0.2, 0.6, 1.0]), 1.0) == pytest.approx(1.75)
    assert half_time_index(torch.tensor([0.0, 0.1]), 1.0) == math.inf


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: teacher(3, 3, [1.0, 2.0, 3.0, 4.0]),
            "singular_values: expected 1..min(d_out, d_in)=3 positive",
        ),
        (lambda: teacher(3, 3, [1.0, -1.0]), "singular_values: expected"),
        (lambda: DeepLinearNet([4]), "dims: expected at least two positive integer widths"),
        (lambda: DeepLinearNet([4, 4], init="xavier"), "init: expected one of"),
        (lambda: DeepLinearNet([4, 4], scale=0.0), "scale: expected a value > 0"),
        (
            lambda: DeepLinearNet.decoupled(torch.eye(3), torch.eye(3), depth=0, u0=0.1),
            "depth: expected an integer >= 1",
        ),
        (
            lambda: DeepLinearNet.decoupled(torch.eye(3), torch.eye(3), depth=2, u0=0.0),
            "u0: expected a value > 0",
        ),
        (
            lambda: DeepLinearNet.decoupled(torch.eye(3), torch.eye(4), depth=2, u0=0.1),
            "u_basis, v_basis: expected",
        ),
        (lambda: half_time(1.0, 0.6, 10.0), "u0: expected 0 < u0 < s/2 = 0.5, got 0.6"),
        (lambda: deep_half_time(1.0, 0.1, 10.0, 0), "depth: expected an integer >= 1, got 0"),
        (
            lambda: train_full_batch(DeepLinearNet([2, 2]), torch.eye(2), 0.1, -1),
            "steps: expected an integer >= 0",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)
