"""``retnet`` (``layers/mixers/retnet.py``): multi-scale retention on the ``chunk_retention`` ops.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mixer_reference import causal_linear_reference, f64, heads, randn, spy

from linearlab.layers import create_mixer


@torch.no_grad()
def test_retnet_matches_decayed_reference_with_the_paper_schedule():
    """``gamma_h = 1 - 2^(-5 - h)``, keys scaled by ``(D/H)^-0.5``, then per-head group norm and gate."""
    m = create_mixer("retnet", d_model=32, num_heads=4, position="none").double()
    x = randn(2, 9, 32)
    q, k, v = heads(m.q_proj(x), 4), heads(m.k_proj(x), 4), heads(m.v_proj(x), 4)
    g = torch.log(1 - 2.0 ** (-5 - torch.arange(4, dtype=f64)))
    o = causal_linear_reference(q, k, v, normalize=False, scale=8**-0.5, log_decay=g)
    o = F.layer_norm(o, (o.shape[-1],), eps=1e-5).flatten(-2) * m.norm_weight + m.norm_bias
    torch.testing.assert_close(m(x)[0], m.o_proj(F.silu(m.g_proj(x)) * o))


def test_retnet_uses_the_retention_ops(monkeypatch):
    m = create_mixer("retnet", d_model=16, num_heads=2).double()
    chunk, step = spy(monkeypatch, "chunk_retention"), spy(monkeypatch, "fused_recurrent_retention")
    _, state = m(randn(1, 5, 16))
    m(randn(1, 1, 16), state)
    assert (len(chunk), len(step)) == (1, 1)


@pytest.mark.parametrize("position", ["rope", "xpos"])
@torch.no_grad()
def test_retnet_is_translation_invariant(position):
    # decay and rotary code are relative, so an empty state at position 100 acts like the start
    m = create_mixer("retnet", d_model=16, num_heads=2, position=position).double()
    x = randn(2, 7, 16)
    y, s = m(x)
    shifted = {"recurrent": torch.zeros_like(s["recurrent"]), "pos": torch.tensor(100)}
    torch.testing.assert_close(m(x, shifted)[0], y)


ERRORS = [
    (
        lambda: create_mixer("retnet", d_model=16, position="alibi"),
        r"position: expected one of \['xpos', 'rope', 'none'\], got 'alibi'",
    ),
    (lambda: create_mixer("retnet", d_model=16, expand_v=0), r"expand_v: must be >= 1, got 0"),
    (
        lambda: create_mixer("retnet", d_model=12, num_heads=4),
        r"num_heads: rope needs an even head dim, got d_model/num_heads = 3",
    ),
]


@pytest.mark.parametrize(
    "make, message", ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(ERRORS)]
)
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
