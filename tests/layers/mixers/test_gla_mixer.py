"""``gla`` (``layers/mixers/gla.py``): Gated Linear Attention, checked against its own definition.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _mixer_reference import spy

from linearlab.layers.mixers.gla import GatedLinearAttention

D = 16


def make(**kwargs) -> GatedLinearAttention:
    return GatedLinearAttention(D, num_heads=2, **kwargs).double()


def test_gla_gate_is_log_space_and_nonpositive(monkeypatch):
    mixer = make()
    with torch.no_grad():
        mixer.gk_proj[1].weight.mul_(50)  # saturate the sigmoid both ways
    x = torch.randn(2, 9, D, dtype=torch.float64)
    gk = mixer.log_gate(x)
    assert gk.shape == (2, 9, 2, 4)
    assert (gk <= 0).all() and gk.min() < -1 and gk.max() > -1e-3
    ref = F.logsigmoid(mixer.gk_proj(x)) / 16
    torch.testing.assert_close(gk, ref.view_as(gk), rtol=0, atol=0)
    calls = spy(monkeypatch, "chunk_gla")
    mixer(x)
    torch.testing.assert_close(calls[0]["args"][3], gk, rtol=0, atol=0)


def test_gla_gate_is_float32_for_bfloat16_input():
    mixer = GatedLinearAttention(D, num_heads=2).to(torch.bfloat16)
    assert mixer.log_gate(torch.randn(1, 3, D, dtype=torch.bfloat16)).dtype == torch.float32


def test_gla_clamp_min_bounds_gate():
    mixer = make(clamp_min=-0.05)
    with torch.no_grad():
        mixer.gk_proj[1].bias.fill_(-30.0)
    gk = mixer.log_gate(torch.randn(1, 4, D, dtype=torch.float64))
    torch.testing.assert_close(gk, torch.full_like(gk, -0.05), rtol=0, atol=0)


def test_gla_uses_chunk_for_prefill_and_recurrent_for_steps(monkeypatch):
    mixer = make()
    chunk, rec = spy(monkeypatch, "chunk_gla"), spy(monkeypatch, "fused_recurrent_gla")
    _, state = mixer(torch.randn(1, 5, D, dtype=torch.float64))
    mixer(torch.randn(1, 1, D, dtype=torch.float64), state)
    assert (len(chunk), len(rec)) == (1, 1)


def test_gla_matches_token_loop():
    """The whole layer written out token by token from the paper's equations."""
    mixer = make()
    x = torch.randn(2, 6, D, dtype=torch.float64)
    y, _ = mixer(x)
    H, K, V = 2, 4, 8
    q = mixer.q_proj(x).view(2, 6, H, K) * K**-0.5
    k, v = mixer.k_proj(x).view(2, 6, H, K), mixer.v_proj(x).view(2, 6, H, V)
    alpha = torch.sigmoid(mixer.gk_proj(x)).view(2, 6, H, K) ** (1 / 16)
    S = torch.zeros(2, H, K, V, dtype=torch.float64)
    outs = []
    for t in range(6):
        S = alpha[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t], S))
    o = torch.stack(outs, 1)
    gate = mixer.g_proj(x).view(2, 6, H, V)
    o = o / torch.sqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * mixer.g_norm.weight * F.silu(gate)
    torch.testing.assert_close(y, mixer.o_proj(o.reshape(2, 6, H * V)), rtol=1e-10, atol=1e-12)


def test_gla_without_output_gate_uses_plain_rmsnorm():
    mixer = make(use_output_gate=False)
    assert isinstance(mixer.g_norm, torch.nn.RMSNorm) and not hasattr(mixer, "g_proj")
    y, _ = mixer(torch.randn(1, 4, D, dtype=torch.float64))
    assert torch.isfinite(y).all()


def test_gla_kwarg_errors():
    with pytest.raises(ValueError, match="clamp_min: a log-gate lower bound must be < 0"):
        GatedLinearAttention(D, clamp_min=0.5)
    with pytest.raises(ValueError, match="gate_logit_normalizer: expected a positive number, got 0"):
        GatedLinearAttention(D, gate_logit_normalizer=0)
    with pytest.raises(ValueError, match="expand_k: .* divisible by num_heads = 3"):
        GatedLinearAttention(D, num_heads=3)
