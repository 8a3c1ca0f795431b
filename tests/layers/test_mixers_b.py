"""Mixer-specific properties of gla, deltanet, gated_deltanet, mom and the shared layer modules.

The generic mixer contract (causality, one call == stepping, gradients) is tested for every
registered mixer in ``test_mixers_contract.py``; here each mixer is checked against its own
definition: gates, norms, routing, and reference loops written out token by token.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from linearlab import ops
from linearlab.layers.mixers.deltanet import DeltaNet
from linearlab.layers.mixers.gated_deltanet import GatedDeltaNet
from linearlab.layers.mixers.gla import GatedLinearAttention
from linearlab.layers.mixers.mom import MixtureOfMemories, Routing, load_balancing_loss
from linearlab.layers.modules import (
    GatedRMSNorm,
    ShortConvolution,
    check_mixer_input,
    check_state,
    head_dims,
    l2norm,
)

D = 16
MIXERS = {
    "gla": GatedLinearAttention,
    "deltanet": DeltaNet,
    "gated_deltanet": GatedDeltaNet,
    "mom": MixtureOfMemories,
}


def make(name: str, **kwargs) -> torch.nn.Module:
    return MIXERS[name](D, num_heads=2, **kwargs).double()


def spy(monkeypatch: pytest.MonkeyPatch, op_name: str) -> list[dict]:
    """Wrap ``linearlab.ops.<op_name>`` so each call's arguments are recorded (the op still runs)."""
    real = getattr(ops, op_name)
    calls: list[dict] = []

    def wrapper(*args, **kwargs):
        calls.append({"args": args, "kwargs": kwargs})
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, op_name, wrapper)
    return calls


# ---------------------------------------------------------------------------------------------
# shared modules


@pytest.mark.parametrize("T", [1, 9])
def test_short_conv_matches_explicit_causal_sum(T):
    conv = ShortConvolution(5, kernel_size=4, bias=True).double()
    x = torch.randn(2, T, 5, dtype=torch.float64)
    y, cache = conv(x)
    w = conv.weight[:, 0, :]  # [D, W]: w[:, -1] multiplies the current token
    xp = F.pad(x, (0, 0, 3, 0))  # three zero tokens before the start
    ref = torch.stack([(xp[:, t : t + 4] * w.T).sum(1) + conv.bias for t in range(T)], dim=1)
    torch.testing.assert_close(y, F.silu(ref), rtol=0, atol=1e-12)
    torch.testing.assert_close(cache, xp[:, -3:].transpose(1, 2), rtol=0, atol=0)  # last 3 inputs
    # the carried state is a compact copy, not a view into the prefill buffer
    assert cache.untyped_storage().nbytes() == cache.numel() * cache.element_size()


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
def test_short_conv_stepping_equals_full(kernel_size):
    conv = ShortConvolution(6, kernel_size=kernel_size, activation=None).double()
    x = torch.randn(2, 37, 6, dtype=torch.float64)
    y_full, cache_full = conv(x)
    cache, steps = None, []
    for t in range(37):
        y_t, cache = conv(x[:, t : t + 1], cache)
        steps.append(y_t)
    torch.testing.assert_close(torch.cat(steps, 1), y_full, rtol=0, atol=1e-13)
    torch.testing.assert_close(cache, cache_full, rtol=0, atol=0)
    # pieces shorter than the kernel also carry exactly
    y_a, c_a = conv(x[:, :2])
    y_b, c_b = conv(x[:, 2:], c_a)
    torch.testing.assert_close(torch.cat([y_a, y_b], 1), y_full, rtol=0, atol=1e-13)
    assert conv.state_size() == 6 * (kernel_size - 1)


def test_short_conv_errors():
    conv = ShortConvolution(4)
    with pytest.raises(ValueError, match=r"x: expected shape \[B, T, 4\], got \[2, 3, 5\]"):
        conv(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"cache: expected shape .* = \[2, 4, 3\], got \[2, 4, 2\]"):
        conv(torch.randn(2, 3, 4), torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="activation: expected 'silu' or None, got 'relu'"):
        ShortConvolution(4, activation="relu")
    with pytest.raises(ValueError, match="kernel_size: expected a positive int, got 0"):
        ShortConvolution(4, kernel_size=0)


