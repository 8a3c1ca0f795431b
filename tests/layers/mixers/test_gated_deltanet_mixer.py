"""``gated_deltanet`` (``layers/mixers/gated_deltanet.py``): DeltaNet plus the Mamba2 decay.

The shared mixer contract is in ``tests/layers/test_mixers_contract.py``; the q/k/beta path is
tested with DeltaNet's in ``test_deltanet_mixer.py``.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from linearlab.layers.mixers.deltanet import DeltaNet
from linearlab.layers.mixers.gated_deltanet import GatedDeltaNet

D = 16


def test_takes_deltanets_arguments():
    """The constructor passes DeltaNet's arguments through, and its signature shows them."""
    assert inspect.signature(GatedDeltaNet) == inspect.signature(DeltaNet)
    mixer = GatedDeltaNet(D, num_heads=2, expand_v=2.0, use_short_conv=False, chunk_size=8)
    assert (mixer.num_heads, mixer.head_v_dim, mixer.use_short_conv, mixer.chunk_size) == (2, 16, False, 8)
    with pytest.raises(TypeError, match="bogus"):
        GatedDeltaNet(D, bogus=1)


def test_gated_deltanet_decay_formula_and_init():
    mixer = GatedDeltaNet(D, num_heads=2).double()
    x = torch.randn(2, 5, D, dtype=torch.float64)
    g = mixer.log_decay(x)
    ref = -mixer.A_log.exp() * F.softplus(mixer.a_proj(x) + mixer.dt_bias)
    torch.testing.assert_close(g, ref, rtol=0, atol=0)
    assert g.shape == (2, 5, 2) and (g <= 0).all()
    dt = F.softplus(mixer.dt_bias)
    assert ((dt >= 1e-4 - 1e-12) & (dt <= 0.1 + 1e-12)).all()
    assert ((mixer.A_log.exp() >= 1 - 1e-9) & (mixer.A_log.exp() <= 16 + 1e-9)).all()
    assert mixer.A_log._no_weight_decay and mixer.dt_bias._no_weight_decay


def test_gated_deltanet_without_decay_is_deltanet():
    gated = GatedDeltaNet(D, num_heads=2).double()
    with torch.no_grad():
        gated.A_log.fill_(-60.0)  # exp(A_log) ~ 1e-26: the gate is exp(g) = 1 to machine precision
    plain = DeltaNet(D, num_heads=2).double()
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"a_proj.weight", "A_log", "dt_bias"}
    x = torch.randn(2, 9, D, dtype=torch.float64)
    torch.testing.assert_close(gated(x)[0], plain(x)[0], rtol=1e-12, atol=1e-13)


def test_gated_deltanet_strong_decay_forgets_the_past():
    mixer = GatedDeltaNet(D, num_heads=2, use_short_conv=False).double()
    with torch.no_grad():
        mixer.A_log.fill_(5.0)
        mixer.dt_bias.fill_(5.0)  # g ~ -750 per step: the memory is wiped every token
    x = torch.randn(1, 6, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :5] = torch.randn(1, 5, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x)[0][:, -1], mixer(x2)[0][:, -1], rtol=0, atol=1e-12)
