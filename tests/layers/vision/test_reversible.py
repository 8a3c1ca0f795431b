"""Reversible coupling: exact inversion, gradients equal to plain autograd, saved bytes flat in depth."""

import pytest
import torch

from linearlab.layers.vision.inverted_residual import InvertedResidual
from linearlab.layers.vision.reversible import ReversibleBlock, ReversibleSequence, SavedTensorBytes


def _stack(n, c=4, dims=3, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)

    def mb():
        return InvertedResidual(c // 2, c // 2, expand=4, dims=dims, norm="group", residual=False)

    return ReversibleSequence([ReversibleBlock(mb(), mb()) for _ in range(n)]).to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-13)])
def test_inverse_recovers_the_input(dtype, tol):
    seq = _stack(4, dtype=dtype)
    x = torch.randn(2, 4, 6, 6, 6, dtype=dtype)
    with torch.no_grad():
        err = (seq.inverse(seq(x)) - x).abs().max().item()
    assert err < tol


def test_gradients_equal_standard_autograd():
    seq = _stack(3, dtype=torch.float64)
    x = torch.randn(2, 4, 5, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 4, 5, 5, 5, dtype=torch.float64)
    results = []
    for reversible in (False, True):
        seq.reversible = reversible
        seq.zero_grad(set_to_none=True)
        x.grad = None
        y = seq(x)
        (y * w).sum().backward()
        results.append((y.detach(), x.grad.clone(), [p.grad.clone() for p in seq.parameters()]))
    (y0, gx0, gp0), (y1, gx1, gp1) = results
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-12)
    assert len(gp0) == len(gp1) > 0
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_gradcheck_of_the_custom_function():
    seq = _stack(2, c=2, dims=2, dtype=torch.float64, seed=3)
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(seq, (x,))


def _saved(seq, x):
    with SavedTensorBytes(exclude=seq.parameters()) as counter:
        seq(x.requires_grad_(True)).sum()
    return counter.bytes


def test_saved_tensor_bytes_are_flat_in_depth_for_the_reversible_stack():
    x = torch.randn(1, 4, 6, 6, 6)
    rev = [_saved(_stack(n), x) for n in (1, 2, 4, 8)]
    std = []
    for n in (1, 2, 4, 8):
        s = _stack(n)
        s.reversible = False
        std.append(_saved(s, x))
    assert rev == [x.numel() * 4] * 4  # only the stack's output is kept, whatever the depth
    # plain autograd keeps every block's activations: exactly linear in depth
    assert std[3] - std[2] == 4 * (std[1] - std[0]) and std[2] - std[1] == 2 * (std[1] - std[0]) > 0


def test_odd_channels_and_wrong_blocks_are_clear_errors():
    with pytest.raises(ValueError, match="x: a reversible block splits dim 1 into two halves; got 5"):
        _stack(1)(torch.randn(1, 5, 4, 4, 4))
    with pytest.raises(TypeError, match=r"blocks\[0\]: expected a ReversibleBlock, got Conv2d"):
        ReversibleSequence([torch.nn.Conv2d(2, 2, 1)])