def test_gated_rmsnorm_formula_and_dtype():
    norm = GatedRMSNorm(8, eps=1e-5).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x, g = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 4, 8, dtype=torch.float64)
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight * g * torch.sigmoid(g)
    torch.testing.assert_close(norm(x, g), ref, rtol=1e-12, atol=1e-12)
    y16 = norm.to(torch.bfloat16)(x.bfloat16(), g.bfloat16())
    assert y16.dtype == torch.bfloat16
    torch.testing.assert_close(y16.double(), ref, rtol=2e-2, atol=2e-2)
    with pytest.raises(ValueError, match=r"gate: shape \[3, 4, 7\] must equal x's shape \[3, 4, 8\]"):
        norm(x, g[..., :7])


def test_l2norm_is_unit_and_keeps_float64():
    x = torch.randn(5, 3, 7, dtype=torch.float64) * 10
    y = l2norm(x)
    # float64 in, float64 math: matches the formula to rounding, not to float32's 1e-7
    torch.testing.assert_close(y, x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + 1e-6), rtol=1e-14, atol=0)
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(5, 3, dtype=torch.float64), rtol=0, atol=1e-8)


def test_helper_errors():
    with pytest.raises(ValueError, match=r"expand_k: d_model \* expand_k = 16 \* 0.3 = 4.8 must be"):
        head_dims(16, 2, 0.3, 1.0)
    with pytest.raises(ValueError, match="expand_v: .* divisible by num_heads = 4"):
        head_dims(12, 4, 1.0, 0.5)
    with pytest.raises(ValueError, match="num_heads: expected a positive int, got 0"):
        head_dims(16, 0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"x: expected 3 dims \[B, T, D\] with D = 16, got shape \[16\]"):
        check_mixer_input(torch.zeros(16), 16)
    with pytest.raises(ValueError, match=r"x: last dim must equal d_model = 16, got shape \[1, 2, 8\]"):
        check_mixer_input(torch.zeros(1, 2, 8), 16)
    with pytest.raises(ValueError, match="x: sequence length T must be at least 1, got 0"):
        check_mixer_input(torch.zeros(1, 0, 16), 16)
    with pytest.raises(ValueError, match="x: expected a floating-point tensor, got dtype torch.int64"):
        check_mixer_input(torch.zeros(1, 2, 16, dtype=torch.long), 16)
    with pytest.raises(
        ValueError, match=r"state: expected None or a dict with keys \['recurrent'\], got list"
    ):
        check_state([], ["recurrent"], 2)
    with pytest.raises(ValueError, match=r"state: missing key\(s\) \['conv_q'\]"):
        check_state({"recurrent": torch.zeros(2)}, ["recurrent", "conv_q"], 2)
    with pytest.raises(
        ValueError, match=r"state\['recurrent'\]: batch size must match x's B = 2, got shape \[3, 1\]"
    ):
        check_state({"recurrent": torch.zeros(3, 1)}, ["recurrent"], 2)


