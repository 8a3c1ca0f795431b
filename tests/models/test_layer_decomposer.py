"""The tiny layer-decomposition U-Net: shapes, ranges, input checks, and that it can fit a scene."""

import pytest
import torch

from linearlab.layers.compositing import recomposition_loss
from linearlab.models.layer_decomposer import LayerDecomposer


def test_shapes_ranges_and_errors():
    net = LayerDecomposer(base=4, depth=2)
    bg, fg = net(torch.rand(2, 3, 16, 16), torch.ones(2, 1, 16, 16))
    assert bg.shape == (2, 3, 16, 16) and fg.shape == (2, 4, 16, 16)
    assert bg.min() >= 0 and bg.max() <= 1 and fg.min() >= 0 and fg.max() <= 1
    with pytest.raises(ValueError, match=r"H and W must be divisible by 2\*\*depth = 4, got \(18, 18\)"):
        net(torch.rand(1, 3, 18, 18), torch.ones(1, 1, 18, 18))
    with pytest.raises(ValueError, match=r"image, mask: expected \[B, 3, H, W\] and \[B, 1, H, W\]"):
        net(torch.rand(1, 4, 16, 16), torch.ones(1, 1, 16, 16))


def test_the_recomposition_loss_trains_to_reproduce_the_image():
    torch.manual_seed(0)
    net = LayerDecomposer(base=4, depth=1)
    img, mask = torch.rand(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        bg, fg = net(img, mask)
        loss = recomposition_loss(fg, bg, img)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first
