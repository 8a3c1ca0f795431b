"""``layers/feature_maps.py``: the feature maps of linear attention and their registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from linearlab.layers.feature_maps import (
    FEATURE_MAPS,
    FeatureMap,
    create_feature_map,
    list_feature_maps,
    register_feature_map,
)
from linearlab.registry import UnknownNameError

f64 = torch.float64


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def test_feature_map_registry_lists_all_maps():
    assert set(list_feature_maps()) >= {
        "identity",
        "elu",
        "elu1",
        "relu",
        "t2r",
        "hedgehog",
        "hedgehog_split",
    }


@pytest.mark.parametrize("name", list_feature_maps())
def test_feature_map_shapes(name):
    phi = create_feature_map(name, head_dim=6, num_heads=3).double()
    out = phi(randn(2, 5, 3, 6))
    assert out.shape == (2, 5, 3, phi.feature_dim)
    assert phi.feature_dim == (12 if name.startswith("hedgehog") else 6)


def test_elu1_and_relu_are_nonnegative_and_t2r_starts_as_relu():
    x = randn(2, 7, 2, 4) * 3
    assert (create_feature_map("elu1", 4, 2)(x) > 0).all()
    assert (create_feature_map("relu", 4, 2)(x) >= 0).all()
    t2r = create_feature_map("t2r", 4, 2).double()
    torch.testing.assert_close(t2r(x), F.relu(x))


@pytest.mark.parametrize("name", ["hedgehog", "hedgehog_split"])
def test_hedgehog_is_positive_and_softmax_like(name):
    phi = create_feature_map(name, 8, 2).double()
    x = randn(3, 5, 2, 8)
    out = phi(x)
    assert (out > 0).all()
    # at init (W = I, b = 0) the map is a softmax of [x, -x]: over all 2D features (hedgehog) or
    # over each half on its own (hedgehog_split)
    both = torch.cat([x, -x], dim=-1)
    if name == "hedgehog":
        torch.testing.assert_close(out, torch.softmax(both, dim=-1))
    else:
        torch.testing.assert_close(out, torch.cat([x.softmax(-1), (-x).softmax(-1)], dim=-1))

    # exp-like "spikiness": scaling the input up sharpens the features (lower entropy), which
    # elu+1 cannot do for positive inputs
    def entropy(p):
        p = p / p.sum(-1, keepdim=True)
        return -(p * p.log()).sum(-1).mean()

    ent = [entropy(phi(x * c)) for c in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(ent, ent[1:])), ent
    # the kernel phi(q) . phi(k) prefers aligned keys over opposite ones, like exp(q . k)
    q = randn(50, 1, 2, 8, seed=4)
    aligned = (phi(q) * phi(q)).sum(-1)
    opposite = (phi(q) * phi(-q)).sum(-1)
    assert (aligned > opposite).all()


def test_hedgehog_weights_are_per_head_and_learnable():
    phi = create_feature_map("hedgehog", 4, 2).double()
    x = randn(1, 3, 2, 4)
    before = phi(x)
    with torch.no_grad():
        phi.weight[1].mul_(2.0)
    after = phi(x)
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0])
    assert not torch.allclose(after[:, :, 1], before[:, :, 1])
    (after * randn(*after.shape, seed=1)).sum().backward()
    assert phi.weight.grad.abs().sum() > 0 and phi.bias.grad.abs().sum() > 0


def test_feature_map_errors():
    # an UnknownNameError from the registry: a KeyError and a ValueError, listing the maps
    for err in (UnknownNameError, KeyError, ValueError):
        with pytest.raises(
            err, match=r"feature_map: unknown feature map 'nope'; choose from: elu, elu1, hedgehog"
        ):
            create_feature_map("nope", 4, 2)
    with pytest.raises(ValueError, match=r"head_dim, num_heads: must be >= 1, got head_dim=0"):
        create_feature_map("relu", 0, 2)
    with pytest.raises(ValueError, match=r"x: expected \[B, T, H=2, D=4\], got shape \[1, 3, 4\]"):
        create_feature_map("relu", 4, 2)(randn(1, 3, 4))


def test_registry_sets_map_name_and_rejects_a_second_class():
    assert create_feature_map("hedgehog", 4, 2).map_name == "hedgehog"
    assert list_feature_maps() == FEATURE_MAPS.names()

    class Other(FeatureMap):
        pass

    with pytest.raises(RuntimeError, match="feature map name 'relu' is registered twice"):
        register_feature_map("relu")(Other)
