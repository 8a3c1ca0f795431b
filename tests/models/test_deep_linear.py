"""Deep linear networks: initialisations, the balanced decoupled start and argument checks."""

import math

import pytest
import torch

from linearlab.models.deep_linear import DeepLinearNet, random_orthogonal


def test_decoupled_start_is_balanced_and_aligned():
    g = torch.Generator().manual_seed(0)
    U, V = random_orthogonal(6, 6, g), random_orthogonal(6, 6, g)
    net = DeepLinearNet.decoupled(U, V, depth=3, u0=0.02)
    torch.testing.assert_close(net.product(), 0.02 * U @ V.T)
    w = net.weights
    for lower, upper in zip(w[:-1], w[1:]):  # balanced: W_{l+1}^T W_{l+1} = W_l W_l^T
        torch.testing.assert_close(upper.T @ upper, lower @ lower.T)
    # each layer has gain u0^(1/L)
    torch.testing.assert_close(w[0] @ w[0].T, 0.02 ** (2 / 3) * torch.eye(6, dtype=torch.float64))


def test_inits():
    ortho = DeepLinearNet([5, 5, 3], init="orthogonal", scale=2.0, seed=0)
    torch.testing.assert_close(ortho.weights[0] @ ortho.weights[0].T, 4 * torch.eye(5, dtype=torch.float64))
    torch.testing.assert_close(ortho.weights[1] @ ortho.weights[1].T, 4 * torch.eye(3, dtype=torch.float64))
    gauss = DeepLinearNet([400, 300], init="gaussian", scale=1.0, seed=0)
    assert float(gauss.weights[0].detach().std()) == pytest.approx(1 / math.sqrt(400), rel=0.02)
    small = DeepLinearNet([400, 300], init="small", scale=1e-3, seed=0)
    assert float(small.weights[0].detach().std()) == pytest.approx(1e-3, rel=0.02)
    assert ortho.depth == 2
    x = torch.randn(7, 5, dtype=torch.float64)
    torch.testing.assert_close(ortho(x), x @ (ortho.weights[1] @ ortho.weights[0]).T)


@pytest.mark.parametrize(
    "call, message",
    [
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
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)
