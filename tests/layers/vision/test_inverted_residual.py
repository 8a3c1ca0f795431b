"""InvertedResidual: shapes, the shortcut, the linear bottleneck, 2-D/3-D agreement and errors."""

import pytest
import torch
from torch import nn

from linearlab.layers.vision.inverted_residual import InvertedResidual


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride,cin,cout", [(1, 4, 4), (2, 4, 6), (1, 4, 6)])
def test_shapes_and_shortcut(dims, stride, cin, cout):
    blk = InvertedResidual(cin, cout, stride=stride, expand=3, dims=dims)
    x = torch.randn(2, cin, *([8] * dims))
    y = blk(x)
    assert y.shape == (2, cout, *([8 // stride] * dims))
    assert blk.use_shortcut == (stride == 1 and cin == cout)
    if blk.use_shortcut:
        torch.testing.assert_close(y - x, blk.body(x))


def test_linear_bottleneck_output_is_signed_and_relu6_clips_it():
    torch.manual_seed(0)
    x = torch.randn(4, 4, 8, 8)
    lin = InvertedResidual(4, 6, expand=6, bottleneck_act=None)
    rel = InvertedResidual(4, 6, expand=6, bottleneck_act="relu6")
    rel.load_state_dict(lin.state_dict())
    y_lin, y_rel = lin(x), rel(x)
    assert (y_lin < 0).any()  # nothing clips a linear bottleneck
    torch.testing.assert_close(y_rel, y_lin.clamp(0, 6))
    assert isinstance(rel.body[-1], nn.ReLU6) and not isinstance(lin.body[-1], nn.ReLU6)


def test_expand_one_skips_the_expansion_conv():
    blk = InvertedResidual(4, 4, expand=1, norm="none")
    convs = [m for m in blk.body if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and convs[0].groups == 4


def test_3d_block_on_a_volume_constant_in_depth_equals_the_2d_block():
    """A 3-D block whose kernels are the 2-D ones placed in the middle depth slice acts on a
    depth-constant volume (away from the depth borders) like the 2-D block on one slice."""
    torch.manual_seed(1)
    b2 = InvertedResidual(4, 4, expand=2, dims=2, norm="none")
    b3 = InvertedResidual(4, 4, expand=2, dims=3, norm="none")
    with torch.no_grad():
        for m2, m3 in zip(b2.body, b3.body):
            if isinstance(m2, nn.Conv2d):
                m3.weight.zero_()
                kd = m3.weight.shape[2] // 2
                m3.weight[:, :, kd] = m2.weight
                m3.bias.copy_(m2.bias)
    x2 = torch.randn(2, 4, 6, 6)
    x3 = x2[:, :, None].expand(2, 4, 5, 6, 6).contiguous()
    torch.testing.assert_close(b3(x3)[:, :, 2], b2(x2), rtol=1e-5, atol=1e-5)


def test_bad_input_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"x: InvertedResidual\(dims=3\) is 3-D and expects \[B, C, D, H, W\]"
    ):
        InvertedResidual(4, 4, dims=3)(torch.randn(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"x: InvertedResidual\(dims=2\) expects 4 channels"):
        InvertedResidual(4, 4)(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="bottleneck_act: expected None"):
        InvertedResidual(4, 4, bottleneck_act="relu")
    with pytest.raises(ValueError, match="stride: expected 1 or 2, got 3"):
        InvertedResidual(4, 4, stride=3)
    with pytest.raises(ValueError, match="dims: expected 2"):
        InvertedResidual(4, 4, dims=1)
    with pytest.raises(ValueError, match="norm: expected one of"):
        InvertedResidual(4, 4, norm="layer")
