"""``layers/multihead.py``: head sizes and head split / merge."""

from __future__ import annotations

import pytest
import torch

from linearlab.layers.multihead import check_heads, head_dims, merge_heads, split_heads


def test_head_dims():
    assert head_dims(16, 2, 0.5, 1.0) == (4, 8)
    with pytest.raises(ValueError, match=r"expand_k: d_model \* expand_k = 16 \* 0.3 = 4.8 must be"):
        head_dims(16, 2, 0.3, 1.0)
    with pytest.raises(ValueError, match="expand_v: .* divisible by num_heads = 4"):
        head_dims(12, 4, 1.0, 0.5)
    with pytest.raises(ValueError, match="num_heads: expected a positive int, got 0"):
        head_dims(16, 0, 1.0, 1.0)


def test_check_heads():
    assert check_heads(16, 4) == 4
    for bad in (0, 3):
        with pytest.raises(ValueError, match=rf"num_heads: must be >= 1 and divide d_model = 16, got {bad}"):
            check_heads(16, bad)


def test_split_and_merge_are_inverse():
    x = torch.randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 5, 3, 4)
    torch.testing.assert_close(h[:, :, 1], x[:, :, 4:8])  # head-major channels
    assert torch.equal(merge_heads(h), x)
