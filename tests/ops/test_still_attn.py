"""STILL hybrid attention (softmax over window + salient + pending tokens, linear over the rest, one
normaliser): the dense definition, form parity with gradients, chunk-size invariance, state carry,
varlen, constant state size, causality, the lolcats / softmax limits, errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from _helpers import assert_parity, assert_rel_close, assert_results_close, make_qkv, rmse, run_op, tol_for
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops import (
    chunk_still_attn,
    fused_recurrent_still_attn,
    naive_attention,
    naive_lolcats_attn,
    naive_still_attn,
)
from linearlab.ops.still_attn._common import INT_KEYS, SCORE_KEYS, STATE_KEYS, state_nbytes

FNS = {"naive": naive_still_attn, "recurrent": fused_recurrent_still_attn, "chunk": chunk_still_attn}
FAST = {"recurrent": fused_recurrent_still_attn, "chunk": partial(chunk_still_attn, chunk_size=4)}
PER_TOKEN = ("q", "k", "v", "fq", "fk")
TOKEN_SLOTS = ("window", "pending", "salient")


def make_inputs(B, T, H=2, K=4, V=3, F=5, dtype=torch.float64):
    """Per-token tensors and a window factor in (0, 1), as run_op leaves."""
    q, k, v = make_qkv(B, T, H, K, V, dtype=dtype)
    fq = torch.rand(B, T, H, F, dtype=torch.float64).to(dtype).requires_grad_()
    fk = torch.rand(B, T, H, F, dtype=torch.float64).to(dtype).requires_grad_()
    wf = torch.sigmoid(torch.randn(H, dtype=torch.float64)).to(dtype).requires_grad_()
    return dict(q=q, k=k, v=v, fq=fq, fk=fk, window_factor=wf)


def pending_count(p, w, b):
    return max(0, p - max(p // b * b, w - 1))


def make_state(N, H, K, V, F, w, M, b, positions, dtype=torch.float64, garbage=0.0):
    """A random valid state at the given stream positions; unused slots hold ``garbage``."""
    P, R = w - 1, b - 1
    state = {"linear": torch.randn(N, H, F, V + 1, dtype=dtype)}
    state["linear"][..., -1] = state["linear"][..., -1].abs() + 0.1  # z of non-negative features
    for part, slots in (("window", P), ("pending", R), ("salient", M)):
        state[f"{part}_k"] = torch.randn(N, H, slots, K, dtype=dtype)
        state[f"{part}_v"] = torch.randn(N, H, slots, V, dtype=dtype)
        state[f"{part}_fk"] = torch.rand(N, H, slots, F, dtype=dtype)
        state[f"{part}_score"] = torch.rand(N, H, slots, dtype=torch.float64) * w
    state["salient_pos"] = torch.full((N, H, M), -1, dtype=torch.int64)
    for n, p in enumerate(positions):
        wl, pl = min(p, P), pending_count(p, w, b)
        decided = max(0, p - wl - pl)  # tokens older than pending + window
        for part, slots, used in (("window", P, wl), ("pending", R, pl)):
            for x in ("k", "v", "fk", "score"):
                state[f"{part}_{x}"][n, :, : slots - used] = garbage
        used = min(M, decided)
        for h in range(H):
            chosen = torch.randperm(decided)[:used].sort().values
            state["salient_pos"][n, h, :used] = chosen
        for x in ("k", "v", "fk", "score"):
            state[f"salient_{x}"][n, :, used:] = garbage
    state["position"] = torch.tensor(positions, dtype=torch.int64)
    return {key: state[key] for key in STATE_KEYS}


def flat(fn):
    """Adapter for the run_op harness: the state enters as separate tensors ``h_<key>`` (so they get
    gradients) and leaves flattened into one tensor (integer entries as floats)."""

    def call(*, output_final_state=False, **kw):
        state = {key: kw.pop(f"h_{key}") for key in STATE_KEYS if f"h_{key}" in kw}
        o, ht = fn(**kw, initial_state=state or None, output_final_state=output_final_state)
        if ht is None:
            return o, None
        return o, torch.cat([ht[key].flatten().to(ht["linear"].dtype) for key in STATE_KEYS])

    return call


def with_state(inp, state):
    """Add the state entries as ``h_<key>``; the token tensors and ``linear`` get gradients."""
    inp = dict(inp)
    for key, t in state.items():
        inp[f"h_{key}"] = t if key in INT_KEYS or key in SCORE_KEYS else t.requires_grad_()
    return inp


def args(w, M, b):
    return dict(window_size=w, budget=M, block_size=b)


def dense_still(q, k, v, fq, fk, wf, w, M, b, scale=None):
    """From scratch: the window softmax's column sums as saliency, the selection simulated with
    Python sets, then the formula with full [T, T] masks (float64, no state).

    Returns ``o`` and the final salient positions per (batch row, head)."""
    q, k, v, fq, fk = (x.detach().double() for x in (q, k, v, fq, fk))
    B, T, H = q.shape[:3]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    window = (j <= i) & (j > i - w)
    s = scale * torch.einsum("bihk,bjhk->bhij", q, k)
    saliency = torch.softmax(s.masked_fill(~window, float("-inf")), dim=-1).sum(dim=-2)  # [B, H, T]
    soft = window.repeat(B, H, 1, 1)
    finals = {}
    for n in range(B):
        for h in range(H):
            salient, pending = set(), []
            for p in range(T):
                for tok in salient | set(pending):
                    soft[n, h, p, tok] = True
                if p - w + 1 >= 0:
                    pending.append(p - w + 1)
                if (p + 1) % b == 0:
                    ranked = sorted(salient | set(pending), key=lambda t: (saliency[n, h, t].item(), t))
                    salient, pending = set(ranked[::-1][:M]), []
            finals[n, h] = sorted(salient)
    linear = (j <= i) & ~soft
    c = s.masked_fill(~soft, float("-inf")).amax(-1, keepdim=True)
    a = torch.where(soft, wf.detach().double()[:, None, None] * torch.exp(s - c), 0.0)
    a = a + torch.where(linear, torch.einsum("bihf,bjhf->bhij", fq, fk), 0.0)
    o = torch.einsum("bhij,bjhv->bihv", a, v) / a.sum(-1).transpose(1, 2)[..., None]
    return o, finals


def split_run(fn, inp, cuts, sel, state=None):
    outs = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        piece = {n: (t[:, s:e] if n in PER_TOKEN else t) for n, t in inp.items()}
        o, state = fn(**piece, **sel, initial_state=state, output_final_state=True)
        outs.append(o)
    return torch.cat(outs, dim=1), state


def assert_states_close(got, ref, tol, what):
    assert got.keys() == ref.keys(), what
    for key in INT_KEYS:
        assert torch.equal(got[key], ref[key]), f"{what} {key}: {got[key].tolist()} != {ref[key].tolist()}"
    for key in STATE_KEYS:
        assert got[key].shape == ref[key].shape, f"{what} {key}"
        if key not in INT_KEYS and ref[key].numel() and ref[key].abs().sum() > 0:
            assert_rel_close(got[key], ref[key], tol, f"{what} {key}")
        elif key not in INT_KEYS:
            assert not got[key].any(), f"{what} {key}: expected zeros"


# ----- definition ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "T,w,M,b",
    [
        (1, 1, 0, 1),
        (13, 1, 2, 1),
        (13, 2, 0, 3),
        (20, 3, 2, 4),
        (20, 5, 3, 2),
        (17, 4, 1, 5),
        (9, 9, 2, 2),
        (12, 3, 30, 3),
    ],
)
def test_naive_equals_dense_definition(T, w, M, b):
    inp = make_inputs(2, T)
    o, st_ = naive_still_attn(**inp, **args(w, M, b), output_final_state=True)
    expect, salient = dense_still(*(inp[n] for n in PER_TOKEN), inp["window_factor"], w, M, b)
    assert_rel_close(o, expect, 1e-12, "o")
    for (n, h), positions in salient.items():
        got = st_["salient_pos"][n, h]
        assert got[: len(positions)].tolist() == positions and (got[len(positions) :] == -1).all()


def test_dense_definition_with_scale_and_all_forms():
    inp = make_inputs(1, 26)
    expect, _ = dense_still(*(inp[n] for n in PER_TOKEN), inp["window_factor"], 4, 3, 3, scale=0.3)
    for name, fn in FNS.items():
        o, _ = fn(**inp, **args(4, 3, 3), scale=0.3)
        assert_rel_close(o, expect, 1e-12, name)


def test_budget_zero_and_block_one_is_lolcats():
    """b = 1: every token is decided right when it leaves the window; M = 0: it is summarised.
    That is LoLCATs' window + linear split with linear_factor 1."""
    inp = make_inputs(2, 30)
    for w in (1, 4, 9):
        expect, _ = naive_lolcats_attn(**inp, window_size=w)
        for name, fn in FNS.items():
            assert_rel_close(fn(**inp, **args(w, 0, 1))[0], expect, 1e-12, f"{name} w={w}")


