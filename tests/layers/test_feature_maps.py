"""``layers/feature_maps.py``: the feature maps of linear attention and their registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from linearlab.layers import create_mixer
from linearlab.layers.feature_maps import (
    FEATURE_MAPS,
    KEY_CAP,
    FeatureMap,
    create_feature_map,
    list_feature_maps,
    register_feature_map,
    soft_cap,
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
    assert phi.feature_dim == (12 if name.startswith("hedgehog") or name == "norm_preserving" else 6)


def test_norm_preserving_map_keeps_the_input_norm_and_learns_the_direction():
    phi = create_feature_map("norm_preserving", head_dim=4, num_heads=2).double()
    x = randn(3, 5, 2, 4) * 7
    out = phi(x)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1))
    assert (out > 0).all()
    # the direction is hedgehog_split's (learned); the norm is the input's (pretrained)
    split = create_feature_map("hedgehog_split", head_dim=4, num_heads=2).double()
    u = split(x)
    torch.testing.assert_close(out / out.norm(dim=-1, keepdim=True), u / u.norm(dim=-1, keepdim=True))


def test_elu1_and_relu_are_nonnegative_and_t2r_starts_as_relu():
    x = randn(2, 7, 2, 4) * 3
    assert (create_feature_map("elu1", 4, 2)(x) > 0).all()
    assert (create_feature_map("relu", 4, 2)(x) >= 0).all()
    t2r = create_feature_map("t2r", 4, 2).double()
    torch.testing.assert_close(t2r(x), F.relu(x))


@pytest.mark.parametrize("name", ["hedgehog", "hedgehog_split"])
@pytest.mark.parametrize("role", ["query", "key"])
def test_hedgehog_is_positive_and_exp_like(name, role):
    phi = create_feature_map(name, 8, 2, role=role).double()
    x = randn(3, 5, 2, 8)
    out = phi(x)
    assert (out > 0).all()
    # at init (W = I, b = 0): hedgehog is [exp(x), exp(-x)] (keys: exactly, |x| < KEY_CAP here;
    # queries: divided by exp(max|x|)); hedgehog_split is a softmax of each half on its own
    both = torch.cat([x, -x], dim=-1)
    if name == "hedgehog" and role == "key":
        torch.testing.assert_close(out, both.exp())
    elif name == "hedgehog":
        torch.testing.assert_close(out, (both - x.abs().amax(-1, keepdim=True)).exp())
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


def attention_weights(phi_q: torch.Tensor, phi_k: torch.Tensor) -> torch.Tensor:
    """Causal normalised linear-attention weights ``[B, H, T, T]`` from mapped ``q, k: [B, T, H, F]``."""
    a = torch.einsum("bthf,bshf->bhts", phi_q, phi_k).tril()
    return a / a.sum(-1, keepdim=True)


def trained_hedgehog_pair(head_dim: int = 8, num_heads: int = 2) -> tuple[FeatureMap, FeatureMap]:
    """Query and key hedgehog maps with a generic (non-identity) ``W`` and ``b``."""
    q_map = create_feature_map("hedgehog", head_dim, num_heads, role="query").double()
    k_map = create_feature_map("hedgehog", head_dim, num_heads, role="key").double()
    for i, m in enumerate((q_map, k_map)):
        with torch.no_grad():
            m.weight.add_(0.3 * randn(*m.weight.shape, seed=10 + i))
            m.bias.copy_(0.5 * randn(*m.bias.shape, seed=20 + i))
    return q_map, k_map


def unstabilised(m: FeatureMap, x: torch.Tensor) -> torch.Tensor:
    """The paper's map ``[exp(z), exp(-z)]`` with no shift or clamp."""
    z = m.project(x)
    return torch.cat([z, -z], dim=-1).exp()


def test_hedgehog_query_stabiliser_cancels_in_normalised_attention():
    q_map, k_map = trained_hedgehog_pair()
    # queries far beyond anything a raw float32 exp could hold in a sum (|z| up to ~60): the per-query
    # shift still cancels exactly; keys moderate, so the key clamp is not active
    xq, xk = 12 * randn(2, 9, 2, 8, seed=1), randn(2, 9, 2, 8, seed=2)
    assert q_map.project(xq).abs().max() > 30 and k_map.project(xk).abs().max() < KEY_CAP
    phi_q = q_map(xq)
    assert phi_q.max() <= 1 and torch.isclose(phi_q.amax(-1), torch.ones((), dtype=f64)).all()
    torch.testing.assert_close(
        attention_weights(phi_q, k_map(xk)),
        attention_weights(unstabilised(q_map, xq), unstabilised(k_map, xk)),
    )


