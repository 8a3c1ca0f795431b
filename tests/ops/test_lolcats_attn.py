"""LoLCATs hybrid attention (sliding-window softmax + linear, one normaliser): the dense definition,
form parity with gradients, state carry, varlen, constant state size, softmax/linear limits, errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from _helpers import assert_parity, assert_rel_close, assert_results_close, make_qkv, rmse, run_op, tol_for
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops import (
    chunk_lolcats_attn,
    fused_recurrent_lolcats_attn,
    naive_attention,
    naive_lolcats_attn,
)
from linearlab.ops.lolcats_attn._common import STATE_KEYS, state_nbytes

FNS = {"naive": naive_lolcats_attn, "recurrent": fused_recurrent_lolcats_attn, "chunk": chunk_lolcats_attn}
PER_TOKEN = ("q", "k", "v", "fq", "fk")


def make_inputs(B, T, H=2, K=4, V=3, F=5, dtype=torch.float64, lf_tensor=True):
    """Per-token tensors, window factor in (0, 1) and a (tensor) linear factor, as run_op leaves."""
    q, k, v = make_qkv(B, T, H, K, V, dtype=dtype)
    # non-negative features (what a Hedgehog / elu+1 feature map gives)
    fq = torch.rand(B, T, H, F, dtype=torch.float64).to(dtype).requires_grad_()
    fk = torch.rand(B, T, H, F, dtype=torch.float64).to(dtype).requires_grad_()
    wf = torch.sigmoid(torch.randn(H, dtype=torch.float64)).to(dtype).requires_grad_()
    lf = (0.5 + torch.rand(H, dtype=torch.float64)).to(dtype).requires_grad_() if lf_tensor else 0.7
    return dict(q=q, k=k, v=v, fq=fq, fk=fk, window_factor=wf, linear_factor=lf)


def make_state(N, H, K, V, F, w, lens, dtype=torch.float64, garbage=0.0):
    """A random valid state; unused window slots hold ``garbage`` (the ops must ignore it)."""
    P = w - 1
    state = {
        "linear": torch.randn(N, H, F, V + 1, dtype=dtype),
        "window_k": torch.randn(N, H, P, K, dtype=dtype),
        "window_v": torch.randn(N, H, P, V, dtype=dtype),
        "window_fk": torch.rand(N, H, P, F, dtype=dtype),
        "window_len": torch.tensor(lens, dtype=torch.int64),
    }
    state["linear"][..., -1] = state["linear"][..., -1].abs() + 0.1  # z of non-negative features
    for n, length in enumerate(lens):
        for key in ("window_k", "window_v", "window_fk"):
            state[key][n, :, : P - length] = garbage
    return state


def flat(fn):
    """Adapter for the run_op harness: the state enters as separate tensors (so they get gradients)
    and leaves flattened into one tensor (window_len included, as a float)."""

    def call(*, h_linear=None, h_k=None, h_v=None, h_fk=None, h_len=None, output_final_state=False, **kw):
        state = None
        if h_linear is not None:
            state = dict(linear=h_linear, window_k=h_k, window_v=h_v, window_fk=h_fk, window_len=h_len)
        o, ht = fn(**kw, initial_state=state, output_final_state=output_final_state)
        if ht is None:
            return o, None
        return o, torch.cat([ht[key].flatten().to(ht["linear"].dtype) for key in STATE_KEYS])

    return call


def with_state(inp, state):
    inp = dict(inp)
    inp.update(
        h_linear=state["linear"].requires_grad_(),
        h_k=state["window_k"].requires_grad_(),
        h_v=state["window_v"].requires_grad_(),
        h_fk=state["window_fk"].requires_grad_(),
        h_len=state["window_len"],
    )
    return inp


def dense_lolcats(q, k, v, fq, fk, wf, w, lf, scale=None):
    """The formula with full [T, T] masks built from scratch (float64)."""
    q, k, v, fq, fk = (x.double() for x in (q, k, v, fq, fk))
    T = q.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    in_window = (j <= i) & (j > i - w)
    in_linear = j <= i - w
    s = scale * torch.einsum("bihk,bjhk->bhij", q, k)
    c = s.masked_fill(~in_window, float("-inf")).amax(-1, keepdim=True)
    a = torch.where(in_window, wf.double()[:, None, None] * torch.exp(s - c), 0.0)
    lf = lf.double()[:, None, None] if isinstance(lf, torch.Tensor) else lf
    b = torch.where(in_linear, lf * torch.einsum("bihf,bjhf->bhij", fq, fk), 0.0)
    p = a + b
    return torch.einsum("bhij,bjhv->bihv", p, v) / p.sum(-1).transpose(1, 2)[..., None]


# ----- definition --------------------------------------------------------------------------------


@pytest.mark.parametrize("T,w", [(1, 1), (13, 1), (13, 2), (20, 5), (9, 9), (7, 30)])
@pytest.mark.parametrize("lf_tensor", [False, True])
def test_naive_equals_dense_definition(T, w, lf_tensor):
    inp = make_inputs(2, T, lf_tensor=lf_tensor)
    o, _ = naive_lolcats_attn(**inp, window_size=w)
    expect = dense_lolcats(*(inp[n] for n in PER_TOKEN), inp["window_factor"], w, inp["linear_factor"])
    assert_rel_close(o, expect, 1e-12, "o")


def test_dense_definition_with_scale():
    inp = make_inputs(1, 15, lf_tensor=False)
    o, _ = chunk_lolcats_attn(**inp, window_size=4, scale=0.3, chunk_size=4)
    expect = dense_lolcats(*(inp[n] for n in PER_TOKEN), inp["window_factor"], 4, 0.7, scale=0.3)
    assert_rel_close(o, expect, 1e-12, "o")


def test_huge_window_is_causal_softmax_attention():
    """w >= T and window_factor = 1: no linear terms, the window terms are a softmax."""
    inp = make_inputs(2, 24)
    inp["window_factor"] = torch.ones(2, dtype=torch.float64)
    expect = naive_attention(inp["q"], inp["k"], inp["v"])
    for name, fn in FNS.items():
        for w in (24, 100):
            assert_rel_close(fn(**inp, window_size=w)[0], expect, 1e-12, f"{name} w={w}")


def test_zero_linear_factor_is_sliding_window_attention():
    """linear_factor = 0 leaves the window terms alone, whatever the window factor (it cancels)."""
    inp = make_inputs(2, 30, lf_tensor=False)
    inp["linear_factor"] = 0.0
    expect = naive_attention(inp["q"], inp["k"], inp["v"], window_size=6)
    for name, fn in FNS.items():
        assert_rel_close(fn(**inp, window_size=6)[0], expect, 1e-12, name)


def test_tiny_window_factor_is_linear_attention_on_older_tokens():
    """window_factor -> 0: queries with a non-empty linear part give normalised linear attention
    over ``j <= i - w`` up to O(window_factor); the first w queries still give the window softmax."""
    w, T = 5, 30
    inp = make_inputs(1, T, lf_tensor=False)
    inp["window_factor"] = torch.full((2,), 1e-12, dtype=torch.float64)
    fq, fk, v = inp["fq"], inp["fk"], inp["v"]
    i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
    b = torch.einsum("bihf,bjhf->bhij", fq, fk) * (j <= i - w)
    expect = torch.einsum("bhij,bjhv->bihv", b, v)[:, w:] / b.sum(-1).transpose(1, 2)[:, w:, :, None]
    swa = naive_attention(inp["q"], inp["k"], v, window_size=w)[:, :w]
    for name, fn in FNS.items():
        o, _ = fn(**inp, window_size=w)
        assert_rel_close(o[:, w:], expect, 1e-9, f"{name} linear rows")
        assert_rel_close(o[:, :w], swa, 1e-12, f"{name} window rows")


# ----- parity with gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("w", [1, 3, 7, 50])
def test_chunk_and_recurrent_equal_naive_float64(w):
    """Output, final state and every gradient (per-token inputs, factors, state tensors), for chunk
    sizes below, equal to and above the window and above T (which is not a chunk multiple)."""
    T, H, K, V, F = 27, 2, 4, 3, 5
    inp = with_state(make_inputs(2, T), make_state(2, H, K, V, F, w, [min(w - 1, 2), w - 1]))

    def run(fn):
        res = run_op(flat(fn), inp, window_size=w)
        if w == 1:  # the window is the query alone: a = window_factor whatever q and k are
            assert not res.pop("dq").any() and not res.pop("dk").any()
        # with w = 1 the window tensors of the state are empty: nothing to compare
        return {n: t for n, t in res.items() if t is None or t.numel()}

    ref = run(naive_lolcats_attn)
    forms = {f"chunk C={C}": partial(chunk_lolcats_attn, chunk_size=C) for C in (1, 4, 7, 64)}
    forms["recurrent"] = fused_recurrent_lolcats_attn
    for name, fn in forms.items():
        got = run(fn)
        assert_results_close(got, ref, 1e-10, f"{name} w={w}")
        assert got["dlinear_factor"] is not None and got["dh_linear"] is not None


def test_parity_without_initial_state():
    inp = make_inputs(2, 21, lf_tensor=False)
    for C in (4, 32):
        assert_parity(
            flat(partial(chunk_lolcats_attn, chunk_size=C)),
            flat(naive_lolcats_attn),
            {**inp, "window_size": 6},
        )


@settings(max_examples=15, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 24),
    w=st.integers(1, 30),
    C=st.sampled_from([1, 3, 8, 64]),
    fill=st.sampled_from([None, 0.0, 0.5, 1.0]),
)
def test_hypothesis_chunk_equals_naive(B, T, w, C, fill):
    """Random shapes, windows, chunk sizes and initial states (None, or window_len = fill * (w - 1))."""
    torch.manual_seed(T * 31 + w)
    H, K, V, F = 2, 3, 2, 4
    inp = {**make_inputs(B, T, H, K, V, F), "window_size": w}
    if fill is not None:
        inp = with_state(inp, make_state(B, H, K, V, F, w, [round(fill * (w - 1))] * B))

    def run(fn):
        res = run_op(flat(fn), inp)
        # a state entry the op never reads (all slots unused) gets None or zeros: both mean zero
        res = {
            n: (torch.zeros_like(inp[n[1:]]) if t is None and n.startswith("dh_") else t)
            for n, t in res.items()
        }
        return {n: t for n, t in res.items() if t is None or t.numel()}  # w = 1: empty window tensors

    ref = run(naive_lolcats_attn)
    got = run(partial(chunk_lolcats_attn, chunk_size=C))
    # a gradient that is zero analytically (e.g. d window_factor when every key is in the window:
    # the factor cancels between numerator and denominator) is rounding noise in both forms, so
    # a relative error means nothing there: check it is tiny in absolute terms instead
    for name in [n for n, t in ref.items() if t is not None and rmse(t) < 1e-13]:
        assert got[name] is None or rmse(got[name]) < 1e-12, f"T={T} w={w} C={C} {name}"
        del ref[name], got[name]
    assert_results_close(got, ref, 1e-10, f"T={T} w={w} C={C}", nonzero=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_parity_low_precision(form, dtype):
    H, K, V, F, w = 2, 8, 8, 8, 5
    inp = make_inputs(1, 40, H, K, V, F, dtype=dtype)
    inp = with_state(inp, make_state(1, H, K, V, F, w, [2], dtype=torch.float32))
    fn = partial(chunk_lolcats_attn, chunk_size=16) if form == "chunk" else fused_recurrent_lolcats_attn
    got, _ = assert_parity(flat(fn), flat(naive_lolcats_attn), {**inp, "window_size": w}, tol=tol_for(dtype))
    assert got["o"].dtype == dtype and got["ht"].dtype == torch.float32


def test_state_dtypes():
    inp = make_inputs(1, 10, dtype=torch.bfloat16)
    for name, fn in FNS.items():
        o, st = fn(**inp, window_size=4, output_final_state=True)
        assert o.dtype == torch.bfloat16, name
        assert all(st[key].dtype == torch.float32 for key in STATE_KEYS[:-1]), name
        assert st["window_len"].dtype == torch.int64, name


def test_gradcheck_chunk():
    H, K, V, F, w = 2, 3, 2, 3, 3
    inp = make_inputs(1, 7, H, K, V, F)
    st = make_state(1, H, K, V, F, w, [1])

    def fn(q, k, v, fq, fk, wf, lf, S, wk, wv, wfk):
        state = dict(linear=S, window_k=wk, window_v=wv, window_fk=wfk, window_len=st["window_len"])
        o, ht = chunk_lolcats_attn(q, k, v, fq, fk, wf, w, lf, None, state, True, chunk_size=2)
        return o, ht["linear"], ht["window_k"], ht["window_fk"]

    args = [inp[n] for n in (*PER_TOKEN, "window_factor", "linear_factor")]
    args += [st[key].requires_grad_() for key in STATE_KEYS[:-1]]
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8)


# ----- state ----------------------------------------------------------------------------------------


def split_run(fn, inp, cuts, w, state=None):
    outs = []
    for s, e in zip(cuts[:-1], cuts[1:]):
        piece = {n: (t[:, s:e] if n in PER_TOKEN else t) for n, t in inp.items()}
        o, state = fn(**piece, window_size=w, initial_state=state, output_final_state=True)
        outs.append(o)
    return torch.cat(outs, dim=1), state


def assert_states_close(got, ref, tol, what):
    assert got.keys() == ref.keys(), what
    assert torch.equal(got["window_len"], ref["window_len"]), f"{what} window_len"
    for key in STATE_KEYS[:-1]:
        assert got[key].shape == ref[key].shape, f"{what} {key}"
        if ref[key].numel():
            assert_rel_close(got[key], ref[key], tol, f"{what} {key}")


@pytest.mark.parametrize("w", [1, 6, 40])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_state_carry_equals_one_call(form, w):
    """Pieces shorter than the window, single tokens and long pieces, carried through the state."""
    inp = make_inputs(2, 33)
    fn = partial(chunk_lolcats_attn, chunk_size=4) if form == "chunk" else fused_recurrent_lolcats_attn
    o, ht = naive_lolcats_attn(**inp, window_size=w, output_final_state=True)
    o2, ht2 = split_run(fn, inp, [0, 3, 4, 5, 17, 19, 33], w)
    assert_rel_close(o2, o, 1e-12, "o")
    assert_states_close(ht2, ht, 1e-12, "state")


def test_recurrent_token_by_token_equals_chunk():
    w = 7
    inp = make_inputs(2, 30)
    h0 = make_state(2, 2, 4, 3, 5, w, [0, 4])
    o, ht = chunk_lolcats_attn(**inp, window_size=w, initial_state=h0, output_final_state=True)
    o2, ht2 = split_run(fused_recurrent_lolcats_attn, inp, list(range(31)), w, state=h0)
    assert_rel_close(o2, o, 1e-12, "o")
    assert_states_close(ht2, ht, 1e-12, "state")
    # prefill with chunk, then decode: the generation pattern
    o3, ht3 = split_run(chunk_lolcats_attn, inp, [0, 20], w, state=h0)
    o4, ht4 = split_run(fused_recurrent_lolcats_attn, inp, list(range(20, 31)), w, state=ht3)
    assert_rel_close(torch.cat([o3, o4], 1), o, 1e-12, "prefill + decode o")
    assert_states_close(ht4, ht, 1e-12, "prefill + decode state")


def test_state_holds_window_and_linear_sums():
    """After T >= w - 1 tokens the window slots hold the last w - 1 tokens, and the linear state
    sums fk^T [v, 1] over the others."""
    w, T = 5, 12
    inp = make_inputs(1, T)
    _, st = chunk_lolcats_attn(**inp, window_size=w, output_final_state=True)
    k, v, fk = inp["k"], inp["v"], inp["fk"]
    assert st["window_len"].tolist() == [w - 1]
    assert torch.equal(st["window_k"], k[:, T - w + 1 :].transpose(1, 2).detach())
    old = slice(0, T - w + 1)
    v1 = torch.cat([v[:, old], torch.ones_like(v[:, old, :, :1])], dim=-1)
    assert_rel_close(st["linear"], torch.einsum("bthf,bthv->bhfv", fk[:, old], v1), 1e-12, "linear")


def test_unused_window_slots_are_ignored():
    w = 6
    inp = make_inputs(2, 9)
    clean = make_state(2, 2, 4, 3, 5, w, [2, 0])
    dirty = make_state(2, 2, 4, 3, 5, w, [2, 0], garbage=float("nan"))
    for key in STATE_KEYS:  # same valid entries
        valid = ~torch.isnan(dirty[key]) if dirty[key].is_floating_point() else slice(None)
        dirty[key][valid] = clean[key][valid]
    for name, fn in FNS.items():
        o1, h1 = fn(**inp, window_size=w, initial_state=clean, output_final_state=True)
        o2, h2 = fn(**inp, window_size=w, initial_state=dirty, output_final_state=True)
        assert torch.equal(o1, o2), name
        assert_states_close(h2, h1, 1e-15, name)


def test_state_size_is_constant():
    w, H, K, V, F = 8, 2, 4, 3, 5
    big = make_inputs(1, 500, H, K, V, F, dtype=torch.float32, lf_tensor=False)
    with torch.no_grad():
        _, s10 = chunk_lolcats_attn(
            **{n: t[:, :10] if n in PER_TOKEN else t for n, t in big.items()},
            window_size=w,
            output_final_state=True,
        )
        _, s500 = chunk_lolcats_attn(**big, window_size=w, output_final_state=True)
        state = None
        for t in range(500):  # decoding, one token per call
            step = {n: x[:, t : t + 1] if n in PER_TOKEN else x for n, x in big.items()}
            _, state = fused_recurrent_lolcats_attn(
                **step, window_size=w, initial_state=state, output_final_state=True
            )
            if t == 9:
                assert state_nbytes(state) == state_nbytes(s10)
    assert state_nbytes(s10) == state_nbytes(s500) == state_nbytes(state)
    assert {key: s10[key].shape for key in s10} == {key: state[key].shape for key in state}
    assert state["window_k"].shape == (1, H, w - 1, K)
    assert_states_close(state, s500, 1e-5, "decode vs chunk")


# ----- varlen ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("form", sorted(FNS))
def test_varlen_equals_separate_sequences(form, h0):
    w, H, K, V, F = 4, 2, 4, 3, 5
    cu = torch.tensor([0, 9, 9, 11, 30])
    N = len(cu) - 1
    inp = make_inputs(1, 30, H, K, V, F)
    state = make_state(N, H, K, V, F, w, [3, 1, 0, 2]) if h0 else None
    fn = partial(chunk_lolcats_attn, chunk_size=4) if form == "chunk" else FNS[form]
    o, ht = fn(**inp, window_size=w, initial_state=state, cu_seqlens=cu, output_final_state=True)
    for n in range(N):
        s, e = cu[n].item(), cu[n + 1].item()
        h_n = None if state is None else {key: t[n : n + 1] for key, t in state.items()}
        ht_n = {key: t[n : n + 1] for key, t in ht.items()}
        if s == e:
            if h_n is None:
                assert state_nbytes(ht_n) > 0 and all(not t.any() for t in ht_n.values())
            else:
                assert_states_close(ht_n, h_n, 1e-15, f"empty seq {n}")
            continue
        piece = {m: (t[:, s:e] if m in PER_TOKEN else t) for m, t in inp.items()}
        on, hn = naive_lolcats_attn(**piece, window_size=w, initial_state=h_n, output_final_state=True)
        assert_rel_close(o[:, s:e], on, 1e-12, f"o seq {n}")
        assert_states_close(ht_n, hn, 1e-12, f"state seq {n}")


def test_varlen_gradients_match_naive():
    w, H, K, V, F = 3, 2, 4, 3, 5
    cu = torch.tensor([0, 5, 17])
    inp = with_state(make_inputs(1, 17, H, K, V, F), make_state(2, H, K, V, F, w, [2, 1]))
    assert_parity(
        flat(partial(chunk_lolcats_attn, chunk_size=4)),
        flat(naive_lolcats_attn),
        {**inp, "window_size": w, "cu_seqlens": cu},
    )


def test_final_state_is_none_unless_requested():
    inp = make_inputs(1, 5)
    for fn in FNS.values():
        assert fn(**inp, window_size=2)[1] is None


# ----- errors ----------------------------------------------------------------------------------------

ALL = pytest.mark.parametrize("fn", list(FNS.values()), ids=list(FNS))


def small():
    inp = make_inputs(1, 6)
    return {n: (t.detach() if isinstance(t, torch.Tensor) else t) for n, t in inp.items()}


@ALL
def test_error_qkv(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"q: expected 4 dims"):
        fn(**{**inp, "q": inp["q"][0]}, window_size=2)
    with pytest.raises(ValueError, match=r"k: shape \[1, 6, 2, 3\] must equal q's shape"):
        fn(**{**inp, "k": inp["k"][..., :3]}, window_size=2)
    with pytest.raises(ValueError, match=r"v: shape"):
        fn(**{**inp, "v": inp["v"][:, :3]}, window_size=2)


@ALL
def test_error_features(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"fq: expected shape \[B, T, H, F\] with \[B, T, H\] = \[1, 6, 2\]"):
        fn(**{**inp, "fq": inp["fq"][:, :4]}, window_size=2)
    with pytest.raises(ValueError, match=r"fk: shape \[1, 6, 2, 4\] must equal fq's shape \[1, 6, 2, 5\]"):
        fn(**{**inp, "fk": inp["fk"][..., :4]}, window_size=2)
    with pytest.raises(ValueError, match=r"fk: expected a torch.Tensor"):
        fn(**{**inp, "fk": None}, window_size=2)
    with pytest.raises(ValueError, match=r"fq: dtype torch.int64 is not supported"):
        fn(**{**inp, "fq": inp["fq"].long()}, window_size=2)


@ALL
def test_error_window_factor(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"window_factor: expected a float tensor \[H\] = \[2\].*got float"):
        fn(**{**inp, "window_factor": 0.5}, window_size=2)
    with pytest.raises(ValueError, match=r"window_factor: expected shape \[H\] = \[2\], got \[3\]"):
        fn(**{**inp, "window_factor": torch.full((3,), 0.5)}, window_size=2)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"window_factor: values must be in \(0, 1\].*got"):
            fn(**{**inp, "window_factor": torch.tensor([0.5, bad])}, window_size=2)


@ALL
def test_error_window_size(fn):
    inp = small()
    for bad in (0, -3, True, 2.0, None):
        with pytest.raises(ValueError, match=rf"window_size: expected an int >= 1.*got {bad!r}"):
            fn(**inp, window_size=bad)


@ALL
def test_error_linear_factor(fn):
    inp = small()
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match=r"linear_factor: expected a finite value >= 0, got"):
            fn(**{**inp, "linear_factor": bad}, window_size=2)
    for bad in (True, "1", None):
        with pytest.raises(ValueError, match=r"linear_factor: expected a float or a float tensor \[H\], got"):
            fn(**{**inp, "linear_factor": bad}, window_size=2)
    with pytest.raises(ValueError, match=r"linear_factor: expected .* shape \[H\] = \[2\], got .* \[1\]"):
        fn(**{**inp, "linear_factor": torch.ones(1)}, window_size=2)
    with pytest.raises(ValueError, match=r"linear_factor: values must be finite and >= 0, got -2.0"):
        fn(**{**inp, "linear_factor": torch.tensor([1.0, -2.0])}, window_size=2)


@ALL
def test_error_scale(fn):
    with pytest.raises(ValueError, match=r"scale: expected a float or None, got list"):
        fn(**small(), window_size=2, scale=[1.0])


@ALL
def test_error_output_final_state(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"output_final_state: expected a bool, got 'yes'"):
        fn(**inp, window_size=2, output_final_state="yes")


def test_error_chunk_size():
    inp = small()
    for bad in (0, True, 4.0):
        with pytest.raises(ValueError, match=rf"chunk_size: expected a positive int.*got {bad!r}"):
            chunk_lolcats_attn(**inp, window_size=2, chunk_size=bad)


@ALL
def test_error_cu_seqlens(fn):
    inp = small()
    with pytest.raises(ValueError, match=r"cu_seqlens: must be non-decreasing"):
        fn(**inp, window_size=2, cu_seqlens=torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match=r"cu_seqlens: must start at 0 and end at T = 6"):
        fn(**inp, window_size=2, cu_seqlens=torch.tensor([0, 5]))
    two = {n: (torch.cat([t, t]) if n in PER_TOKEN else t) for n, t in inp.items()}
    with pytest.raises(ValueError, match=r"cu_seqlens: packed sequences need batch size B == 1, got B = 2"):
        fn(**two, window_size=2, cu_seqlens=torch.tensor([0, 6]))
    # the state is per packed sequence: N = 2 here
    h1 = make_state(1, 2, 4, 3, 5, 3, [0])
    with pytest.raises(
        ValueError, match=r"initial_state\['linear'\]: expected shape \[2, 2, 5, 4\], got \[1"
    ):
        fn(**inp, window_size=3, cu_seqlens=torch.tensor([0, 2, 6]), initial_state=h1)


@ALL
def test_error_initial_state(fn):
    inp = small()
    good = make_state(1, 2, 4, 3, 5, 3, [1])
    with pytest.raises(ValueError, match=r"initial_state: expected a dict with keys .* got Tensor"):
        fn(**inp, window_size=3, initial_state=good["linear"])
    missing = {key: t for key, t in good.items() if key != "window_fk"}
    with pytest.raises(ValueError, match=r"initial_state: expected keys .* missing \['window_fk'\]"):
        fn(**inp, window_size=3, initial_state=missing)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        fn(**inp, window_size=3, initial_state={**good, "extra": good["linear"]})
    # a state of window 3 used with window 5: the window slots are [N, H, 4, D]
    with pytest.raises(
        ValueError, match=r"initial_state\['window_k'\]: expected shape \[1, 2, 4, 4\], got \[1, 2, 2, 4\]"
    ):
        fn(**inp, window_size=5, initial_state=good)
    with pytest.raises(
        ValueError, match=r"initial_state\['linear'\]: expected shape \[1, 2, 5, 4\], got \[1, 2, 5, 3\]"
    ):
        fn(**inp, window_size=3, initial_state={**good, "linear": good["linear"][..., :3]})
    with pytest.raises(
        ValueError,
        match=r"initial_state\['window_len'\]: values must be in \[0, window_size - 1\] = \[0, 2\], got \[3\]",
    ):
        fn(**inp, window_size=3, initial_state={**good, "window_len": torch.tensor([3])})
    with pytest.raises(ValueError, match=r"initial_state\['window_len'\]: expected an integer dtype"):
        fn(**inp, window_size=3, initial_state={**good, "window_len": torch.tensor([1.0])})
    with pytest.raises(ValueError, match=r"initial_state\['window_v'\]: expected a floating dtype"):
        fn(**inp, window_size=3, initial_state={**good, "window_v": good["window_v"].long()})
