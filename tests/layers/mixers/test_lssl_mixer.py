"""``lssl`` (``layers/mixers/lssl.py``): HiPPO-LegS state-space layer, convolution and recurrence.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mixer_reference import f64, randn
from torch import nn

from linearlab.layers import create_mixer
from linearlab.layers.mixers.lssl import LinearStateSpaceLayer, bilinear, causal_fft_conv, hippo_legs, krylov


def test_hippo_legs_structure():
    A, B = hippo_legs(5)
    n = torch.arange(5, dtype=f64)
    torch.testing.assert_close(B, torch.sqrt(2 * n + 1))
    torch.testing.assert_close(A.diagonal(), -(n + 1))
    lower = torch.ones(5, 5, dtype=torch.bool).tril(-1)
    torch.testing.assert_close(A[lower], -torch.outer(B, B)[lower])
    assert (A.triu(1) == 0).all()


def test_bilinear_is_stable_and_second_order_accurate():
    A, B = hippo_legs(6)
    dts = torch.tensor([0.01, 0.005, 0.0025], dtype=f64)
    Ab, Bb = bilinear(A, B, dts)
    assert (torch.linalg.eigvals(Ab).abs() < 1).all()  # A is Hurwitz -> |eig(Ab)| < 1 for any dt
    err = [(Ab[i] - torch.linalg.matrix_exp(dts[i] * A)).abs().max() for i in range(3)]
    # local error O(dt^3): halving dt divides it by about 8
    assert 6 < err[0] / err[1] < 10 and 6 < err[1] / err[2] < 10
    Ab1, Bb1 = bilinear(A, B, dts[:1])
    torch.testing.assert_close(
        Bb1[0], torch.linalg.solve(torch.eye(6, dtype=f64) - dts[0] / 2 * A, dts[0] * B)
    )


def test_krylov_kernel_and_power():
    A, B = hippo_legs(6)
    Ab, Bb = bilinear(A, B, torch.tensor([0.03, 0.2], dtype=f64))
    X, AbL = krylov(Ab, Bb, 13)
    for j in (0, 1, 7, 12):
        torch.testing.assert_close(X[..., j], (torch.linalg.matrix_power(Ab, j) @ Bb[..., None])[..., 0])
    torch.testing.assert_close(AbL, torch.linalg.matrix_power(Ab, 13))


def test_fft_conv_is_causal_convolution():
    u, K = randn(2, 3, 10), randn(3, 10, seed=1)
    ref = torch.stack([(K[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(10)], dim=-1)
    torch.testing.assert_close(causal_fft_conv(u, K), ref)


@torch.no_grad()
def test_lssl_convolution_equals_recurrence():
    m = create_mixer("lssl", d_model=4, d_state=8).double()
    x = randn(2, 30, 4)
    m.o_proj = nn.Identity()
    y, state = m(x)
    Ab, Bb = m.discretize(f64)
    h = torch.zeros(2, 4, 8, dtype=f64)
    ys = []
    for t in range(30):
        h = (Ab @ h[..., None])[..., 0] + Bb * x[:, t, :, None]
        ys.append((h * m.C).sum(-1) + m.D * x[:, t])
    torch.testing.assert_close(y, F.gelu(torch.stack(ys, dim=1)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state["recurrent"], h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("T", [2, 3, 17, 64, 70])
def test_lssl_blocked_kernel_with_initial_state_matches_recurrence_with_gradients(T):
    """The block-split kernel, the carried-state terms and the Horner state scan against the
    token recurrence, for T that are and are not multiples of the block length, all gradients."""
    D, N = 3, 5
    Ab, Bb = bilinear(*hippo_legs(N), torch.tensor([0.02, 0.1, 0.4], dtype=f64))
    leaves = [t.clone().requires_grad_() for t in (Ab, Bb, randn(D, N, seed=2), randn(2, D, T, seed=3))]
    h0 = randn(2, D, N, seed=4).requires_grad_()
    Ab_, Bb_, C, u = leaves
    y, h = LinearStateSpaceLayer._convolve(u, Ab_, Bb_, C, h0)
    hr, ys = h0, []
    for t in range(T):
        hr = (Ab_ @ hr[..., None])[..., 0] + Bb_ * u[..., t, None]
        ys.append((hr * C).sum(-1))
    y_ref = torch.stack(ys, dim=-1)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(h, hr, rtol=1e-10, atol=1e-12)
    wy, wh = randn(*y.shape, seed=5), randn(*h.shape, seed=6)
    grads = torch.autograd.grad((y * wy).sum() + (h * wh).sum(), [*leaves, h0])
    grads_ref = torch.autograd.grad((y_ref * wy).sum() + (hr * wh).sum(), [*leaves, h0])
    for g, g_ref in zip(grads, grads_ref):
        torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-11)


def test_lssl_runs_the_ssm_in_float32_for_low_precision_input():
    m = create_mixer("lssl", d_model=4, d_state=6).to(torch.bfloat16)
    y, state = m(torch.randn(1, 5, 4, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and state["recurrent"].dtype == torch.float32


def test_lssl_decoding_cache_follows_the_step_size():
    m = create_mixer("lssl", d_model=4, d_state=6).double()
    with torch.no_grad():
        first = m.discretize(f64)[0]
        assert m.discretize(f64)[0] is first  # cached while nothing changes
        m.log_dt.add_(0.5)  # an optimizer step changes the parameter in place
        torch.testing.assert_close(m.discretize(f64)[0], bilinear(m.A, m.B, m.log_dt.exp())[0])
    # with autograd on, the result is fresh and differentiable
    assert m.discretize(f64)[0].requires_grad


ERRORS = [
    (lambda: create_mixer("lssl", d_model=16, d_state=0), r"d_state: must be >= 1, got 0"),
    (
        lambda: create_mixer("lssl", d_model=16, dt_min=0.1, dt_max=0.01),
        r"dt_min, dt_max: need 0 < dt_min <= dt_max, got 0.1, 0.01",
    ),
]


@pytest.mark.parametrize("make, message", ERRORS, ids=["d_state", "dt_range"])
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