def test_hedgehog_keys_are_exact_until_the_cap_and_grow_linearly_beyond():
    q_map, k_map = trained_hedgehog_pair()
    xq, xk = randn(2, 9, 2, 8, seed=3), 1.5 * randn(2, 9, 2, 8, seed=4)
    zk = k_map.project(xk)
    assert 3 < zk.abs().max() < KEY_CAP  # large enough to matter, still below the cap
    torch.testing.assert_close(k_map(xk), unstabilised(k_map, xk))  # no per-key constant at all
    torch.testing.assert_close(
        attention_weights(q_map(xq), k_map(xk)),
        attention_weights(unstabilised(q_map, xq), unstabilised(k_map, xk)),
    )
    # beyond the cap exp continues linearly (value and slope match at the cap) instead of growing
    # exponentially: e^cap (1 + |z| - cap) on the growing side, its inverse on the other
    z = torch.linspace(-60, 60, 241, dtype=f64, requires_grad=True)
    c = soft_cap(z)
    inside = z.abs() <= KEY_CAP
    torch.testing.assert_close(c[inside], z[inside])
    e_cap = torch.tensor(KEY_CAP, dtype=f64).exp()
    torch.testing.assert_close(c.exp()[z > KEY_CAP], e_cap * (1 + z[z > KEY_CAP] - KEY_CAP))
    torch.testing.assert_close((-c).exp()[z > KEY_CAP], 1 / (e_cap * (1 + z[z > KEY_CAP] - KEY_CAP)))
    # strictly increasing (keys beyond the cap do not tie) and still passing gradient there
    assert (c.diff() > 0).all()
    (grad,) = torch.autograd.grad(c.exp().sum(), z)
    assert (grad > 0).all() and grad.max() <= e_cap * (1 + 1e-12)
    torch.testing.assert_close(grad[z > KEY_CAP], e_cap.expand(int((z > KEY_CAP).sum())))
    big = k_map(20 * xk)
    assert (k_map.project(20 * xk).abs() > KEY_CAP).any()
    zb = k_map.project(20 * xk)
    torch.testing.assert_close(big, torch.cat([soft_cap(zb), -soft_cap(zb)], dim=-1).exp())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [100.0, 1e4])
def test_hedgehog_outputs_and_gradients_stay_finite_for_extreme_inputs(dtype, scale):
    x = (scale * randn(2, 9, 2, 8, seed=5)).to(dtype).requires_grad_()
    for role in ("query", "key"):
        phi = create_feature_map("hedgehog", 8, 2, role=role).to(dtype)
        out = phi(x)
        assert torch.isfinite(out).all(), role
        (out.float() * randn(*out.shape, seed=6).float()).sum().backward()
        for g in (x.grad, phi.weight.grad, phi.bias.grad):
            assert torch.isfinite(g).all(), role
        x.grad = None
    # and through the whole normalised linear attention (chunked op, denominator and all)
    mixer = create_mixer("linear_attention", d_model=16, num_heads=2, feature_map="hedgehog").to(dtype)
    with torch.no_grad():
        mixer.q_proj.weight.mul_(scale)
        mixer.k_proj.weight.mul_(scale)
    h = randn(2, 70, 16, seed=7).to(dtype).requires_grad_()  # two chunks of the op
    y, state = mixer(h)
    assert torch.isfinite(y).all() and torch.isfinite(state["recurrent"]).all()
    y.float().square().sum().backward()
    assert torch.isfinite(h.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in mixer.parameters()), "parameter gradients"


@torch.no_grad()
def test_hedgehog_lets_a_strongly_aligned_key_win_unlike_the_per_key_softmax():
    """Dot-product monotonicity / spikiness: a key ``c q`` aligned with the query takes more of the
    attention as ``c`` grows, up to almost all of it. The old map, a softmax over ``[z, -z]`` for
    keys too, divides each key by its own feature sum, so the aligned key's kernel value is capped
    at the query's largest feature and its weight stays near uniform (1/64 here) however large ``c``."""
    q_map = create_feature_map("hedgehog", 8, 1, role="query").double()
    k_map = create_feature_map("hedgehog", 8, 1, role="key").double()

    def old(x):
        return torch.softmax(torch.cat([x, -x], dim=-1), dim=-1)

    def entropy(w):
        return -(w * w.log()).sum()

    q = randn(1, 1, 1, 8, seed=8)
    keys = randn(1, 64, 1, 8, seed=9)
    new_w, old_w = [], []
    for c in (1.0, 2.0, 4.0, 8.0):
        k = keys.clone()
        k[0, 0] = c * q[0, 0]
        # weights of the last query position over all 64 keys; q_map(q) broadcasts over positions
        new_w.append(attention_weights(q_map(q).expand(1, 64, 1, 16), k_map(k))[0, 0, -1])
        old_w.append(attention_weights(old(q).expand(1, 64, 1, 16), old(k))[0, 0, -1])
    aligned_new = [float(w[0]) for w in new_w]
    aligned_old = [float(w[0]) for w in old_w]
    assert all(a < b for a, b in zip(aligned_new, aligned_new[1:])), aligned_new
    assert aligned_new[-1] > 0.95 and entropy(new_w[-1]) < 0.3
    assert max(aligned_old) < 0.05 and min(entropy(w) for w in old_w) > 4.1  # log 64 = 4.16
    assert all(entropy(n) < entropy(o) for n, o in zip(new_w[1:], old_w[1:]))


def test_roles_default_to_key_and_linear_attention_asks_for_them():
    assert create_feature_map("hedgehog", 4, 2).role == "key"
    assert create_feature_map("elu1", 4, 2, role="query").role == "query"
    with pytest.raises(ValueError, match=r"role: expected 'query' or 'key', got 'value'"):
        create_feature_map("hedgehog", 4, 2, role="value")
    for normalize, q_role in ((True, "query"), (False, "key")):
        m = create_mixer(
            "linear_attention", d_model=16, num_heads=2, feature_map="hedgehog", normalize=normalize
        )
        assert (m.q_map.role, m.k_map.role) == (q_role, "key")
        # the parameters (and so checkpoints) are unchanged by the role
        assert set(m.q_map.state_dict()) == set(m.k_map.state_dict()) == {"weight", "bias"}
        assert m.q_map.feature_dim == m.k_map.feature_dim == 16


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
