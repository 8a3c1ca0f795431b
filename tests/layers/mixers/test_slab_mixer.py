"""``slab`` (``layers/mixers/slab.py``): normalised ReLU linear attention plus a causal depthwise conv on ``v``.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mixer_reference import causal_linear_reference, heads, randn

from linearlab.layers import create_mixer


@torch.no_grad()
def test_slab_is_relu_linear_attention_plus_causal_depthwise_conv():
    m = create_mixer("slab", d_model=16, num_heads=2, conv_size=3).double()
    x = randn(2, 8, 16)
    q, k = F.relu(heads(m.q_proj(x), 2)), F.relu(heads(m.k_proj(x), 2))
    v = m.v_proj(x)
    attn = causal_linear_reference(q, k, heads(v, 2), normalize=True).flatten(-2)
    # the conv at time t only sees v_{t-2}, v_{t-1}, v_t (zeros before the start)
    vp = F.pad(v, (0, 0, 2, 0))
    w = m.dwc.weight[:, 0]  # [D, 3]
    conv = sum(vp[:, j : j + 8] * w[:, j] for j in range(3)) + m.dwc.bias
    torch.testing.assert_close(m(x)[0], m.o_proj(attn + conv), rtol=1e-6, atol=1e-6)
    # the conv buffer holds the last conv_size - 1 values of v
    torch.testing.assert_close(m(x)[1]["conv"], v[:, -2:].transpose(1, 2))


def test_errors():
    with pytest.raises(ValueError, match=r"conv_size: must be >= 1, got 0"):
        create_mixer("slab", d_model=16, conv_size=0)
