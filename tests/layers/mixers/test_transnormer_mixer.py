"""``transnormer`` (``layers/mixers/transnormer.py``): NormAttention (optionally decayed) and DiagAttention.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _mixer_reference import causal_linear_reference, f64, heads, randn
from torch import nn

from linearlab.layers import create_mixer


@torch.no_grad()
def test_norm_attention_output_is_rms_normalised_linear_attention():
    m = create_mixer("transnormer", d_model=16, num_heads=2, attn_type="norm").double()
    m.o_proj = nn.Identity()
    x = randn(2, 10, 16)
    y, _ = m(x)
    # SimpleRMSNorm: unit root-mean-square per token, and the direction of phi(q) S_t (no denominator)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(2, 10, dtype=f64), rtol=1e-5, atol=1e-5)
    q, k = m.q_map(heads(m.q_proj(x), 2)), m.k_map(heads(m.k_proj(x), 2))
    ref = causal_linear_reference(q, k, heads(m.v_proj(x), 2), normalize=False).flatten(-2)
    torch.testing.assert_close(y, ref / ref.pow(2).mean(-1, keepdim=True).sqrt(), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_norm_attention_decay_matches_decayed_quadratic_form():
    m = create_mixer("transnormer", d_model=16, num_heads=2, decay=0.8, feature_map="elu1").double()
    m.o_proj = nn.Identity()
    x = randn(1, 10, 16)
    q, k = m.q_map(heads(m.q_proj(x), 2)), m.k_map(heads(m.k_proj(x), 2))
    g = torch.full((2,), math.log(0.8), dtype=f64)
    ref = causal_linear_reference(q, k, heads(m.v_proj(x), 2), normalize=False, log_decay=g).flatten(-2)
    ref = ref / (ref.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(m(x)[0], ref)


@torch.no_grad()
def test_diag_attention_sees_only_its_own_block():
    bs, T = 4, 10
    m = create_mixer("transnormer", d_model=16, num_heads=2, attn_type="diag", block_size=bs).double()
    x = randn(1, T, 16)
    y, state = m(x)
    # tokens 8, 9 form the third block: changing every earlier token leaves them unchanged
    x2 = x.clone()
    x2[:, :8] = randn(1, 8, 16, seed=3)
    y2, _ = m(x2)
    torch.testing.assert_close(y2[:, 8:], y[:, 8:])
    assert not torch.allclose(y2[:, 7], y[:, 7])
    # inside a block attention is causal softmax: token 5 depends on token 4 (same block)
    x3 = x.clone()
    x3[:, 4] += 1.0
    assert not torch.allclose(m(x3)[0][:, 5], y[:, 5])
    # the first token of a block attends only to itself: output = o_proj(v)
    v = m.v_proj(x[:, 4:5])
    torch.testing.assert_close(y[:, 4:5], m.o_proj(v))
    # the state is the current (partial) block: tokens 8, 9
    assert state["k"].shape[1] == T % bs and int(state["pos"]) == T
    assert m.state_size(1000) == 2 * (bs - 1) * 16


def test_norm_and_diag_states_are_not_interchangeable():
    norm = create_mixer("transnormer", d_model=16, num_heads=2).double()
    diag = create_mixer("transnormer", d_model=16, num_heads=2, attn_type="diag").double()
    _, state = diag(randn(1, 3, 16))
    with pytest.raises(ValueError, match=r"state: missing key\(s\) \['recurrent'\]; unexpected key\(s\)"):
        norm(randn(1, 1, 16), state)


ERRORS = [
    (
        lambda: create_mixer("transnormer", d_model=16, attn_type="local"),
        r"attn_type: expected one of \['norm', 'diag'\], got 'local'",
    ),
    (
        lambda: create_mixer("transnormer", d_model=16, decay=1.0),
        r"decay: must be in \(0, 1\) or None, got 1.0",
    ),
    (lambda: create_mixer("transnormer", d_model=16, block_size=0), r"block_size: must be >= 1, got 0"),
]


@pytest.mark.parametrize("make, message", ERRORS, ids=[m.split(":")[0] for _, m in ERRORS])
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
