"""LinearScope: f(x0) = A(x0) x0 + b(x0), A = the autograd Jacobian, transposes, clear errors."""

import pytest
import torch
from torch import nn

from linearlab.analysis.linear_scope import LinearScope


def _cnn(bn: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(4))
    layers += [
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.LeakyReLU(0.1)),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(24, 16),
        nn.ReLU(),
        nn.Linear(16, 5),
    ]
    net = nn.Sequential(*layers)
    if bn:  # non-trivial running statistics and affine parameters
        with torch.no_grad():
            net[1].running_mean.uniform_(-0.5, 0.5)
            net[1].running_var.uniform_(0.5, 2.0)
            net[1].weight.uniform_(0.5, 1.5)
            net[1].bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_affine_reconstruction_to_float32_precision():
    net = _cnn()
    x0 = torch.randn(6, 1, 8, 8)
    scope = LinearScope(net)
    f, lin, b = scope.decompose(x0)
    torch.testing.assert_close(f, net(x0), rtol=0, atol=0)
    assert float((f - (lin + b)).abs().max()) < 1e-6
    A = scope.matrix(x0)
    assert A.shape == (6, 5, 64)
    recon = torch.einsum("boi,bi->bo", A, x0.flatten(1)) + scope.bias(x0)
    assert float((recon - f).abs().max()) < 1e-6
    # the interpreter with bias at x1 = x0 is the network itself
    y0, y1 = scope(x0, x0)
    assert float((y1 - y0).abs().max()) < 1e-6


def test_matrix_equals_the_autograd_jacobian():
    net = _cnn().double()
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    A = LinearScope(net).matrix(x0)
    for i in range(3):
        J = torch.func.jacrev(lambda x: net(x.unsqueeze(0)).squeeze(0))(x0[i]).reshape(5, 64)
        torch.testing.assert_close(A[i], J, rtol=1e-9, atol=1e-10)
    # and in float32 to ~1e-6
    net32, x32 = _cnn(), x0.float()
    A32 = LinearScope(net32).matrix(x32)
    J32 = torch.func.jacrev(lambda x: net32(x.unsqueeze(0)).squeeze(0))(x32[0]).reshape(5, 64)
    assert float((A32[0] - J32.detach()).abs().max()) < 1e-6


def test_interpreter_is_affine_in_x1_with_frozen_masks():
    net = _cnn()
    scope = LinearScope(net)
    x0, u, v = torch.randn(3, 2, 1, 8, 8).unbind(0)
    Au, Av = scope.apply(x0, u), scope.apply(x0, v)
    torch.testing.assert_close(scope.apply(x0, 2.0 * u - 3.0 * v), 2.0 * Au - 3.0 * Av, rtol=1e-5, atol=1e-5)
    # the masks come from x0, not x1: a different x1 sign pattern changes nothing in A
    torch.testing.assert_close(scope.apply(x0, -u), -Au, rtol=0, atol=0)
    # k vectors per row at once
    both = scope.apply(x0, torch.stack([u, v], 1))
    torch.testing.assert_close(both, torch.stack([Au, Av], 1), rtol=1e-6, atol=1e-6)


def test_transpose_product_matches_the_matrix():
    net = _cnn().double()
    scope = LinearScope(net)
    x0 = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    u = torch.randn(2, 5, dtype=torch.float64)
    At_u = scope.apply_transpose(x0, u)
    assert At_u.shape == x0.shape
    expected = torch.einsum("boi,bo->bi", scope.matrix(x0), u).reshape(x0.shape)
    torch.testing.assert_close(At_u, expected, rtol=1e-10, atol=1e-12)


def test_conv1d_maxpool1d_and_linear_only_networks():
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2, ceil_mode=True),
        nn.BatchNorm1d(3), nn.AdaptiveAvgPool1d(2), nn.Flatten(), nn.Linear(6, 4, bias=False),
    ).eval().double()  # fmt: skip
    x0 = torch.randn(4, 2, 7, dtype=torch.float64)
    scope = LinearScope(net)
    J = torch.func.jacrev(lambda x: net(x.unsqueeze(0)).squeeze(0))(x0[1]).reshape(4, 14)
    torch.testing.assert_close(scope.matrix(x0)[1], J, rtol=1e-10, atol=1e-12)
    f, lin, b = scope.decompose(x0)
    torch.testing.assert_close(lin + b, f, rtol=1e-10, atol=1e-12)
    # a purely linear map: A is the weight for every input, and the bias is zero
    lin_net = nn.Linear(5, 3, bias=False)
    A = LinearScope(lin_net).matrix(torch.randn(2, 5))
    torch.testing.assert_close(A, lin_net.weight.detach().expand(2, 3, 5), rtol=0, atol=0)
    assert float(LinearScope(lin_net).bias(torch.randn(2, 5)).abs().max()) == 0.0


def test_unsupported_modules_and_training_mode_are_clear_errors():
    with pytest.raises(TypeError, match=r"cannot linearise module GELU at '1'.*nn.ReLU.*nn.MaxPool2d"):
        LinearScope(nn.Sequential(nn.Linear(3, 3), nn.GELU()))
    with pytest.raises(TypeError, match=r"cannot linearise module Sigmoid at '0.1'"):
        LinearScope(nn.Sequential(nn.Sequential(nn.Linear(3, 3), nn.Sigmoid())))

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="cannot linearise module Custom; supported"):
        LinearScope(Custom())
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match=r"BatchNorm1d at '1' is in training mode.*model.eval\(\)"):
        LinearScope(net).bias(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"x1: expected shape \[B=2, k, 3\]"):
        LinearScope(net.eval()).apply(torch.randn(2, 3), torch.randn(3, 1, 3))
    with pytest.raises(ValueError, match="x0: expected a float tensor"):
        LinearScope(net).matrix(torch.ones(2, 3, dtype=torch.long))
