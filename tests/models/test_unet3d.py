"""Reversible 3-D U-Net: same function and gradients as the stored-activation net, memory flat in depth, errors."""

import pytest
import torch

from linearlab.layers.vision.reversible import SavedTensorBytes
from linearlab.models.unet3d import ReversibleUNet3d


def _grads(net, x, target):
    net.zero_grad(set_to_none=True)
    out = net(x)
    torch.nn.functional.cross_entropy(out, target).backward()
    return out.detach(), [p.grad.clone() for p in net.parameters()]


def test_reversible_and_standard_nets_agree_on_outputs_and_every_gradient():
    torch.manual_seed(0)
    net = ReversibleUNet3d(1, 2, base=4, levels=2, blocks=2, expand=2).double()
    x = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    target = (x[:, 0] > 0).long()
    out_r, g_r = _grads(net, x, target)
    net.set_reversible(False)
    out_s, g_s = _grads(net, x, target)
    torch.testing.assert_close(out_r, out_s, rtol=1e-12, atol=1e-12)
    for a, b in zip(g_r, g_s):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def _saved(blocks, reversible):
    torch.manual_seed(0)
    net = ReversibleUNet3d(1, 2, base=4, levels=2, blocks=blocks, expand=2, reversible=reversible)
    with SavedTensorBytes(exclude=net.parameters()) as c:
        net(torch.randn(1, 1, 8, 8, 8, requires_grad=True)).sum()
    return c.bytes


def test_saved_bytes_are_flat_in_depth_only_for_the_reversible_net():
    rev = [_saved(n, True) for n in (1, 2, 4)]
    std = [_saved(n, False) for n in (1, 2, 4)]
    assert rev[0] == rev[1] == rev[2]
    step = std[1] - std[0]
    assert step > 0 and std[2] - std[1] == 2 * step
    assert std[0] > rev[0]


def test_bad_input_is_a_clear_error():
    net = ReversibleUNet3d(1, 2, base=4, levels=3, blocks=1)
    with pytest.raises(
        ValueError,
        match=r"x: ReversibleUNet3d expects a volume \[B, C, D, H, W\] \(5 dims\), got \[1, 1, 8, 8\]",
    ):
        net(torch.randn(1, 1, 8, 8))
    with pytest.raises(
        ValueError, match=r"x: spatial sizes \[8, 8, 6\] must be divisible by 2\*\*\(levels-1\) = 4"
    ):
        net(torch.randn(1, 1, 8, 8, 6))
    with pytest.raises(ValueError, match="base: expected an even int"):
        ReversibleUNet3d(base=5)