# ---------------------------------------------------------------------------------------------
# every mixer of this file


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_state_size_counts_state_tensors(name):
    mixer = make(name)
    _, state = mixer(torch.randn(1, 5, D, dtype=torch.float64))
    assert mixer.state_size(5) == sum(t[0].numel() for t in state.values())
    assert mixer.state_size(500) == mixer.state_size(5)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_chunk_size_does_not_change_the_result(name):
    """T = 37 spans three chunks of 16: the cross-chunk state passing is exercised at layer level."""
    x = torch.randn(2, 37, D, dtype=torch.float64)
    torch.manual_seed(1)
    small = make(name, chunk_size=16)
    torch.manual_seed(1)
    large = make(name, chunk_size=64)
    (y16, s16), (y64, s64) = small(x), large(x)
    torch.testing.assert_close(y16, y64, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s16["recurrent"], s64["recurrent"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_bad_state_is_rejected(name):
    mixer = make(name)
    x = torch.randn(2, 3, D, dtype=torch.float64)
    _, state = mixer(x)
    with pytest.raises(ValueError, match=r"state\['recurrent'\]: batch size must match x's B = 1"):
        mixer(x[:1], state)


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_bfloat16_forward_is_finite(name):
    mixer = MIXERS[name](D, num_heads=2).to(torch.bfloat16)
    y, state = mixer(torch.randn(1, 6, D, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    assert torch.isfinite(state["recurrent"]).all()


# ---------------------------------------------------------------------------------------------
# GLA


def test_gla_gate_is_log_space_and_nonpositive(monkeypatch):
    mixer = make("gla")
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


def test_gla_clamp_min_bounds_gate():
    mixer = make("gla", clamp_min=-0.05)
    with torch.no_grad():
        mixer.gk_proj[1].bias.fill_(-30.0)
    gk = mixer.log_gate(torch.randn(1, 4, D, dtype=torch.float64))
    torch.testing.assert_close(gk, torch.full_like(gk, -0.05), rtol=0, atol=0)


def test_gla_uses_chunk_for_prefill_and_recurrent_for_steps(monkeypatch):
    mixer = make("gla")
    chunk, rec = spy(monkeypatch, "chunk_gla"), spy(monkeypatch, "fused_recurrent_gla")
    _, state = mixer(torch.randn(1, 5, D, dtype=torch.float64))
    mixer(torch.randn(1, 1, D, dtype=torch.float64), state)
    assert (len(chunk), len(rec)) == (1, 1)


def test_gla_matches_token_loop():
    """The whole layer written out token by token from the paper's equations."""
    mixer = make("gla")
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
    mixer = make("gla", use_output_gate=False)
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


# ---------------------------------------------------------------------------------------------
# DeltaNet and Gated DeltaNet


@pytest.mark.parametrize("name", ["deltanet", "gated_deltanet"])
def test_delta_qk_are_unit_norm_and_beta_in_range(monkeypatch, name):
    mixer = make(name)
    with torch.no_grad():
        mixer.q_proj.weight.mul_(7)  # the norm must not depend on the input scale
    op = "chunk_delta_rule" if name == "deltanet" else "chunk_gated_delta_rule"
    calls = spy(monkeypatch, op)
    mixer(torch.randn(2, 7, D, dtype=torch.float64))
    q, k = calls[0]["args"][:2]
    beta = calls[0]["args"][3 if name == "deltanet" else 4]
    for t in (q, k):
        # unit norm up to the eps = 1e-6 inside the norm
        torch.testing.assert_close(
            t.norm(dim=-1), torch.ones(2, 7, 2, dtype=torch.float64), rtol=0, atol=1e-4
        )
    assert beta.shape == (2, 7, 2) and (beta > 0).all() and (beta < 1).all()


def test_deltanet_negative_eigenvalues_widen_beta(monkeypatch):
    mixer = make("deltanet", allow_neg_eigval=True)
    with torch.no_grad():
        mixer.b_proj.weight.mul_(20)
    calls = spy(monkeypatch, "chunk_delta_rule")
    mixer(torch.randn(1, 30, D, dtype=torch.float64))
    beta = calls[0]["args"][3]
    assert (beta > 0).all() and (beta < 2).all() and beta.max() > 1.5


def test_deltanet_matches_token_loop():
    mixer = make("deltanet")
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
    mixer = make("deltanet", use_short_conv=False, use_gate=False)
    _, state = mixer(torch.randn(1, 3, D, dtype=torch.float64))
    assert set(state) == {"recurrent"} and mixer.state_size(3) == 2 * 8 * 8


def test_gated_deltanet_decay_formula_and_init():
    mixer = make("gated_deltanet")
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
    gated = make("gated_deltanet")
    with torch.no_grad():
        gated.A_log.fill_(-60.0)  # exp(A_log) ~ 1e-26: the gate is exp(g) = 1 to machine precision
    plain = make("deltanet")
    missing, unexpected = plain.load_state_dict(gated.state_dict(), strict=False)
    assert not missing and set(unexpected) == {"a_proj.weight", "A_log", "dt_bias"}
    x = torch.randn(2, 9, D, dtype=torch.float64)
    torch.testing.assert_close(gated(x)[0], plain(x)[0], rtol=1e-12, atol=1e-13)


def test_gated_deltanet_strong_decay_forgets_the_past():
    mixer = make("gated_deltanet", use_short_conv=False)
    with torch.no_grad():
        mixer.A_log.fill_(5.0)
        mixer.dt_bias.fill_(5.0)  # g ~ -750 per step: the memory is wiped every token
    x = torch.randn(1, 6, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :5] = torch.randn(1, 5, D, dtype=torch.float64)
    torch.testing.assert_close(mixer(x)[0][:, -1], mixer(x2)[0][:, -1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Mixture-of-Memories


def test_mom_routes_each_token_to_exactly_topk():
    mixer = make("mom", num_memories=5, topk=3)
    r = mixer.route(torch.randn(2, 11, D, dtype=torch.float64))
    assert isinstance(r, Routing)
    assert (r.mask.sum(-1) == 3).all()
    assert torch.equal(r.mask, torch.zeros_like(r.mask).scatter(-1, r.indices, True))
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(2, 11, dtype=torch.float64), rtol=0, atol=1e-12)
    assert (r.weights[~r.mask] == 0).all() and (r.weights[r.mask] > 0).all()
    # the chosen memories are the most probable ones
    assert (
        r.probs.gather(-1, r.indices).min(-1).values >= r.probs.masked_fill(r.mask, -1).max(-1).values
    ).all()


@pytest.mark.parametrize("mode", ["gather", "mask"])
@pytest.mark.parametrize("T", [1, 3])
def test_mom_unrouted_memories_are_untouched(T, mode, monkeypatch):
    mixer = make("mom", mode=mode)
    _, state = mixer(torch.randn(2, 8, D, dtype=torch.float64))
    x = torch.randn(2, T, D, dtype=torch.float64)
    if T > 1:
        # pin the routing so memory 3 is skipped by every token of the chunk
        fixed = torch.tensor([0, 1, 2]).repeat(2, 6)[:, : 2 * T].view(2, T, 2)
        real_route = mixer.route

        def pinned(x):
            r = real_route(x)
            mask = torch.zeros_like(r.mask).scatter(-1, fixed, True)
            weights = torch.where(mask, r.probs, 0.0)
            return Routing(r.probs, fixed, weights / weights.sum(-1, keepdim=True), mask)

        monkeypatch.setattr(mixer, "route", pinned)
    routed = mixer.route(x).mask.any(1)  # [B, M]: memory used by any token of x
    _, new = mixer(x, state)
    H = 2
    before = state["recurrent"].view(2, 5, H, 8, 8)
    after = new["recurrent"].view(2, 5, H, 8, 8)
    for b in range(2):
        for m in range(4):
            if routed[b, m]:
                assert not torch.allclose(after[b, m], before[b, m])
            else:
                torch.testing.assert_close(after[b, m], before[b, m], rtol=0, atol=1e-14)
        assert not torch.allclose(after[b, 4], before[b, 4])  # the shared memory always updates
    assert not routed[:, 3].any() or T == 1


@pytest.mark.parametrize("mode", ["gather", "mask"])
@pytest.mark.parametrize("shared", [True, False])
@torch.no_grad()
def test_mom_matches_per_memory_token_loop(shared, mode):
    """The paper's definition, memory by memory: update only routed memories, mix their readouts."""
    mixer = make("mom", shared_memory=shared, num_memories=3, topk=2, mode=mode)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    y, _ = mixer(x)
    N, H, K = 3 + shared, 2, 8
    r = mixer.route(x)
    q, k, v, _ = mixer.qkv(x)
    k, v = (t.view(2, 7, N, H, K) for t in (k, v))
    beta = torch.sigmoid(mixer.b_proj(x)).view(2, 7, N, H)
    g = -mixer.A_log.exp().view(N, H) * F.softplus(
        mixer.a_proj(x).view(2, 7, N, H) + mixer.dt_bias.view(N, H)
    )
    S = torch.zeros(2, N, H, K, K, dtype=torch.float64)
    outs = []
    for t in range(7):
        o_t = torch.zeros(2, H, K, dtype=torch.float64)
        for b in range(2):
            for m in range(N):
                is_shared = m == 3
                if not is_shared and not r.mask[b, t, m]:
                    continue  # not routed: memory m keeps its state and is not read
                kt, vt = k[b, t, m], v[b, t, m]
                Sm = torch.exp(g[b, t, m])[:, None, None] * S[b, m]
                pred = torch.einsum("hk,hkv->hv", kt, Sm)
                S[b, m] = Sm + kt[..., None] * (beta[b, t, m][:, None] * (vt - pred))[:, None, :]
                read = torch.einsum("hk,hkv->hv", q[b, t] * K**-0.5, S[b, m])
                o_t[b] += read if is_shared else r.weights[b, t, m] * read
        outs.append(o_t)
    o = mixer.o_norm(torch.stack(outs, 1), mixer.g_proj(x).view(2, 7, H, K))
    torch.testing.assert_close(y, mixer.o_proj(o.reshape(2, 7, D)), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
def test_mom_gather_equals_mask(shared):
    """Both prefill forms: same outputs, final states and gradients (with an initial state)."""
    mixer = make("mom", shared_memory=shared, num_memories=4, topk=2, chunk_size=8)
    _, state = mixer(torch.randn(2, 5, D, dtype=torch.float64))
    state = {k: t.detach() for k, t in state.items()}
    x = torch.randn(2, 19, D, dtype=torch.float64)
    results = []
    for mode in ("gather", "mask"):
        mixer.mode = mode
        mixer.zero_grad()
        xg = x.clone().requires_grad_()
        h0 = state["recurrent"].clone().requires_grad_()
        y, new = mixer(xg, {**state, "recurrent": h0})
        ((y * torch.linspace(-1, 1, D, dtype=torch.float64)).sum() + new["recurrent"].pow(2).sum()).backward()
        grads = [p.grad.clone() for p in mixer.parameters()]
        results.append((y, new["recurrent"], xg.grad, h0.grad, grads))
    (y_g, s_g, dx_g, dh_g, p_g), (y_m, s_m, dx_m, dh_m, p_m) = results
    for a, b in [(y_g, y_m), (s_g, s_m), (dx_g, dx_m), (dh_g, dh_m), *zip(p_g, p_m)]:
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_mom_load_balancing_loss_is_minimal_for_uniform_routing():
    M, k = 4, 2
    uniform = torch.full((50, M), 1 / M, dtype=torch.float64)
    idx = torch.stack([torch.randperm(M)[:k] for _ in range(50)])
    torch.testing.assert_close(load_balancing_loss(uniform, idx, M), torch.tensor(1.0, dtype=torch.float64))
    # every token prefers memories 0 and 1: the loss approaches M / k
    skewed = torch.tensor([0.6, 0.4 - 2e-3, 1e-3, 1e-3], dtype=torch.float64).expand(50, M)
    loss = load_balancing_loss(skewed, skewed.topk(k).indices, M)
    assert loss > 1.9 and loss <= M / k


def test_mom_aux_loss_train_vs_eval():
    mixer = make("mom")
    x = torch.randn(2, 6, D, dtype=torch.float64)
    mixer.train()
    mixer(x)
    aux = mixer.aux_loss
    assert aux is not None and aux.dim() == 0 and torch.isfinite(aux)
    assert 0.01 * 0.99 < aux < 0.01 * 2  # scale 0.01 times a value in [~1, M / topk]
    aux.backward()
    assert mixer.router.weight.grad is not None and mixer.router.weight.grad.abs().sum() > 0
    with torch.no_grad():
        mixer.router.weight.zero_()  # uniform router probabilities
    mixer(x)
    torch.testing.assert_close(mixer.aux_loss.detach(), torch.tensor(0.01, dtype=torch.float64))
    mixer.eval()
    mixer(x)
    assert mixer.aux_loss is None


def test_mom_kwarg_errors():
    with pytest.raises(ValueError, match=r"topk: expected an int in \[1, num_memories = 4\], got 5"):
        MixtureOfMemories(D, topk=5)
    with pytest.raises(ValueError, match=r"topk: expected an int in \[1, num_memories = 4\], got 0"):
        MixtureOfMemories(D, topk=0)
    with pytest.raises(ValueError, match="num_memories: expected a positive int, got 0"):
        MixtureOfMemories(D, num_memories=0)
    with pytest.raises(ValueError, match="aux_loss_scale: expected a number >= 0, got -1"):
        MixtureOfMemories(D, aux_loss_scale=-1)
    with pytest.raises(ValueError, match="mode: expected 'gather' or 'mask', got 'varlen'"):
        MixtureOfMemories(D, mode="varlen")
