"""RepBN (SLAB's progressive re-parameterised BatchNorm): schedule, math, causality, fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.layers.norms import ChannelAffine, RepBN, make_norm
from linearlab.models import MixerLM, ModelConfig, fuse_repbn_


def _annealed(dim: int = 8, **kw) -> RepBN:
    norm = RepBN(dim, warmup_steps=0, **kw)
    assert norm.gamma == 0.0
    return norm


def _fit_stats(norm: RepBN, steps: int = 30) -> None:
    """Give BatchNorm non-trivial running statistics and affine/eta values."""
    norm.train()
    with torch.no_grad():
        for _ in range(steps):
            norm(torch.randn(4, 5, norm.dim) * 3 + 1.5)
        norm.bn.weight.uniform_(0.5, 2.0)
        norm.bn.bias.uniform_(-1.0, 1.0)
        norm.eta.fill_(0.7)


def test_gamma_schedule_hold_then_linear_anneal():
    norm = RepBN(4, warmup_steps=4, hold_steps=2)
    seen = []
    for _ in range(8):
        seen.append(norm.gamma)
        norm.step()
    assert seen == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert int(norm.num_steps) == 8
    # the schedule position is a buffer: it travels with the state_dict
    fresh = RepBN(4, warmup_steps=4, hold_steps=2)
    fresh.load_state_dict(norm.state_dict())
    assert fresh.gamma == 0.0


def test_outputs_at_gamma_one_zero_and_between():
    torch.manual_seed(0)
    norm = RepBN(6, warmup_steps=4)
    _fit_stats(norm)
    norm.num_steps.zero_()
    norm.eval()
    x = torch.randn(2, 3, 6)
    ln = norm.ln(x)
    bn = (x - norm.bn.running_mean) / torch.sqrt(norm.bn.running_var + norm.bn.eps) * norm.bn.weight
    rep = bn + norm.bn.bias + norm.eta * x
    torch.testing.assert_close(norm(x), ln)
    norm.step()
    torch.testing.assert_close(norm(x), 0.75 * ln + 0.25 * rep)
    for _ in range(3):
        norm.step()
    torch.testing.assert_close(norm(x), rep)


def test_training_statistics_are_over_batch_and_time():
    norm = _annealed(5)
    x = torch.randn(3, 7, 5) * 2 + 1
    y = norm.train()(x)
    tokens = x.reshape(-1, 5)
    mean, var = tokens.mean(0), tokens.var(0, unbiased=False)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + norm.bn.eps) + x)


def test_training_mode_leaks_future_eval_mode_is_causal():
    norm = _annealed(4)
    _fit_stats(norm)
    x = torch.randn(2, 6, 4)
    later = x.clone()
    later[:, 4:] += 5.0
    norm.train()
    assert (norm(x)[:, :4] - norm(later)[:, :4]).abs().amax() > 1e-3
    norm.eval()
    torch.testing.assert_close(norm(x)[:, :4], norm(later)[:, :4], rtol=0, atol=0)


def test_fuse_into_linear_and_to_affine_match_eval_output():
    torch.manual_seed(0)
    norm = _annealed(8)
    _fit_stats(norm)
    norm.eval()
    linear = nn.Linear(8, 5)
    x = torch.randn(3, 4, 8)
    fused = norm.fuse_into(linear)
    torch.testing.assert_close(fused(x), linear(norm(x)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(norm.to_affine()(x), norm(x), rtol=1e-5, atol=1e-5)
    assert isinstance(norm.to_affine(), ChannelAffine)
    no_bias = nn.Linear(8, 5, bias=False)
    torch.testing.assert_close(norm.fuse_into(no_bias)(x), no_bias(norm(x)), rtol=1e-5, atol=1e-5)


def test_fuse_errors():
    norm = RepBN(8, warmup_steps=10)
    with pytest.raises(ValueError, match=r"fusing needs eval mode"):
        norm.fuse_into(nn.Linear(8, 2))
    norm.eval()
    with pytest.raises(ValueError, match=r"gamma=1.000 after 0 of 10 steps\); fuse after the warmup"):
        norm.fuse_into(nn.Linear(8, 2))
    done = _annealed(8).eval()
    with pytest.raises(ValueError, match=r"linear.in_features=4 does not match RepBN dim=8"):
        done.fuse_into(nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"expected an nn.Linear, got Conv1d"):
        done.fuse_into(nn.Conv1d(8, 2, 1))


def test_constructor_and_input_errors():
    with pytest.raises(ValueError, match=r"warmup_steps must be >= 0, got -1"):
        RepBN(4, warmup_steps=-1)
    with pytest.raises(ValueError, match=r"hold_steps must be >= 0, got -2"):
        RepBN(4, hold_steps=-2)
    with pytest.raises(ValueError, match=r"expected last dim 4, got input of shape \(2, 3\)"):
        RepBN(4)(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"unknown kind 'groupnorm'; allowed: rmsnorm, layernorm, repbn"):
        make_norm("groupnorm", 4)


def test_make_norm_kinds():
    assert isinstance(make_norm("rmsnorm", 4), nn.RMSNorm)
    assert isinstance(make_norm("layernorm", 4), nn.LayerNorm)
    repbn = make_norm("repbn", 4, repbn_warmup_steps=7)
    assert isinstance(repbn, RepBN) and repbn.warmup_steps == 7


@pytest.mark.parametrize("tie", [True, False])
def test_fuse_repbn_model_gives_same_eval_outputs(tie):
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=32,
        d_model=16,
        n_layers=2,
        mixer="gla",
        mixer_kwargs={"num_heads": 2},
        norm="repbn",
        repbn_warmup_steps=3,
        tie_embeddings=tie,
    )
    model = MixerLM(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    # a few training steps: anneal gamma to 0 and move BatchNorm's running statistics
    for _ in range(5):
        ids = torch.randint(0, 32, (4, 8))
        loss = model.loss(ids, ids.roll(-1, dims=1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.advance_schedules()  # forward does not step the schedule; the training loop does this
    model.eval()
    ids = torch.randint(0, 32, (2, 9))
    before = model(ids).logits
    embed_before = model.embed.weight.detach().clone()
    fuse_repbn_(model)
    assert not any(isinstance(m, RepBN) for m in model.modules())
    assert isinstance(model.lm_head, nn.Linear) and model.lm_head.bias is not None
    torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)
    # folding into a tied head must not touch the embedding
    torch.testing.assert_close(model.embed.weight, embed_before, rtol=0, atol=0)


def test_fuse_repbn_model_errors():
    model = MixerLM(ModelConfig(d_model=16, mixer="gla", mixer_kwargs={"num_heads": 2}, norm="repbn"))
    with pytest.raises(ValueError, match=r"call model.eval\(\) first"):
        fuse_repbn_(model)
    with pytest.raises(ValueError, match=r"cannot fuse while LayerNorm still contributes \(gamma=1.000"):
        fuse_repbn_(model.eval())
    with pytest.raises(ValueError, match=r"expected a MixerLM, got Linear"):
        fuse_repbn_(nn.Linear(2, 2))
