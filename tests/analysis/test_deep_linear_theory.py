"""Saxe et al.'s closed forms against numerical ODE solutions, and the teacher / mode read-out."""

import math

import pytest
import torch
from scipy.integrate import solve_ivp

from linearlab.analysis.deep_linear_theory import (
    deep_half_time,
    half_time,
    half_time_index,
    mode_strengths,
    strength_closed_form,
    teacher,
)
from linearlab.models.deep_linear import DeepLinearNet


@pytest.mark.parametrize("s, u0, tau", [(4.0, 1e-4, 100.0), (0.5, 1e-3, 30.0), (2.0, 0.3, 10.0)])
def test_closed_form_matches_numeric_ode(s, u0, tau):
    t_end = 3 * half_time(s, u0, tau)
    ts = torch.linspace(0, t_end, 200, dtype=torch.float64)
    sol = solve_ivp(
        lambda t, u: 2 * u * (s - u) / tau, (0, t_end), [u0], t_eval=ts.numpy(), rtol=1e-10, atol=1e-14
    )
    numeric = torch.as_tensor(sol.y[0])
    assert float((strength_closed_form(ts, s, u0, tau) - numeric).abs().max()) < 1e-6 * s
    assert float(strength_closed_form(half_time(s, u0, tau), s, u0, tau)) == pytest.approx(s / 2, rel=1e-12)


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


def test_teacher_and_mode_strengths_of_a_decoupled_start():
    T, U, V = teacher(6, 6, [3.0, 1.0], seed=0)
    torch.testing.assert_close(
        torch.linalg.svdvals(T)[:3], torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)
    )
    torch.testing.assert_close(U.T @ U, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(mode_strengths(T, U, V, 2), torch.tensor([3.0, 1.0], dtype=torch.float64))
    net = DeepLinearNet.decoupled(U, V, depth=3, u0=0.02)
    torch.testing.assert_close(
        mode_strengths(net.product(), U, V, 2), torch.full((2,), 0.02, dtype=torch.float64)
    )
    assert mode_strengths(net.product(), U, V).shape == (6,)


def test_half_time_index_interpolates():
    assert half_time_index(torch.tensor([0.0, 0.2, 0.6, 1.0]), 1.0) == pytest.approx(1.75)
    assert half_time_index(torch.tensor([0.5, 0.9]), 1.0) == 0.0
    assert half_time_index(torch.tensor([0.0, 0.1]), 1.0) == math.inf


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: teacher(3, 3, [1.0, 2.0, 3.0, 4.0]),
            "singular_values: expected 1..min(d_out, d_in)=3 positive",
        ),
        (lambda: teacher(3, 3, [1.0, -1.0]), "singular_values: expected"),
        (lambda: half_time(1.0, 0.6, 10.0), "u0: expected 0 < u0 < s/2 = 0.5, got 0.6"),
        (lambda: deep_half_time(1.0, 0.1, 10.0, 0), "depth: expected an integer >= 1, got 0"),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)