def test_budget_zero_with_blocks_keeps_pending_tokens():
    """M = 0, b > 1 is not lolcats: a token stays a softmax term until the boundary after it left
    the window, so it equals lolcats only on the queries where the pending buffer is empty."""
    w, b, T = 4, 5, 30
    inp = make_inputs(1, T)
    lolcats, _ = naive_lolcats_attn(**inp, window_size=w)
    o, _ = naive_still_attn(**inp, **args(w, 0, b))
    # pending is empty for query i iff no token left the window since the last boundary
    empty = torch.tensor([pending_count(i, w, b) == 0 for i in range(T)])
    assert empty.sum() > 3 and (~empty).sum() > 3
    assert_rel_close(o[:, empty], lolcats[:, empty], 1e-12, "rows with no pending token")
    assert rel_diff(o[:, ~empty], lolcats[:, ~empty]) > 1e-3


def rel_diff(a, b):
    return rmse(a - b) / rmse(b)


def test_huge_budget_is_causal_softmax_attention():
    """M >= T and window_factor = 1: no token is ever summarised, all terms are a softmax."""
    inp = make_inputs(2, 24)
    inp["window_factor"] = torch.ones(2, dtype=torch.float64)
    expect = naive_attention(inp["q"], inp["k"], inp["v"])
    for name, fn in FNS.items():
        for w, M, b in ((3, 24, 4), (1, 100, 1), (7, 30, 5)):
            assert_rel_close(fn(**inp, **args(w, M, b))[0], expect, 1e-12, f"{name} w={w} M={M} b={b}")


