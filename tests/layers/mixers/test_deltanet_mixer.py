"""``deltanet`` (``layers/mixers/deltanet.py``): the delta rule, checked against a token loop.

The q/k path is shared with Gated DeltaNet (a subclass), so the q/k/beta test runs on both. The
shared mixer contract is in ``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
from _mixer_reference import spy

from linearlab.layers.mixers.deltanet import DeltaNet
from linearlab.layers.mixers.gated_deltanet import GatedDeltaNet

D = 16


@pytest.mark.parametrize("cls", [DeltaNet, GatedDeltaNet], ids=["deltanet", "gated_deltanet"])
def test_delta_qk_are_unit_norm_and_beta_in_range(monkeypatch, cls):
    mixer = cls(D, num_heads=2).double()
    with torch.no_grad():
        mixer.q_proj.weight.mul_(7)  # the norm must not depend on the input scale
    op = "chunk_delta_rule" if cls is DeltaNet else "chunk_gated_delta_rule"
    calls = spy(monkeypatch, op)
    mixer(torch.randn(2, 7, D, dtype=torch.float64))
    q, k = calls[0]["args"][:2]
    beta = calls[0]["args"][3 if cls is DeltaNet else 4]
    for t in (q, k):
        # unit norm up to the eps = 1e-6 inside the norm
        torch.testing.assert_close(
            t.norm(dim=-1), torch.ones(2, 7, 2, dtype=torch.float64), rtol=0, atol=1e-4
        )
    assert beta.shape == (2, 7, 2) and (beta > 0).all() and (beta < 1).all()


def test_deltanet_negative_eigenvalues_widen_beta(monkeypatch):
    mixer = DeltaNet(D, num_heads=2, allow_neg_eigval=True).double()
    with torch.no_grad():
        mixer.b_proj.weight.mul_(20)
    calls = spy(monkeypatch, "chunk_delta_rule")
    mixer(torch.randn(1, 30, D, dtype=torch.float64))
    beta = calls[0]["args"][3]
    assert (beta > 0).all() and (beta < 2).all() and beta.max() > 1.5


def test_deltanet_matches_token_loop():
    mixer = DeltaNet(D, num_heads=2).double()
    x = torch.randn(2, 6, D, dtype=torch.float64)
    y, _ = mixer(x)
    q, k, v, _ = mixer.qkv(x)
    beta = torch.sigmoid(mixer.b_proj(x))
    S = torch.zeros(2, 2, 8, 8, dtype=torch.float64)
    outs = []
    for t in range(6):
        kt, vt, bt = k[:, t], v[:, t], beta[:, t, :, None]
        pred = torch.einsum("bhk,bhkv->bhv", kt, S)
        S = S + kt[..., None] * (bt * (vt - pred))[:, :, None, :]
        outs.append(torch.einsum("bhk,bhkv->bhv", q[:, t] * 8**-0.5, S))
    o = mixer.o_norm(torch.stack(outs, 1), mixer.g_proj(x).view(2, 6, 2, 8))
    torch.testing.assert_close(y, mixer.o_proj(o.reshape(2, 6, D)), rtol=1e-10, atol=1e-12)


def test_deltanet_without_short_conv_has_only_recurrent_state():
    mixer = DeltaNet(D, num_heads=2, use_short_conv=False, use_gate=False).double()
    _, state = mixer(torch.randn(1, 3, D, dtype=torch.float64))
    assert set(state) == {"recurrent"} and mixer.state_size(3) == 2 * 8 * 8
    assert set(mixer.state_shapes(1)) == {"recurrent"}
