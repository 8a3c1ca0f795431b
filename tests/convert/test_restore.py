"""Selective layer restoration (``convert/restore.py``): restore, interpolate and sweep intervals."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from linearlab.convert.restore import (
    contiguous_intervals,
    interpolate_layers_,
    layer_keys,
    restore_layers_,
    sweep_restore,
)
from linearlab.models import MixerLM, ModelConfig


def _pair():
    torch.manual_seed(0)
    base = MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32, n_layers=3))
    post = copy.deepcopy(base)
    with torch.no_grad():  # "post-training" moves every tensor
        for p in post.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return base, post, {k: v.clone() for k, v in base.state_dict().items()}


def test_restoring_every_layer_and_the_rest_gives_the_base_model():
    base, post, base_state = _pair()
    ids = torch.randint(0, 256, (2, 9))
    assert not torch.allclose(post(ids).logits, base(ids).logits)
    restore_layers_(post, base_state, [0, 1, 2, "embed", "norm"])
    for k, v in post.state_dict().items():
        assert torch.equal(v, base_state[k]), k
    assert torch.equal(post(ids).logits, base(ids).logits)


def test_restoring_an_interval_touches_exactly_its_layers():
    base, post, base_state = _pair()
    post_state = {k: v.clone() for k, v in post.state_dict().items()}
    changed = restore_layers_(post, base_state, range(1, 2))
    assert set(changed) == set(layer_keys(post)[1]) and all(k.startswith("blocks.1.") for k in changed)
    for k, v in post.state_dict().items():
        assert torch.equal(v, base_state[k] if k.startswith("blocks.1.") else post_state[k]), k


def test_interpolation_is_affine_in_lambda():
    base, post, base_state = _pair()
    post_state = {k: v.clone() for k, v in post.state_dict().items()}
    interpolate_layers_(post, base_state, {0: 0.25, 2: 0.0, "embed": 1.0})
    for k, v in post.state_dict().items():
        lam = 0.25 if k.startswith("blocks.0.") else 1.0 if k.startswith("embed") else 0.0
        torch.testing.assert_close(
            v, post_state[k] + lam * (base_state[k] - post_state[k]), rtol=0, atol=1e-7
        )


def test_sweep_evaluates_every_interval_and_leaves_the_model_as_it_was():
    base, post, base_state = _pair()
    ids = torch.randint(0, 256, (2, 9))
    post_state = {k: v.clone() for k, v in post.state_dict().items()}

    def metric(m):
        with torch.no_grad():
            return {"dist": float((m(ids).logits - base(ids).logits).abs().mean())}

    rows = sweep_restore(post, base_state, metric)
    assert len(rows) == 1 + 6 and [(r["start"], r["end"]) for r in rows[1:]] == contiguous_intervals(3)
    assert all(torch.equal(v, post_state[k]) for k, v in post.state_dict().items())
    full = copy.deepcopy(post)
    restore_layers_(full, base_state, [0, 1, 2])
    by = {(r["start"], r["end"]): r["dist"] for r in rows}
    assert by[(0, 2)] == pytest.approx(metric(full)["dist"]) and by[(None, None)] == pytest.approx(
        metric(post)["dist"]
    )
    assert len(set(by.values())) == len(by)  # every interval gives a different model


def test_hugging_face_style_names_are_layers_too():
    model = nn.Module()
    model.layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(2))
    other = copy.deepcopy(model)
    nn.init.zeros_(other.layers[1].weight)
    restore_layers_(model, other.state_dict(), [1])
    assert torch.equal(model.layers[1].weight, torch.zeros(3, 3)) and sorted(layer_keys(model)) == [0, 1]


def test_bad_inputs_are_named():
    base, post, base_state = _pair()
    wrong = dict(base_state)
    wrong["blocks.0.mixer.o_proj.weight"] = torch.zeros(4, 4)
    with pytest.raises(
        ValueError,
        match=r"base_state: 'blocks.0.mixer.o_proj.weight' has shape \(4, 4\), the model's has \(32, 32\)",
    ):
        restore_layers_(post, wrong, [0])
    missing = {k: v for k, v in base_state.items() if not k.startswith("blocks.1.")}
    with pytest.raises(ValueError, match="base_state: has no entry 'blocks.1."):
        restore_layers_(post, missing, [1])
    with pytest.raises(ValueError, match=r"layers: no layer 7; the model's layers are \[0, 1, 2\]"):
        restore_layers_(post, base_state, [7])
    with pytest.raises(ValueError, match="layers: no parameter or buffer named 'decoder'"):
        restore_layers_(post, base_state, ["decoder"])
    with pytest.raises(ValueError, match=r"intervals: \(2, 1\) is not an interval"):
        sweep_restore(post, base_state, lambda m: {}, intervals=[(2, 1)])