def test_salient_tokens_are_the_top_budget():
    """The final salient set (at a boundary) is the top-M of every decided token by saliency."""
    w, M, b, T = 5, 4, 3, 30  # T is a multiple of b: the last position ends a block
    inp = make_inputs(1, T)
    _, st_ = chunk_still_attn(**inp, **args(w, M, b), output_final_state=True, chunk_size=8)
    q, k = inp["q"].detach(), inp["k"].detach()
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    s = torch.einsum("bihk,bjhk->bhij", q, k) / 2
    sal = torch.softmax(s.masked_fill((j > i) | (j <= i - w), float("-inf")), -1).sum(-2)[0]
    decided = T - w + 1
    for h in range(2):
        top = sal[h, :decided].topk(M).indices.sort().values
        assert st_["salient_pos"][0, h].tolist() == top.tolist()
        assert_rel_close(st_["salient_score"][0, h], sal[h, top], 1e-13, "scores")
    assert st_["pending_k"].abs().sum() == 0  # emptied at the boundary


# ----- parity with gradients ----------------------------------------------------------------------


def _drop_empty(res):
    return {n: t for n, t in res.items() if t is None or t.numel()}


@pytest.mark.parametrize("w,M,b", [(1, 2, 1), (3, 0, 4), (3, 2, 1), (4, 3, 3), (6, 1, 5), (2, 40, 2)])
def test_chunk_and_recurrent_equal_naive_float64(w, M, b):
    """Output, final state and every gradient (tokens, window factor, state tensors), chunk sizes
    below, equal to and above the block and window, and above T (which is not a chunk multiple)."""
    T, H, K, V, F = 27, 2, 4, 3, 5
    state = make_state(2, H, K, V, F, w, M, b, [11, 23])
    inp = with_state(make_inputs(2, T), state)

    def run(fn):
        res = _drop_empty(run_op(flat(fn), inp, **args(w, M, b)))
        if w == 1 and M == 0:  # the softmax set is the query alone: no gradient to q, k
            assert not res.pop("dq").any() and not res.pop("dk").any()
        return res

    ref = run(naive_still_attn)
    forms = {f"chunk C={C}": partial(chunk_still_attn, chunk_size=C) for C in (1, 3, 8, 64)}
    forms["recurrent"] = fused_recurrent_still_attn
    for name, fn in forms.items():
        got = run(fn)
        assert_results_close(got, ref, 1e-10, f"{name} w={w} M={M} b={b}", nonzero=False)
        for key in ("linear", "window_k", "salient_k", "salient_fk"):
            if f"dh_{key}" in ref:
                assert got[f"dh_{key}"] is not None and rmse(ref[f"dh_{key}"]) > 0, key


