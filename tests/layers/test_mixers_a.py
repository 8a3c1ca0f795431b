"""Mixer-specific tests for part A: feature maps, rotary, softmax / sliding window, linear attention,
TransNormer, Lightning, RetNet, SLAB and LSSL. The shared contract is in test_mixers_contract.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers import create_mixer
from linearlab.layers.feature_maps import create_feature_map, list_feature_maps
from linearlab.layers.mixers.lssl import bilinear, causal_fft_conv, hippo_legs, krylov
from linearlab.layers.rotary import RotaryEmbedding, xpos_scale

f64 = torch.float64


def randn(*shape, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def heads(t: torch.Tensor, H: int) -> torch.Tensor:
    return t.unflatten(-1, (H, -1))


def causal_linear_reference(q, k, v, normalize: bool, scale: float = 1.0, log_decay=None):
    """Quadratic-form reference: ``o_t = sum_{s<=t} w_ts (q_t . k_s) v_s`` (``[B, T, H, *]``)."""
    T = q.shape[1]
    scores = torch.einsum("bthd,bshd->bhts", q, k) * scale
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if log_decay is not None:
        dist = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0).to(f64)
        scores = scores * torch.exp(log_decay.to(f64)[:, None, None] * dist)
    scores = scores.masked_fill(~mask, 0.0)
    o = torch.einsum("bhts,bshd->bthd", scores, v)
    if normalize:
        # same eps as the mixers: a ReLU-type map can give an all-zero query
        o = o / (scores.sum(-1).transpose(1, 2)[..., None] + 1e-6)
    return o


# ---------------------------------------------------------------------------- feature maps


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
    with pytest.raises(ValueError, match=r"feature_map: unknown map 'nope'; allowed: \["):
        create_feature_map("nope", 4, 2)
    with pytest.raises(ValueError, match=r"head_dim, num_heads: must be >= 1, got head_dim=0"):
        create_feature_map("relu", 0, 2)
    with pytest.raises(ValueError, match=r"x: expected \[B, T, H=2, D=4\], got shape \[1, 3, 4\]"):
        create_feature_map("relu", 4, 2)(randn(1, 3, 4))


# ---------------------------------------------------------------------------- rotary


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding(8)
    q, k = randn(1, 1, 1, 8), randn(1, 1, 1, 8, seed=1)

    def score(tq, tk):
        return (rope(q, offset=tq) * rope(k, offset=tk)).sum()

    torch.testing.assert_close(score(7, 3), score(104, 100))
    torch.testing.assert_close(score(0, 0), (q * k).sum())  # position 0 is the identity
    assert not torch.allclose(score(7, 3), score(7, 4))
    # a rotation keeps norms
    torch.testing.assert_close(rope(q, offset=12).norm(), q.norm())


def test_xpos_scale_is_relative():
    s = xpos_scale(0, 300, 8, f64, torch.device("cpu"))
    assert s.shape == (300, 8)
    # q_t scaled by s_t and k_s by 1 / s_s: the product depends on t - s only
    torch.testing.assert_close(s[250] / s[200], s[60] / s[10])
    assert (s[1:] <= s[:-1]).all()  # zeta <= 1: decays with distance


def test_rotary_errors():
    with pytest.raises(ValueError, match=r"dim: rotary embedding needs a positive even head dim, got 5"):
        RotaryEmbedding(5)
    with pytest.raises(ValueError, match=r"x: expected \[B, T, H, 8\], got shape \[2, 3, 8\]"):
        RotaryEmbedding(8)(randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"dim: xPos needs an even head dim, got 3"):
        xpos_scale(0, 4, 3, f64, torch.device("cpu"))


# ---------------------------------------------------------------------------- softmax / sliding window


@torch.no_grad()
def test_softmax_matches_explicit_attention_with_rope():
    m = create_mixer("softmax", d_model=16, num_heads=2).double()
    x = randn(2, 9, 16)
    q, k, v = (heads(t, 2) for t in m.qkv_proj(x).chunk(3, dim=-1))
    q, k = m.rotary(q), m.rotary(k)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(8)
    scores = scores.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    ref = m.o_proj(torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).flatten(-2))
    torch.testing.assert_close(m(x)[0], ref)


@torch.no_grad()
def test_sliding_window_forgets_tokens_older_than_the_window():
    w, T = 4, 12
    m = create_mixer("sliding_window", d_model=16, num_heads=2, window_size=w).double()
    full = create_mixer("softmax", d_model=16, num_heads=2).double()
    full.load_state_dict(m.state_dict())
    x = randn(1, T, 16)
    y, cache = m(x)
    # token 0 is outside the window of the last token (which sees T-w .. T-1) ...
    x2 = x.clone()
    x2[:, : T - w] = randn(1, T - w, 16, seed=5)
    torch.testing.assert_close(m(x2)[0][:, -1], y[:, -1])
    # ... but the first token inside the window matters, and full attention never forgets
    x3 = x.clone()
    x3[:, T - w] += 1.0
    assert not torch.allclose(m(x3)[0][:, -1], y[:, -1])
    assert not torch.allclose(full(x2)[0][:, -1], full(x)[0][:, -1])
    # the cache holds exactly what a later query can still see
    assert cache["k"].shape[1] == w - 1 and int(cache["pos"]) == T
    assert full(x)[1]["k"].shape[1] == T


def test_softmax_state_size_is_the_kv_cache():
    m = create_mixer("softmax", d_model=16)
    assert m.state_size(10) == 2 * 10 * 16
    sw = create_mixer("sliding_window", d_model=16, window_size=8)
    assert sw.state_size(3) == 2 * 3 * 16 and sw.state_size(100) == 2 * 7 * 16


# ---------------------------------------------------------------------------- linear attention


@pytest.mark.parametrize("feature_map", ["elu1", "hedgehog", "t2r"])
@pytest.mark.parametrize("normalize", [True, False])
@torch.no_grad()
def test_linear_attention_matches_quadratic_form(feature_map, normalize):
    m = create_mixer(
        "linear_attention", d_model=16, num_heads=2, feature_map=feature_map, normalize=normalize
    )
    m = m.double()
    x = randn(2, 11, 16)
    q = m.q_map(heads(m.q_proj(x), 2))
    k = m.k_map(heads(m.k_proj(x), 2))
    v = heads(m.v_proj(x), 2)
    scale = 1.0 if normalize else q.shape[-1] ** -0.5
    ref = m.o_proj(causal_linear_reference(q, k, v, normalize, scale).flatten(-2))
    torch.testing.assert_close(m(x)[0], ref)


def test_linear_attention_state_size_counts_the_denominator():
    assert create_mixer("linear_attention", d_model=16, num_heads=2).state_size(5) == 2 * 8 * 9
    hh = create_mixer("linear_attention", d_model=16, num_heads=2, feature_map="hedgehog", normalize=False)
    assert hh.state_size(5) == 2 * 16 * 8


# ---------------------------------------------------------------------------- TransNormer


@torch.no_grad()
def test_norm_attention_output_is_rms_normalised_linear_attention():
    m = create_mixer("transnormer", d_model=16, num_heads=2, attn_type="norm").double()
    m.o_proj = nn.Identity()
    x = randn(2, 10, 16)
    y, _ = m(x)
    # SimpleRMSNorm: unit root-mean-square per token, and the direction of phi(q) S_t (no denominator)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(2, 10, dtype=f64), rtol=1e-5, atol=1e-5)
    q, k = m.q_map(heads(m.q_proj(x), 2)), m.k_map(heads(m.k_proj(x), 2))
    ref = causal_linear_reference(q, k, heads(m.v_proj(x), 2), normalize=False).flatten(-2)
    torch.testing.assert_close(y, ref / ref.pow(2).mean(-1, keepdim=True).sqrt(), rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_norm_attention_decay_matches_decayed_quadratic_form():
    m = create_mixer("transnormer", d_model=16, num_heads=2, decay=0.8, feature_map="elu1").double()
    m.o_proj = nn.Identity()
    x = randn(1, 10, 16)
    q, k = m.q_map(heads(m.q_proj(x), 2)), m.k_map(heads(m.k_proj(x), 2))
    g = torch.full((2,), math.log(0.8), dtype=f64)
    ref = causal_linear_reference(q, k, heads(m.v_proj(x), 2), normalize=False, log_decay=g).flatten(-2)
    ref = ref / (ref.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()
    torch.testing.assert_close(m(x)[0], ref)


@torch.no_grad()
def test_diag_attention_sees_only_its_own_block():
    bs, T = 4, 10
    m = create_mixer("transnormer", d_model=16, num_heads=2, attn_type="diag", block_size=bs).double()
    x = randn(1, T, 16)
    y, state = m(x)
    # tokens 8, 9 form the third block: changing every earlier token leaves them unchanged
    x2 = x.clone()
    x2[:, :8] = randn(1, 8, 16, seed=3)
    y2, _ = m(x2)
    torch.testing.assert_close(y2[:, 8:], y[:, 8:])
    assert not torch.allclose(y2[:, 7], y[:, 7])
    # inside a block attention is causal softmax: token 5 depends on token 4 (same block)
    x3 = x.clone()
    x3[:, 4] += 1.0
    assert not torch.allclose(m(x3)[0][:, 5], y[:, 5])
    # the first token of a block attends only to itself: output = o_proj(v)
    v = m.v_proj(x[:, 4:5])
    torch.testing.assert_close(y[:, 4:5], m.o_proj(v))
    # the state is the current (partial) block: tokens 8, 9
    assert state["k"].shape[1] == T % bs and int(state["pos"]) == T
    assert m.state_size(1000) == 2 * (bs - 1) * 16


# ---------------------------------------------------------------------------- Lightning


@pytest.mark.parametrize("layer_idx", [0, 2])
@torch.no_grad()
def test_lightning_matches_decayed_reference_for_its_layer(layer_idx):
    from linearlab.ops import lightning_attn_decay

    m = create_mixer("lightning", d_model=16, num_heads=2, layer_idx=layer_idx, num_layers=3).double()
    x = randn(2, 9, 16)
    q, k, v = (heads(t, 2) for t in F.silu(m.qkv_proj(x)).chunk(3, dim=-1))
    g = lightning_attn_decay(2, layer_idx, 3, dtype=f64)
    o = causal_linear_reference(q, k, v, normalize=False, scale=8**-0.5, log_decay=g).flatten(-2)
    o = o / (o.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * torch.sigmoid(m.gate(x))
    torch.testing.assert_close(m(x)[0], m.o_proj(o))
    # the same weights in another layer decay differently, so the layer index really is used
    other = create_mixer("lightning", d_model=16, num_heads=2, layer_idx=1, num_layers=3).double()
    other.load_state_dict(m.state_dict())
    assert not torch.allclose(other(x)[0], m(x)[0])


# ---------------------------------------------------------------------------- RetNet


def test_retnet_decays_are_the_paper_schedule():
    m = create_mixer("retnet", d_model=32, num_heads=4)
    torch.testing.assert_close(m.g_gamma.exp(), 1 - 2.0 ** (-5 - torch.arange(4, dtype=f64)))


@pytest.mark.parametrize("position", ["rope", "xpos"])
@torch.no_grad()
def test_retnet_is_translation_invariant(position):
    # decay and rotary code are relative, so an empty state at position 100 acts like the start
    m = create_mixer("retnet", d_model=16, num_heads=2, position=position).double()
    x = randn(2, 7, 16)
    y, s = m(x)
    shifted = {"S": torch.zeros_like(s["S"]), "pos": torch.tensor(100)}
    torch.testing.assert_close(m(x, shifted)[0], y)


# ---------------------------------------------------------------------------- SLAB


@torch.no_grad()
def test_slab_is_relu_linear_attention_plus_causal_depthwise_conv():
    m = create_mixer("slab", d_model=16, num_heads=2, conv_size=3).double()
    x = randn(2, 8, 16)
    q, k = F.relu(heads(m.q_proj(x), 2)), F.relu(heads(m.k_proj(x), 2))
    v = m.v_proj(x)
    attn = causal_linear_reference(q, k, heads(v, 2), normalize=True).flatten(-2)
    # the conv at time t only sees v_{t-2}, v_{t-1}, v_t (zeros before the start)
    vp = F.pad(v, (0, 0, 2, 0))
    w = m.dwc.weight[:, 0]  # [D, 3]
    conv = sum(vp[:, j : j + 8] * w[:, j] for j in range(3)) + m.dwc.bias
    torch.testing.assert_close(m(x)[0], m.o_proj(attn + conv), rtol=1e-6, atol=1e-6)
    # the conv buffer holds the last conv_size - 1 values of v
    torch.testing.assert_close(m(x)[1]["conv"], v[:, -2:].transpose(1, 2))


# ---------------------------------------------------------------------------- LSSL


def test_hippo_legs_structure():
    A, B = hippo_legs(5)
    n = torch.arange(5, dtype=f64)
    torch.testing.assert_close(B, torch.sqrt(2 * n + 1))
    torch.testing.assert_close(A.diagonal(), -(n + 1))
    lower = torch.ones(5, 5, dtype=torch.bool).tril(-1)
    torch.testing.assert_close(A[lower], -torch.outer(B, B)[lower])
    assert (A.triu(1) == 0).all()


def test_bilinear_is_stable_and_second_order_accurate():
    A, B = hippo_legs(6)
    dts = torch.tensor([0.01, 0.005, 0.0025], dtype=f64)
    Ab, Bb = bilinear(A, B, dts)
    assert (torch.linalg.eigvals(Ab).abs() < 1).all()  # A is Hurwitz -> |eig(Ab)| < 1 for any dt
    err = [(Ab[i] - torch.linalg.matrix_exp(dts[i] * A)).abs().max() for i in range(3)]
    # local error O(dt^3): halving dt divides it by about 8
    assert 6 < err[0] / err[1] < 10 and 6 < err[1] / err[2] < 10
    Ab1, Bb1 = bilinear(A, B, dts[:1])
    torch.testing.assert_close(
        Bb1[0], torch.linalg.solve(torch.eye(6, dtype=f64) - dts[0] / 2 * A, dts[0] * B)
    )


def test_krylov_kernel_and_power():
    A, B = hippo_legs(6)
    Ab, Bb = bilinear(A, B, torch.tensor([0.03, 0.2], dtype=f64))
    X, AbL = krylov(Ab, Bb, 13)
    for j in (0, 1, 7, 12):
        torch.testing.assert_close(X[..., j], (torch.linalg.matrix_power(Ab, j) @ Bb[..., None])[..., 0])
    torch.testing.assert_close(AbL, torch.linalg.matrix_power(Ab, 13))


def test_fft_conv_is_causal_convolution():
    u, K = randn(2, 3, 10), randn(3, 10, seed=1)
    ref = torch.stack([(K[:, : t + 1].flip(-1) * u[..., : t + 1]).sum(-1) for t in range(10)], dim=-1)
    torch.testing.assert_close(causal_fft_conv(u, K), ref)


@torch.no_grad()
def test_lssl_convolution_equals_recurrence():
    m = create_mixer("lssl", d_model=4, d_state=8).double()
    x = randn(2, 30, 4)
    m.o_proj = nn.Identity()
    y, state = m(x)
    Ab, Bb = m.discretize(f64)
    h = torch.zeros(2, 4, 8, dtype=f64)
    ys = []
    for t in range(30):
        h = (Ab @ h[..., None])[..., 0] + Bb * x[:, t, :, None]
        ys.append((h * m.C).sum(-1) + m.D * x[:, t])
    torch.testing.assert_close(y, F.gelu(torch.stack(ys, dim=1)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(state["ssm"], h, rtol=1e-10, atol=1e-12)


def test_lssl_decoding_cache_follows_the_step_size():
    m = create_mixer("lssl", d_model=4, d_state=6).double()
    with torch.no_grad():
        first = m.discretize(f64)[0]
        assert m.discretize(f64)[0] is first  # cached while nothing changes
        m.log_dt.add_(0.5)  # an optimizer step changes the parameter in place
        torch.testing.assert_close(m.discretize(f64)[0], bilinear(m.A, m.B, m.log_dt.exp())[0])
    # with autograd on, the result is fresh and differentiable
    assert m.discretize(f64)[0].requires_grad


# ---------------------------------------------------------------------------- error messages


ERRORS = [
    (
        lambda: create_mixer("softmax", d_model=16, num_heads=3),
        r"num_heads: must be >= 1 and divide d_model = 16, got 3",
    ),
    (lambda: create_mixer("softmax", d_model=16, window_size=0), r"window_size: must be >= 1 or None, got 0"),
    (
        lambda: create_mixer("softmax", d_model=6, num_heads=2),
        r"num_heads: RoPE needs an even head dim, got d_model/num_heads = 3",
    ),
    (
        lambda: create_mixer("sliding_window", d_model=16, window_size=2.5),
        r"window_size: sliding_window needs an int >= 1, got 2.5",
    ),
    (
        lambda: create_mixer("linear_attention", d_model=16, feature_map="cos"),
        r"feature_map: expected one of \[.*\], got 'cos'",
    ),
    (
        lambda: create_mixer("transnormer", d_model=16, attn_type="local"),
        r"attn_type: expected one of \['norm', 'diag'\], got 'local'",
    ),
    (
        lambda: create_mixer("transnormer", d_model=16, decay=1.0),
        r"decay: must be in \(0, 1\) or None, got 1.0",
    ),
    (lambda: create_mixer("transnormer", d_model=16, block_size=0), r"block_size: must be >= 1, got 0"),
    (
        lambda: create_mixer("lightning", d_model=16, layer_idx=3, num_layers=3),
        r"layer_idx: must be in \[0, num_layers = 3\), got 3",
    ),
    (
        lambda: create_mixer("retnet", d_model=16, position="alibi"),
        r"position: expected one of \['xpos', 'rope', 'none'\], got 'alibi'",
    ),
    (lambda: create_mixer("retnet", d_model=16, expand_v=0), r"expand_v: must be >= 1, got 0"),
    (
        lambda: create_mixer("retnet", d_model=12, num_heads=4),
        r"num_heads: rope needs an even head dim, got d_model/num_heads = 3",
    ),
    (lambda: create_mixer("slab", d_model=16, conv_size=0), r"conv_size: must be >= 1, got 0"),
    (lambda: create_mixer("lssl", d_model=16, d_state=0), r"d_state: must be >= 1, got 0"),
    (
        lambda: create_mixer("lssl", d_model=16, dt_min=0.1, dt_max=0.01),
        r"dt_min, dt_max: need 0 < dt_min <= dt_max, got 0.1, 0.01",
    ),
    (
        lambda: create_mixer("slab", d_model=16)(torch.randn(2, 3, 8)),
        r"x: last dim must equal d_model = 16, got shape \[2, 3, 8\]",
    ),
    (
        lambda: create_mixer("slab", d_model=16)(torch.randn(2, 0, 16)),
        r"x: sequence length T must be at least 1, got 0",
    ),
    (
        lambda: create_mixer("lssl", d_model=4)(torch.ones(1, 2, 4, dtype=torch.long)),
        r"x: expected a floating-point tensor, got dtype torch.int64",
    ),
    (
        lambda: create_mixer("retnet", d_model=16)([[0.0] * 16]),
        r"x: expected a torch.Tensor \[B, T, D\], got list",
    ),
    (
        lambda: create_mixer("lightning", d_model=16)(torch.randn(3, 16)),
        r"x: expected 3 dims \[B, T, D\] with D = 16, got shape \[3, 16\]",
    ),
]


@pytest.mark.parametrize(
    "make, message", ERRORS, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(ERRORS)]
)
def test_error_messages(make, message):
    with pytest.raises(ValueError, match=message):
        make()
