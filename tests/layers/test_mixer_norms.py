"""The norms mixers use inside (``layers/norms.py``): GatedRMSNorm, SimpleRMSNorm and l2norm.

(The model-level norms, RepBN and ``make_norm``, are tested in ``test_norms.py``.)
"""

from __future__ import annotations

import pytest
import torch

from linearlab.layers.norms import GatedRMSNorm, SimpleRMSNorm, l2norm


def test_gated_rmsnorm_formula_and_dtype():
    norm = GatedRMSNorm(8, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x, g = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 4, 8, dtype=torch.float64)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight * g * torch.sigmoid(g)
    torch.testing.assert_close(norm(x, g), ref, rtol=1e-12, atol=1e-12)
    y16 = norm.to(torch.bfloat16)(x.bfloat16(), g.bfloat16())
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.double(), ref, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match=r"gate: shape \[3, 4, 7\] must equal x's shape \[3, 4, 8\]"):
        norm(x, g[..., :7])


def test_simple_rmsnorm_formula_and_dtype():
    norm = SimpleRMSNorm(eps=1e-6)
    x = torch.randn(3, 5, 8, dtype=torch.float64) * 3
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), ref, rtol=1e-14, atol=0)
    assert list(norm.parameters()) == []
    # statistics in float32 for bfloat16 input, result back in bfloat16
    y16 = norm(x.bfloat16())
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16, ref.bfloat16(), rtol=1e-2, atol=1e-2)


def test_l2norm_is_unit_and_keeps_float64():
    x = torch.randn(5, 3, 7, dtype=torch.float64) * 10
    y = l2norm(x)
    # float64 in, float64 math: matches the formula to rounding, not to float32's 1e-7
    torch.testing.assert_close(y, x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6), rtol=1e-14, atol=0)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(5, 3, dtype=torch.float64), rtol=0, atol=1e-8)