def test_parity_without_initial_state():
    inp = make_inputs(2, 21)
    for C in (4, 32):
        assert_parity(
            flat(partial(chunk_still_attn, chunk_size=C)), flat(naive_still_attn), {**inp, **args(5, 2, 3)}
        )
    assert_parity(flat(fused_recurrent_still_attn), flat(naive_still_attn), {**inp, **args(5, 2, 3)})


@settings(max_examples=20, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 24),
    w=st.integers(1, 9),
    M=st.integers(0, 6),
    b=st.integers(1, 6),
    C=st.sampled_from([1, 3, 8, 64]),
    start=st.sampled_from([None, 0, 5, 13]),
)
def test_hypothesis_chunk_and_recurrent_equal_naive(B, T, w, M, b, C, start):
    """Random shapes, selection parameters, chunk sizes and initial states (None, or at a position)."""
    torch.manual_seed(T * 31 + w * 7 + M + b)
    H, K, V, F = 2, 3, 2, 4
    inp = {**make_inputs(B, T, H, K, V, F), **args(w, M, b)}
    if start is not None:
        inp = with_state(inp, make_state(B, H, K, V, F, w, M, b, [start + n for n in range(B)]))

    def run(fn):
        res = run_op(flat(fn), inp)
        # a state entry the op never reads (all slots unused) gets None or zeros: both mean zero
        res = {
            n: (torch.zeros_like(inp[n[1:]]) if t is None and n.startswith("dh_") and n[1:] in inp else t)
            for n, t in res.items()
        }
        return _drop_empty(res)

    ref = run(naive_still_attn)
    for name, fn in (
        ("chunk", partial(chunk_still_attn, chunk_size=C)),
        ("recurrent", fused_recurrent_still_attn),
    ):
        got = run(fn)
        # gradients that are zero analytically (e.g. d window_factor when there is no linear term)
        # are rounding noise in both forms: check they are tiny instead of a relative error
        for n in [n for n, t in ref.items() if t is not None and rmse(t) < 1e-13]:
            assert got[n] is None or rmse(got[n]) < 1e-12, f"{name} T={T} w={w} M={M} b={b} {n}"
            del got[n]
        ref_n = {n: t for n, t in ref.items() if n in got}
        assert_results_close(got, ref_n, 1e-10, f"{name} T={T} w={w} M={M} b={b} C={C}", nonzero=False)


def test_chunk_size_invariance():
    """chunk_size changes neither the selection (exactly) nor the outputs, states and gradients."""
    w, M, b = 6, 3, 4
    inp = with_state(make_inputs(2, 50), make_state(2, 2, 4, 3, 5, w, M, b, [7, 30]))
    ref = run_op(flat(partial(chunk_still_attn, chunk_size=50)), inp, **args(w, M, b))
    _, st_ref = chunk_still_attn(
        **{n: t for n, t in inp.items() if not n.startswith("h_")}, **args(w, M, b), output_final_state=True
    )
    for C in (1, 2, 5, 16, 64):
        got = run_op(flat(partial(chunk_still_attn, chunk_size=C)), inp, **args(w, M, b))
        assert_results_close(got, ref, 1e-12, f"C={C}", nonzero=False)
        _, st_ = chunk_still_attn(
            **{n: t for n, t in inp.items() if not n.startswith("h_")},
            **args(w, M, b),
            output_final_state=True,
            chunk_size=C,
        )
        assert torch.equal(st_["salient_pos"], st_ref["salient_pos"]), f"C={C}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_parity_low_precision(form, dtype):
    H, K, V, F, w, M, b = 2, 8, 8, 8, 5, 4, 3
    inp = make_inputs(1, 40, H, K, V, F, dtype=dtype)
    inp = with_state(inp, make_state(1, H, K, V, F, w, M, b, [20], dtype=torch.float32))
    fn = partial(chunk_still_attn, chunk_size=16) if form == "chunk" else fused_recurrent_still_attn
    got, _ = assert_parity(flat(fn), flat(naive_still_attn), {**inp, **args(w, M, b)}, tol=tol_for(dtype))
    assert got["o"].dtype == dtype and got["ht"].dtype == torch.float32


