"""MIGU (``train/migu.py``): magnitude-based gradient masks between backward and the optimizer step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.train.loop import TrainConfig, train
from linearlab.train.migu import magnitude_mask, migu_, random_mask


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 20), nn.Tanh(), nn.Linear(20, 10))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 7, 5, generator=g), torch.randn(4, 7, 10, generator=g)


def _loss(m, batch):
    return ((m(batch[0]) - batch[1]) ** 2).mean(), {}


SGD = dict(batch_size=4, lr=0.05, optimizer="sgd", weight_decay=0.0, warmup_steps=0, schedule="constant",
           grad_clip=0.0, progress=False, checkpoint_every=0)  # fmt: skip


def test_magnitude_mask_keeps_the_features_above_the_quantile():
    a = torch.tensor([5.0, 0.0, 9.0, 1.0, 7.0, 3.0, 2.0, 8.0, 4.0, 6.0])
    mask = magnitude_mask(a, 0.7)  # quantile 6.3: features with 7, 8, 9
    assert mask.tolist() == [v > 6.3 for v in a.tolist()] and int(mask.sum()) == 3
    keep = random_mask(20, 0.7, torch.Generator().manual_seed(0))
    assert int(keep.sum()) == 20 - 14


def test_masked_rows_are_exactly_unchanged_after_an_sgd_step_and_masks_follow_output_magnitudes():
    model = _model()
    batch = _data()
    # the magnitudes MIGU should see: sum over tokens of |y_j| at the weights before the step
    with torch.no_grad():
        h = model[0](batch[0])
        a0 = h.abs().reshape(-1, 20).sum(0)
        a2 = model[2](model[1](h)).abs().reshape(-1, 10).sum(0)
    before = [p.detach().clone() for p in model.parameters()]
    handle = migu_(model, threshold=0.7)
    train(model, lambda s: batch, _loss, TrainConfig(steps=1, **SGD), before_step=handle)
    assert handle.masks["0"].tolist() == magnitude_mask(a0, 0.7).tolist()
    assert handle.masks["2"].tolist() == magnitude_mask(a2, 0.7).tolist()
    for fqn, w0 in (("0", before[0]), ("2", before[2])):
        mask, w = handle.masks[fqn], model.get_submodule(fqn).weight.detach()
        assert torch.equal(w[~mask], w0[~mask])  # masked rows: bit-for-bit unchanged
        assert (w[mask] != w0[mask]).any(dim=1).all()  # every updated row moved
    assert not torch.equal(model[0].bias.detach(), before[1])  # the bias is not masked
    assert handle.updated_fraction() == pytest.approx((6 + 3) / 30)
    handle.remove()


def test_without_migu_the_same_step_moves_every_row():
    model = _model()
    w0 = model[0].weight.detach().clone()
    train(model, lambda s: _data(), _loss, TrainConfig(steps=1, **SGD))
    assert (model[0].weight.detach() != w0).any(dim=1).all()


def test_random_control_masks_a_fresh_random_set_each_step():
    model = _model()
    seen = []
    handle = migu_(model, threshold=0.7, mode="random", seed=3)
    train(model, lambda s: _data(), _loss, TrainConfig(steps=3, **SGD),
          before_step=[handle, lambda s, m: seen.append(handle.masks["0"].clone())])  # fmt: skip
    assert all(int(m.sum()) == 20 - 14 for m in seen)
    assert not torch.equal(seen[0], seen[1])


def test_evaluation_forwards_are_not_counted_and_remove_detaches_the_hooks():
    model = _model()
    handle = migu_(model, threshold=0.5)
    with torch.no_grad():
        model(torch.randn(3, 5))
    assert handle.magnitudes == {}
    x = torch.randn(3, 5)
    model(x)
    torch.testing.assert_close(handle.magnitudes["0"], model[0](x).detach().abs().sum(0).double())
    handle.remove()
    model(x)
    assert handle.magnitudes == {}
    # a gradient without a recorded forward is an error, not a silent no-op
    handle2 = migu_(model)
    handle2.remove()
    model.zero_grad()
    _loss(model, _data())[0].backward()
    with pytest.raises(RuntimeError, match="no recorded forward output"):
        handle2.apply()


def test_bad_arguments_are_named():
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(
            ValueError, match=f"threshold: expected a quantile strictly between 0 and 1, got {bad}"
        ):
            migu_(_model(), threshold=bad)
    with pytest.raises(ValueError, match="mode: expected one of"):
        migu_(_model(), mode="cluster")
    with pytest.raises(ValueError, match="has no nn.Linear layer"):
        migu_(nn.Sequential(nn.Tanh()))
