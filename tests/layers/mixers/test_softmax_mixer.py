"""``softmax`` and ``sliding_window`` (``layers/mixers/softmax.py``): RoPE attention and its window.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
from _mixer_reference import heads, randn

from linearlab.layers import create_mixer


@torch.no_grad()
def test_softmax_matches_explicit_attention_with_rope():
    m = create_mixer("softmax", d_model=16, num_heads=2).double()
    x = randn(2, 9, 16)
    q, k, v = (heads(t, 2) for t in m.qkv_proj(x).chunk(3, dim=-1))
    q, k = m.rotary(q), m.rotary(k)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    ref = m.o_proj(torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).flatten(-2))
    torch.testing.assert_close(m(x)[0], ref)


@torch.no_grad()
def test_sliding_window_forgets_tokens_older_than_the_window():
    w, T = 4, 12
    m = create_mixer("sliding_window", d_model=16, num_heads=2, window_size=w).double()
    full = create_mixer("softmax", d_model=16, num_heads=2).double()
    full.load_state_dict(m.state_dict())
    x = randn(1, T, 16)
    y, cache = m(x)
    # token 0 is outside the window of the last token (which sees T-w .. T-1) ...
    x2 = x.clone()
    x2[:, : T - w] = randn(1, T - w, 16, seed=5)
    torch.testing.assert_close(m(x2)[0][:, -1], y[:, -1])
    # ... but the first token inside the window matters, and full attention never forgets
    x3 = x.clone()
    x3[:, T - w] += 1.0
    assert not torch.allclose(m(x3)[0][:, -1], y[:, -1])
    assert not torch.allclose(full(x2)[0][:, -1], full(x)[0][:, -1])
    # the cache holds exactly what a later query can still see
    assert cache["k"].shape[1] == w - 1 and int(cache["pos"]) == T
    assert full(x)[1]["k"].shape[1] == T


def test_softmax_state_size_is_the_kv_cache():
    m = create_mixer("softmax", d_model=16)
    assert m.state_size(10) == 2 * 10 * 16
    sw = create_mixer("sliding_window", d_model=16, window_size=8)
    assert sw.state_size(3) == 2 * 3 * 16 and sw.state_size(100) == 2 * 7 * 16


def test_kv_cache_lengths_must_agree():
    m = create_mixer("softmax", d_model=16, num_heads=2).double()
    _, cache = m(randn(1, 5, 16))
    with pytest.raises(
        ValueError, match=r"state\['v'\]: expected shape \[B=1, P, H=2, D/H=8\], got \[1, 4, 2, 8\]"
    ):
        m(randn(1, 1, 16), {**cache, "v": cache["v"][:, 1:]})


ERRORS = [
    (
        lambda: create_mixer("softmax", d_model=16, num_heads=3),
        r"num_heads: must be >= 1 and divide d_model = 16, got 3",
    ),
    (lambda: create_mixer("softmax", d_model=16, window_size=0), r"window_size: must be >= 1 or None, got 0"),
    (
        lambda: create_mixer("softmax", d_model=6, num_heads=2),
        r"num_heads: RoPE needs an even head dim, got d_model/num_heads = 3",
    ),
    (
        lambda: create_mixer("sliding_window", d_model=16, window_size=2.5),
        r"window_size: sliding_window needs an int >= 1, got 2.5",
    ),
]


@pytest.mark.parametrize(
    "make, message", ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(ERRORS)]
)
def test_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