def test_state_dtypes():
    inp = make_inputs(1, 10, dtype=torch.bfloat16)
    for name, fn in FNS.items():
        o, st_ = fn(**inp, **args(4, 2, 3), output_final_state=True)
        assert o.dtype == torch.bfloat16, name
        for key in STATE_KEYS:
            expect = torch.int64 if key in INT_KEYS else torch.float64 if key in SCORE_KEYS else torch.float32
            assert st_[key].dtype == expect, f"{name} {key}"


def test_gradcheck_chunk():
    H, K, V, F, w, M, b = 1, 3, 2, 3, 3, 2, 2
    inp = make_inputs(1, 8, H, K, V, F)
    st0 = make_state(1, H, K, V, F, w, M, b, [6])
    grads = (
        "linear",
        "window_k",
        "window_v",
        "window_fk",
        "pending_k",
        "salient_k",
        "salient_v",
        "salient_fk",
    )

    def fn(q, k, v, fq, fk, wf, *tensors):
        state = {**st0, **dict(zip(grads, tensors))}
        o, ht = chunk_still_attn(q, k, v, fq, fk, wf, w, M, b, None, state, True, chunk_size=2)
        return o, ht["linear"], ht["salient_k"], ht["window_fk"]

    tensors = [inp[n] for n in (*PER_TOKEN, "window_factor")]
    tensors += [st0[key].clone().requires_grad_() for key in grads]
    assert torch.autograd.gradcheck(fn, tensors, eps=1e-6, atol=1e-8)


# ----- causality -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", sorted(FNS))
def test_outputs_never_depend_on_later_tokens(form):
    """Perturbing token t (all its inputs) leaves every earlier output bit-identical."""
    w, M, b, T = 4, 2, 3, 24
    fn = partial(chunk_still_attn, chunk_size=8) if form == "chunk" else FNS[form]
    inp = {n: t.detach() for n, t in make_inputs(1, T).items()}
    h0 = make_state(1, 2, 4, 3, 5, w, M, b, [8])
    o, _ = fn(**inp, **args(w, M, b), initial_state=h0)
    for t in (0, 5, 9, 16, 23):
        bumped = dict(inp)
        for n in PER_TOKEN:
            x = inp[n].clone()
            x[:, t] = x[:, t] * 3 + 1
            bumped[n] = x
        o2, _ = fn(**bumped, **args(w, M, b), initial_state=h0)
        assert torch.equal(o2[:, :t], o[:, :t]), f"{form}: outputs before {t} changed"
        assert not torch.equal(o2[:, t], o[:, t])


# ----- state ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("w,M,b", [(1, 2, 1), (6, 3, 4), (3, 0, 5), (40, 2, 3)])
@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_state_carry_equals_one_call(form, w, M, b):
    """Pieces shorter than a block, single tokens and long pieces, cut mid-block, carried through the state."""
    inp = make_inputs(2, 33)
    fn = partial(chunk_still_attn, chunk_size=4) if form == "chunk" else FNS[form]
    o, ht = naive_still_attn(**inp, **args(w, M, b), output_final_state=True)
    o2, ht2 = split_run(fn, inp, [0, 3, 4, 5, 17, 19, 33], args(w, M, b))
    assert_rel_close(o2, o, 1e-12, "o")
    assert_states_close(ht2, ht, 1e-12, "state")


def test_prefill_then_decode_equals_one_call():
    w, M, b = 7, 3, 4
    inp = make_inputs(2, 30)
    h0 = make_state(2, 2, 4, 3, 5, w, M, b, [0, 13])
    o, ht = chunk_still_attn(**inp, **args(w, M, b), initial_state=h0, output_final_state=True)
    o2, ht2 = split_run(fused_recurrent_still_attn, inp, list(range(31)), args(w, M, b), state=h0)
    assert_rel_close(o2, o, 1e-12, "token by token o")
    assert_states_close(ht2, ht, 1e-12, "token by token state")
    o3, ht3 = split_run(chunk_still_attn, inp, [0, 18], args(w, M, b), state=h0)
    o4, ht4 = split_run(fused_recurrent_still_attn, inp, list(range(18, 31)), args(w, M, b), state=ht3)
    assert_rel_close(torch.cat([o3, o4], 1), o, 1e-12, "prefill + decode o")
    assert_states_close(ht4, ht, 1e-12, "prefill + decode state")


