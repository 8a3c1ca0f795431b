"""``linear_attention`` (``layers/mixers/linear_attention.py``): feature map + the ``linear_attn`` ops.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from _mixer_reference import causal_linear_reference, heads, randn, spy

from linearlab.layers import create_mixer
from linearlab.registry import UnknownNameError


@pytest.mark.parametrize("feature_map", ["elu1", "hedgehog", "t2r"])
@pytest.mark.parametrize("normalize", [True, False])
@torch.no_grad()
def test_linear_attention_matches_quadratic_form(feature_map, normalize):
    m = create_mixer(
        "linear_attention", d_model=16, num_heads=2, feature_map=feature_map, normalize=normalize
    )
    m = m.double()
    x = randn(2, 11, 16)
    q = m.q_map(heads(m.q_proj(x), 2))
    k = m.k_map(heads(m.k_proj(x), 2))
    v = heads(m.v_proj(x), 2)
    scale = 1.0 if normalize else q.shape[-1] ** -0.5
    ref = m.o_proj(causal_linear_reference(q, k, v, normalize, scale).flatten(-2))
    torch.testing.assert_close(m(x)[0], ref)


@pytest.mark.parametrize("normalize", [True, False])
def test_the_op_forms_the_denominator(monkeypatch, normalize):
    """The mixer hands ``normalize`` to the op instead of dividing itself (one definition of it)."""
    m = create_mixer("linear_attention", d_model=16, num_heads=2, normalize=normalize).double()
    chunk, step = spy(monkeypatch, "chunk_linear_attn"), spy(monkeypatch, "fused_recurrent_linear_attn")
    _, state = m(randn(1, 5, 16))
    m(randn(1, 1, 16), state)
    assert (len(chunk), len(step)) == (1, 1)
    for call in chunk + step:
        assert call["kwargs"]["normalize"] is normalize
        assert call["kwargs"]["scale"] == (1.0 if normalize else None)


def test_linear_attention_state_size_counts_the_denominator():
    assert create_mixer("linear_attention", d_model=16, num_heads=2).state_size(5) == 2 * 8 * 9
    hh = create_mixer("linear_attention", d_model=16, num_heads=2, feature_map="hedgehog", normalize=False)
    assert hh.state_size(5) == 2 * 16 * 8


def test_errors():
    with pytest.raises(
        UnknownNameError, match=r"feature_map: unknown feature map 'cos'; choose from: .*hedgehog"
    ):
        create_mixer("linear_attention", d_model=16, feature_map="cos")
    with pytest.raises(ValueError, match=r"normalize: expected a bool, got 1"):
        create_mixer("linear_attention", d_model=16, normalize=1)
