"""``layers/short_conv.py``: the causal short convolution and the q/k/v mixin built on it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.short_conv import ShortConvolution, ShortConvQKV


@pytest.mark.parametrize("T", [1, 9])
def test_short_conv_matches_explicit_causal_sum(T):
    conv = ShortConvolution(5, kernel_size=4, bias=True).double()
    x = torch.randn(2, T, 5, dtype=torch.float64)
    y, cache = conv(x)
    w = conv.weight[:, 0, :]  # [D, W]: w[:, -1] multiplies the current token
    xp = F.pad(x, (0, 0, 3, 0))  # three zero tokens before the start
    ref = torch.stack([(xp[:, t : t + 4] * w.T).sum(1) + conv.bias for t in range(T)], dim=1)
    torch.testing.assert_close(y, F.silu(ref), rtol=0, atol=1e-12)
    torch.testing.assert_close(cache, xp[:, -3:].transpose(1, 2), rtol=0, atol=0)  # last 3 inputs
    # the carried state is a compact copy, not a view into the prefill buffer
    assert cache.untyped_storage().nbytes() == cache.numel() * cache.element_size()


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_short_conv_stepping_equals_full(kernel_size):
    conv = ShortConvolution(6, kernel_size=kernel_size, activation=None).double()
    x = torch.randn(2, 37, 6, dtype=torch.float64)
    y_full, cache_full = conv(x)
    cache, steps = None, []
    for t in range(37):
        y_t, cache = conv(x[:, t : t + 1], cache)
        steps.append(y_t)
    torch.testing.assert_close(torch.cat(steps, 1), y_full, rtol=0, atol=1e-13)
    torch.testing.assert_close(cache, cache_full, rtol=0, atol=0)
    # pieces shorter than the kernel also carry exactly
    y_a, c_a = conv(x[:, :2])
    y_b, c_b = conv(x[:, 2:], c_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, rtol=0, atol=1e-13)
    assert conv.state_size() == 6 * (kernel_size - 1)


def test_short_conv_equals_depthwise_conv1d():
    """Same parameters and result as ``nn.Conv1d(groups=D)`` on the left-padded input."""
    conv = ShortConvolution(6, kernel_size=3, bias=True, activation=None).double()
    ref = nn.Conv1d(6, 6, 3, groups=6, bias=True).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 11, 6, dtype=torch.float64)
    expected = ref(F.pad(x.transpose(1, 2), (2, 0))).transpose(1, 2)
    torch.testing.assert_close(conv(x)[0], expected, rtol=1e-12, atol=1e-12)


def test_short_conv_errors():
    conv = ShortConvolution(4)
    with pytest.raises(ValueError, match=r"x: expected shape \[B, T, 4\], got \[2, 3, 5\]"):
        conv(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"cache: expected shape .* = \[2, 4, 3\], got \[2, 4, 2\]"):
        conv(torch.randn(2, 3, 4), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="activation: expected 'silu' or None, got 'relu'"):
        ShortConvolution(4, activation="relu")
    with pytest.raises(ValueError, match="kernel_size: expected a positive int, got 0"):
        ShortConvolution(4, kernel_size=0)


class _QKV(ShortConvQKV):
    def __init__(self, use_short_conv: bool) -> None:
        super().__init__()
        self.use_short_conv = use_short_conv
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(8, 4), nn.Linear(8, 6), nn.Linear(8, 10)
        self.init_qkv_convs(conv_size=3, conv_bias=False)


@pytest.mark.parametrize("use_short_conv", [True, False])
def test_short_conv_qkv(use_short_conv):
    m = _QKV(use_short_conv).double()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    q, k, v, conv_state = m.project_qkv(x, None)
    assert (q.shape, k.shape, v.shape) == ((2, 5, 4), (2, 5, 6), (2, 5, 10))
    if not use_short_conv:
        torch.testing.assert_close(k, F.silu(m.k_proj(x)))
        assert conv_state == {} and m.qkv_conv_state_shapes(2) == {} and m.qkv_conv_state_size() == 0
        return
    torch.testing.assert_close(k, m.k_conv1d(m.k_proj(x))[0])  # the conv's own SiLU
    assert {n: list(t.shape) for n, t in conv_state.items()} == {
        "conv_q": [2, 4, 2],
        "conv_k": [2, 6, 2],
        "conv_v": [2, 10, 2],
    }
    assert {n: str(s) for n, s in m.qkv_conv_state_shapes(2).items()} == {
        "conv_q": "[B=2, C=4, kernel-1=2]",
        "conv_k": "[B=2, C=6, kernel-1=2]",
        "conv_v": "[B=2, C=10, kernel-1=2]",
    }
    assert m.qkv_conv_state_size() == (4 + 6 + 10) * 2
    # the carried buffers continue the sequence exactly
    q1, k1, v1, s1 = m.project_qkv(x[:, :3], None)
    q2, k2, v2, _ = m.project_qkv(x[:, 3:], s1)
    torch.testing.assert_close(torch.cat([v1, v2], 1), v, rtol=0, atol=1e-13)