def test_state_holds_window_pending_and_linear_sums():
    """Mid-block the state holds the last w - 1 tokens, the undecided ones before them, and the
    linear state sums fk^T [v, 1] over exactly the tokens that are in none of the three buffers."""
    w, M, b, T = 5, 3, 4, 18  # 18 tokens: last boundary after 16, tokens 12 and 13 are pending
    inp = make_inputs(1, T)
    _, st_ = chunk_still_attn(**inp, **args(w, M, b), output_final_state=True, chunk_size=5)
    k, v, fk = (inp[n].detach() for n in ("k", "v", "fk"))
    assert st_["position"].tolist() == [T]
    assert torch.equal(st_["window_k"], k[:, T - w + 1 :].transpose(1, 2))
    assert torch.equal(st_["pending_k"][:, :, 1:], k[:, 12:14].transpose(1, 2))
    assert not st_["pending_k"][:, :, 0].any()
    for h in range(2):
        pos = st_["salient_pos"][0, h]
        assert len(pos) == M and (pos >= 0).all() and (pos < 12).all()
        assert torch.equal(st_["salient_k"][0, h], k[0, pos, h])
        summarised = sorted(set(range(12)) - set(pos.tolist()))
        v1 = torch.cat([v[0, summarised, h], torch.ones(len(summarised), 1, dtype=v.dtype)], -1)
        assert_rel_close(st_["linear"][0, h], fk[0, summarised, h].T @ v1, 1e-12, "linear")


def test_unused_slots_are_ignored_and_salient_order_is_normalised():
    w, M, b = 6, 3, 4
    inp = make_inputs(2, 9)
    clean = make_state(2, 2, 4, 3, 5, w, M, b, [2, 21])
    dirty = make_state(2, 2, 4, 3, 5, w, M, b, [2, 21], garbage=float("nan"))
    for key in STATE_KEYS:  # same valid entries
        if dirty[key].is_floating_point():
            ok = ~torch.isnan(dirty[key])
            dirty[key][ok] = clean[key][ok]
        else:
            dirty[key] = clean[key].clone()
    # shuffle the salient slots of the dirty state: the ops put them back in time order
    perm = torch.tensor([2, 0, 1])
    for key in ("salient_k", "salient_v", "salient_fk", "salient_score", "salient_pos"):
        dirty[key] = dirty[key][:, :, perm]
    for name, fn in FNS.items():
        o1, h1 = fn(**inp, **args(w, M, b), initial_state=clean, output_final_state=True)
        o2, h2 = fn(**inp, **args(w, M, b), initial_state=dirty, output_final_state=True)
        assert torch.isfinite(o2).all() and torch.equal(o1, o2), name
        assert_states_close(h2, h1, 1e-15, name)


def test_state_size_is_constant():
    w, M, b, H, K, V, F = 8, 4, 4, 2, 4, 3, 5
    big = make_inputs(1, 500, H, K, V, F, dtype=torch.float32)
    sel = args(w, M, b)
    with torch.no_grad():
        _, s10 = chunk_still_attn(
            **{n: t[:, :10] if n in PER_TOKEN else t for n, t in big.items()}, **sel, output_final_state=True
        )
        _, s500 = chunk_still_attn(**big, **sel, output_final_state=True)
        state = None
        for t in range(500):  # decoding, one token per call
            step = {n: x[:, t : t + 1] if n in PER_TOKEN else x for n, x in big.items()}
            _, state = fused_recurrent_still_attn(**step, **sel, initial_state=state, output_final_state=True)
            if t == 9:
                assert state_nbytes(state) == state_nbytes(s10)
    assert state_nbytes(s10) == state_nbytes(s500) == state_nbytes(state)
    assert {key: s10[key].shape for key in s10} == {key: state[key].shape for key in state}
    assert state["salient_k"].shape == (1, H, M, K) and state["pending_k"].shape == (1, H, b - 1, K)
    assert_states_close(state, s500, 1e-5, "decode vs chunk")


