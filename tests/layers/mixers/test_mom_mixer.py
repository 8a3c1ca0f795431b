"""``mom`` (``layers/mixers/mom.py``): Mixture-of-Memories routing, memories and load balancing.

Checked against the paper's definition written out memory by memory; the two prefill forms
(``gather``, ``mask``) against each other. The shared mixer contract is in
``tests/layers/test_mixers_contract.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from linearlab.layers.mixers.mom import MixtureOfMemories, Routing, load_balancing_loss

D = 16


def make(**kwargs) -> MixtureOfMemories:
    return MixtureOfMemories(D, num_heads=2, **kwargs).double()


def test_mom_routes_each_token_to_exactly_topk():
    mixer = make(num_memories=5, topk=3)
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
    mixer = make(mode=mode)
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
    mixer = make(shared_memory=shared, num_memories=3, topk=2, mode=mode)
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
    mixer = make(shared_memory=shared, num_memories=4, topk=2, chunk_size=8)
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


@pytest.mark.parametrize("memories, topk, gathered", [(2, 2, False), (4, 1, True)])
def test_mom_gather_falls_back_to_mask_when_padding_covers_the_sequence(
    memories, topk, gathered, monkeypatch
):
    """With M = 2 and top-2 every memory gets every token, so the gathered form would pad to T:
    the masked form runs instead. With top-1 of 4 over 64 tokens the longest memory (here at most
    32 tokens) pads to 32 chunks-of-32 steps, and the gathered form runs."""
    torch.manual_seed(0)
    mixer = make(num_memories=memories, topk=topk)
    calls = []
    real = mixer._run_gathered
    monkeypatch.setattr(mixer, "_run_gathered", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 64, D, dtype=torch.float64)
    longest = int(mixer.route(x).mask.sum(1).max())
    mixer(x)
    assert bool(calls) == gathered
    assert (longest == 64) if not gathered else (longest <= 32)


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
    mixer = make()
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
