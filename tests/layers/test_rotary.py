"""``layers/rotary.py``: RoPE and the xPos scale."""

from __future__ import annotations

import pytest
import torch

from linearlab.layers.rotary import RotaryEmbedding, xpos_scale

f64 = torch.float64


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = randn(1, 1, 1, 8), randn(1, 1, 1, 8, seed=1)

    def score(tq, tk):
        return (rope(q, offset=tq) * rope(k, offset=tk)).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100))
    torch.testing.assert_close(score(0, 0), (q * k).sum())  # position 0 is the identity
    assert not torch.allclose(score(7, 3), score(7, 4))
    # a rotation keeps norms
    torch.testing.assert_close(rope(q, offset=12).norm(), q.norm())


def test_xpos_scale_is_relative():
    s = xpos_scale(0, 300, 8, f64, torch.device("cpu"))
    assert s.shape == (300, 8)
    # q_t scaled by s_t and k_s by 1 / s_s: the product depends on t - s only
    torch.testing.assert_close(s[250] / s[200], s[60] / s[10])
    assert (s[1:] <= s[:-1]).all()  # zeta <= 1: decays with distance


def test_rotary_errors():
    with pytest.raises(ValueError, match=r"dim: rotary embedding needs a positive even head dim, got 5"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match=r"x: expected \[B, T, H, 8\], got shape \[2, 3, 8\]"):
        RotaryEmbedding(8)(randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"dim: xPos needs an even head dim, got 3"):
        xpos_scale(0, 4, 3, f64, torch.device("cpu"))