# ----- varlen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("form", sorted(FNS))
def test_varlen_equals_separate_sequences(form, h0):
    w, M, b, H, K, V, F = 4, 2, 3, 2, 4, 3, 5
    cu = torch.tensor([0, 9, 9, 11, 30])
    N = len(cu) - 1
    inp = make_inputs(1, 30, H, K, V, F)
    state = make_state(N, H, K, V, F, w, M, b, [3, 1, 0, 14]) if h0 else None
    fn = partial(chunk_still_attn, chunk_size=4) if form == "chunk" else FNS[form]
    o, ht = fn(**inp, **args(w, M, b), initial_state=state, cu_seqlens=cu, output_final_state=True)
    for n in range(N):
        s, e = cu[n].item(), cu[n + 1].item()
        h_n = None if state is None else {key: t[n : n + 1] for key, t in state.items()}
        ht_n = {key: t[n : n + 1] for key, t in ht.items()}
        if s == e:
            if h_n is None:
                assert ht_n["position"].tolist() == [0] and (ht_n["salient_pos"] == -1).all()
                assert all(not t.any() for key, t in ht_n.items() if key not in INT_KEYS)
            else:
                assert_states_close(ht_n, h_n, 1e-15, f"empty seq {n}")
            continue
        piece = {m: (t[:, s:e] if m in PER_TOKEN else t) for m, t in inp.items()}
        on, hn = naive_still_attn(**piece, **args(w, M, b), initial_state=h_n, output_final_state=True)
        assert_rel_close(o[:, s:e], on, 1e-12, f"o seq {n}")
        assert_states_close(ht_n, hn, 1e-12, f"state seq {n}")


def test_varlen_gradients_match_naive():
    w, M, b, H, K, V, F = 3, 2, 2, 2, 4, 3, 5
    cu = torch.tensor([0, 5, 17])
    inp = with_state(make_inputs(1, 17, H, K, V, F), make_state(2, H, K, V, F, w, M, b, [9, 4]))
    for fn in (partial(chunk_still_attn, chunk_size=4), fused_recurrent_still_attn):
        assert_parity(
            flat(fn), flat(naive_still_attn), {**inp, **args(w, M, b), "cu_seqlens": cu}, nonzero=False
        )


def test_final_state_is_none_unless_requested():
    inp = make_inputs(1, 5)
    for fn in FNS.values():
        assert fn(**inp, **args(2, 1, 2))[1] is None


# ----- errors ----------------------------------------------------------------------------------------

ALL = pytest.mark.parametrize("fn", list(FNS.values()), ids=list(FNS))


def small():
    inp = make_inputs(1, 6)
    return {n: t.detach() for n, t in inp.items()}


SEL = args(2, 1, 2)


@ALL
def test_error_qkv(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"q: expected 4 dims"):
        fn(**{**inp, "q": inp["q"][0]}, **SEL)
    with pytest.raises(ValueError, match=r"k: shape \[1, 6, 2, 3\] must equal q's shape"):
        fn(**{**inp, "k": inp["k"][..., :3]}, **SEL)
    with pytest.raises(ValueError, match=r"v: shape"):
        fn(**{**inp, "v": inp["v"][:, :3]}, **SEL)


@ALL
def test_error_features(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"fq: expected shape \[B, T, H, F\] with \[B, T, H\] = \[1, 6, 2\]"):
        fn(**{**inp, "fq": inp["fq"][:, :4]}, **SEL)
    with pytest.raises(ValueError, match=r"fk: shape \[1, 6, 2, 4\] must equal fq's shape \[1, 6, 2, 5\]"):
        fn(**{**inp, "fk": inp["fk"][..., :4]}, **SEL)
    with pytest.raises(ValueError, match=r"fk: expected a torch.Tensor"):
        fn(**{**inp, "fk": None}, **SEL)
    with pytest.raises(ValueError, match=r"fq: dtype torch.int64 is not supported"):
        fn(**{**inp, "fq": inp["fq"].long()}, **SEL)


@ALL
def test_error_window_factor(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"window_factor: expected a float tensor \[H\] = \[2\].*got float"):
        fn(**{**inp, "window_factor": 0.5}, **SEL)
    with pytest.raises(ValueError, match=r"window_factor: expected shape \[H\] = \[2\], got \[3\]"):
        fn(**{**inp, "window_factor": torch.full((3,), 0.5)}, **SEL)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"window_factor: values must be in \(0, 1\].*got"):
            fn(**{**inp, "window_factor": torch.tensor([0.5, bad])}, **SEL)


@ALL
@pytest.mark.parametrize(
    "name,low,bads",
    [
        ("window_size", 1, (0, -3, True, 2.0, None)),
        ("budget", 0, (-1, False, 1.5, "2")),
        ("block_size", 1, (0, -2, True, 4.0)),
    ],
)
def test_error_selection_ints(fn, name, low, bads):
    for bad in bads:
        with pytest.raises(ValueError, match=rf"{name}: expected an int >= {low} .*got {bad!r}"):
            fn(**small(), **{**SEL, name: bad})


