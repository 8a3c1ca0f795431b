"""``lightning`` (``layers/mixers/lightning.py``): TransNormerLLM attention on the Lightning Attention-2 ops.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mixer_reference import causal_linear_reference, f64, heads, randn

from linearlab.layers import create_mixer


@pytest.mark.parametrize("layer_idx", [0, 2])
@torch.no_grad()
def test_lightning_matches_decayed_reference_for_its_layer(layer_idx):
    from linearlab.ops import lightning_attn_decay

    m = create_mixer("lightning", d_model=16, num_heads=2, layer_idx=layer_idx, num_layers=3).double()
    x = randn(2, 9, 16)
    q, k, v = (heads(t, 2) for t in F.silu(m.qkv_proj(x)).chunk(3, dim=-1))
    g = lightning_attn_decay(2, layer_idx, 3, dtype=f64)
    o = causal_linear_reference(q, k, v, normalize=False, scale=8**-0.5, log_decay=g).flatten(-2)
    o = o / (o.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * torch.sigmoid(m.gate(x))
    torch.testing.assert_close(m(x)[0], m.o_proj(o))
    # the same weights in another layer decay differently, so the layer index really is used
    other = create_mixer("lightning", d_model=16, num_heads=2, layer_idx=1, num_layers=3).double()
    other.load_state_dict(m.state_dict())
    assert not torch.allclose(other(x)[0], m(x)[0])


def test_errors():
    with pytest.raises(ValueError, match=r"layer_idx: must be in \[0, num_layers = 3\), got 3"):
        create_mixer("lightning", d_model=16, layer_idx=3, num_layers=3)
