"""``layers/decay.py``: the Mamba2-style decay of Gated DeltaNet and MoM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from linearlab.layers.decay import init_mamba2_decay, mamba2_log_decay


def test_init_ranges_and_inverse_softplus():
    torch.manual_seed(0)
    A_log, dt_bias = init_mamba2_decay(64, dt_min=1e-3, dt_max=0.1)
    assert A_log.shape == dt_bias.shape == (64,)
    assert ((A_log.exp() >= 1 - 1e-6) & (A_log.exp() <= 16 + 1e-5)).all()
    dt = F.softplus(dt_bias)
    assert ((dt >= 1e-3 * (1 - 1e-5)) & (dt <= 0.1 * (1 + 1e-5))).all()


def test_log_decay_formula_and_dtype():
    A_log, dt_bias = torch.randn(3), torch.randn(3)
    a = torch.randn(2, 5, 3, dtype=torch.float64)
    g = mamba2_log_decay(a, A_log, dt_bias)
    assert g.dtype == torch.float64 and (g <= 0).all()
    torch.testing.assert_close(g, -A_log.double().exp() * F.softplus(a + dt_bias.double()), rtol=0, atol=0)
    # bfloat16 projections still give float32 log decays (the ops accumulate them)
    assert mamba2_log_decay(a.bfloat16(), A_log.bfloat16(), dt_bias.bfloat16()).dtype == torch.float32
