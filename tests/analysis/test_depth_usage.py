"""Depth usage: contributions, skip effects and depth alignment on tiny models with known answers."""

import pytest
import torch

from linearlab.analysis.depth_usage import (
    depth_alignment,
    layer_contributions,
    residual_streams,
    skip_effects,
)
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM


def _model(layers=3):
    return (
        MixerLM(
            ModelConfig(
                mixer="softmax", d_model=32, n_layers=layers, mixer_kwargs={"num_heads": 4}, vocab_size=40
            )
        )
        .double()
        .eval()
    )


def test_contributions_match_hand_computed_norms():
    model = _model()
    ids = torch.randint(0, 40, (2, 8))
    out = model(ids, return_hidden_states=True)
    hs = [h.detach().double() for h in out.hidden_states]
    c = layer_contributions(model, ids)
    for l in range(3):
        d = hs[l + 1] - hs[l]
        assert c["relative"][l] == pytest.approx(
            float((d.norm(dim=-1) / hs[l].norm(dim=-1)).mean()), rel=1e-9
        )
        assert c["cos"][l] == pytest.approx(
            float(torch.nn.functional.cosine_similarity(d, hs[l], dim=-1).mean()), rel=1e-9
        )


def test_skipping_a_dead_layer_changes_nothing_and_a_live_one_changes_what_follows():
    model = _model()
    with torch.no_grad():  # layer 1 writes nothing: its output projections are zero
        model.blocks[1].mixer.o_proj.weight.zero_()
        model.blocks[1].mlp.fc_out.weight.zero_()
    ids = torch.randint(0, 40, (2, 8))
    e = skip_effects(model, ids)
    assert e["kl"][1] == pytest.approx(0.0, abs=1e-12) and e["max_future"][1] == pytest.approx(0.0, abs=1e-12)
    assert e["kl"][0] > 0 and e["future"][0][2] > 0
    assert e["future"][2] == [0.0, 0.0, 0.0]  # nothing after the last layer
    # the KL is the one of the explicitly truncated model when the last layer is skipped
    out = model(ids, return_hidden_states=True)
    p = torch.log_softmax(model.logits_from_hidden(out.hidden_states[2]).double(), -1)
    q = torch.log_softmax(out.logits.double(), -1)
    assert e["kl"][2] == pytest.approx(float((q.exp() * (q - p)).sum(-1).mean()), rel=1e-6)


def test_alignment_finds_the_layer_a_stream_is_a_linear_image_of():
    g = torch.Generator().manual_seed(0)
    n = 600
    base = [torch.randn(n, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    shallow = base
    # deep layer j is a linear image of shallow layer j // 2 plus a little noise
    deep = [
        base[j // 2] @ torch.randn(6, 8, generator=g, dtype=torch.float64)
        + 0.01 * torch.randn(n, 8, generator=g, dtype=torch.float64)
        for j in range(4)
    ]
    r2 = depth_alignment(shallow, deep, lam=1e-6)
    assert r2.shape == (2, 4)
    assert r2[0, :2].min() > 0.99 and r2[1, 2:].min() > 0.99
    assert r2[0, 2:].max() < 0.05 and r2[1, :2].max() < 0.05
    with pytest.raises(ValueError, match=r"deep\[0\]: expected \[N, D\] with N = 600 tokens, got \(5, 8\)"):
        depth_alignment(shallow, [torch.zeros(5, 8)])


def test_residual_streams_flatten_tokens():
    model = _model(2)
    streams = residual_streams(model, torch.randint(0, 40, (3, 5)))
    assert [s.shape for s in streams] == [(15, 32), (15, 32)]