@ALL
def test_error_scale(fn):
    with pytest.raises(ValueError, match=r"scale: expected a float or None, got list"):
        fn(**small(), **SEL, scale=[1.0])


@ALL
def test_error_output_final_state(fn):
    with pytest.raises(ValueError, match=r"output_final_state: expected a bool, got 'yes'"):
        fn(**small(), **SEL, output_final_state="yes")


def test_error_chunk_size():
    for bad in (0, True, 4.0):
        with pytest.raises(ValueError, match=rf"chunk_size: expected a positive int.*got {bad!r}"):
            chunk_still_attn(**small(), **SEL, chunk_size=bad)


@ALL
def test_error_cu_seqlens(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"cu_seqlens: must be non-decreasing"):
        fn(**inp, **SEL, cu_seqlens=torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match=r"cu_seqlens: must start at 0 and end at T = 6"):
        fn(**inp, **SEL, cu_seqlens=torch.tensor([0, 5]))
    two = {n: (torch.cat([t, t]) if n in PER_TOKEN else t) for n, t in inp.items()}
    with pytest.raises(ValueError, match=r"cu_seqlens: packed sequences need batch size B == 1, got B = 2"):
        fn(**two, **SEL, cu_seqlens=torch.tensor([0, 6]))
    # the state is per packed sequence: N = 2 here
    h1 = make_state(1, 2, 4, 3, 5, 2, 1, 2, [0])
    with pytest.raises(
        ValueError, match=r"initial_state\['linear'\]: expected shape \[2, 2, 5, 4\], got \[1"
    ):
        fn(**inp, **SEL, cu_seqlens=torch.tensor([0, 2, 6]), initial_state=h1)


@ALL
def test_error_initial_state(fn):
    inp = small()
    sel = args(3, 2, 4)
    good = make_state(1, 2, 4, 3, 5, 3, 2, 4, [7])
    with pytest.raises(ValueError, match=r"initial_state: expected a dict with keys .* got Tensor"):
        fn(**inp, **sel, initial_state=good["linear"])
    missing = {key: t for key, t in good.items() if key != "pending_fk"}
    with pytest.raises(ValueError, match=r"initial_state: expected keys .* missing \['pending_fk'\]"):
        fn(**inp, **sel, initial_state=missing)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        fn(**inp, **sel, initial_state={**good, "extra": good["linear"]})
    # a state made for other selection parameters: the slot counts differ
    with pytest.raises(
        ValueError, match=r"initial_state\['window_k'\]: expected shape \[1, 2, 4, 4\], got \[1, 2, 2, 4\]"
    ):
        fn(**inp, **{**sel, "window_size": 5}, initial_state=good)
    with pytest.raises(
        ValueError, match=r"initial_state\['pending_k'\]: expected shape \[1, 2, 1, 4\], got \[1, 2, 3, 4\]"
    ):
        fn(**inp, **{**sel, "block_size": 2}, initial_state=good)
    with pytest.raises(
        ValueError, match=r"initial_state\['salient_k'\]: expected shape \[1, 2, 5, 4\], got \[1, 2, 2, 4\]"
    ):
        fn(**inp, **{**sel, "budget": 5}, initial_state=good)
    with pytest.raises(
        ValueError, match=r"initial_state\['salient_score'\]: expected shape \[1, 2, 2\], got \[1, 2, 3\]"
    ):
        fn(**inp, **sel, initial_state={**good, "salient_score": torch.zeros(1, 2, 3, dtype=torch.float64)})
    with pytest.raises(ValueError, match=r"initial_state\['position'\]: expected an integer dtype"):
        fn(**inp, **sel, initial_state={**good, "position": torch.tensor([1.0])})
    with pytest.raises(ValueError, match=r"initial_state\['position'\]: values must be >= 0, got -1"):
        fn(**inp, **sel, initial_state={**good, "position": torch.tensor([-1])})
    with pytest.raises(ValueError, match=r"initial_state\['salient_pos'\]: values must be >= -1, got -2"):
        fn(**inp, **sel, initial_state={**good, "salient_pos": torch.full((1, 2, 2), -2)})
    with pytest.raises(ValueError, match=r"initial_state\['window_v'\]: expected a floating dtype"):
        fn(**inp, **sel, initial_state={**good, "window_v": good["window_v"].long()})
