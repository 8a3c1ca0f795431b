"""Simple GLA / retention ops: naive vs recurrent vs chunk on outputs, final states and every gradient."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from _helpers import (
    assert_parity,
    assert_rel_close,
    assert_results_close,
    make_log_gate,
    make_qkv,
    run_op,
    time_reversed_reference,
    v_first_reference,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops import (
    chunk_retention,
    chunk_simple_gla,
    fused_recurrent_retention,
    fused_recurrent_simple_gla,
    naive_recurrent_simple_gla,
)


def make_inputs(B, T, H, K, V, dtype=torch.float64, gates="both", h0=True, low=-1.0):
    q, k, v = make_qkv(B, T, H, K, V, dtype=dtype)
    g = make_log_gate(B, T, H, low=low, dtype=dtype) if gates in ("g", "both") else None
    g_gamma = make_log_gate(H, low=-0.5, dtype=dtype) if gates in ("g_gamma", "both") else None
    state_dt = torch.float64 if dtype == torch.float64 else torch.float32
    h = torch.randn(B, H, K, V, dtype=state_dt).requires_grad_() if h0 else None
    return dict(q=q, k=k, v=v, g=g, g_gamma=g_gamma, initial_state=h)


FORMS = {
    "recurrent": fused_recurrent_simple_gla,
    "chunk16": partial(chunk_simple_gla, chunk_size=16),
    "chunk64": chunk_simple_gla,
}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("gates", ["g", "g_gamma", "both", "none"])
@pytest.mark.parametrize("shape", [(2, 37, 3, 5, 7), (1, 1, 2, 4, 4), (1, 70, 2, 8, 3)])
def test_parity_float64(form, gates, shape):
    inp = make_inputs(*shape, gates=gates)
    assert_parity(FORMS[form], naive_recurrent_simple_gla, inp, what=f"{form}/{gates}/{shape}")


@pytest.mark.parametrize("form", sorted(FORMS))
def test_parity_float32(form):
    inp = make_inputs(2, 45, 2, 16, 8, dtype=torch.float32)
    res, _ = assert_parity(FORMS[form], naive_recurrent_simple_gla, inp, what=form)
    assert res["o"].dtype == torch.float32 and res["ht"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_half_precision_inputs(form, dtype):
    inp = make_inputs(1, 40, 2, 16, 16, dtype=dtype)
    res, _ = assert_parity(FORMS[form], naive_recurrent_simple_gla, inp, what=form)
    assert res["o"].dtype == dtype, "o must come back in the input dtype"
    assert res["ht"].dtype == torch.float32, "the state is kept in float32"


def test_naive_equals_quadratic_definition():
    """The naive loop equals ``o = ((scale Q K^T) * D) V + (Q * exp(cum g)) S_0`` with
    ``D_ij = exp(G_i - G_j)`` (j <= i), computed here directly on small T."""
    inp = make_inputs(2, 19, 3, 4, 5)
    q, k, v, g, gg, h0 = (inp[n] for n in ("q", "k", "v", "g", "g_gamma", "initial_state"))
    o, ht = naive_recurrent_simple_gla(**inp, output_final_state=True)
    G = (g + gg).cumsum(1).transpose(1, 2)  # [B, H, T]
    T = q.shape[1]
    D = torch.exp(G[..., :, None] - G[..., None, :]) * torch.ones(T, T, dtype=torch.float64).tril()
    scale = q.shape[-1] ** -0.5
    scores = torch.einsum("bihk,bjhk->bhij", q, k) * scale * D
    expect = torch.einsum("bhij,bjhv->bihv", scores, v)
    expect = expect + scale * torch.einsum("bihk,bhi,bhkv->bihv", q, G.exp(), h0)
    assert_rel_close(o, expect, 1e-12, "o")
    decay_to_end = torch.exp(G[..., -1:] - G)  # [B, H, T]
    expect_ht = G[..., -1].exp()[..., None, None] * h0 + torch.einsum(
        "bjhk,bhj,bjhv->bhkv", k, decay_to_end, v
    )
    assert_rel_close(ht, expect_ht, 1e-12, "ht")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_gradcheck(form):
    fn = (
        (lambda *a: chunk_simple_gla(*a[:5], initial_state=a[5], output_final_state=True, chunk_size=3))
        if form == "chunk"
        else (lambda *a: fused_recurrent_simple_gla(*a[:5], initial_state=a[5], output_final_state=True))
    )
    inp = make_inputs(1, 7, 2, 3, 2)
    args = tuple(inp[n] for n in ("q", "k", "v", "g", "g_gamma", "initial_state"))
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-8)


def test_chunk_size_invariance():
    inp = make_inputs(1, 100, 2, 8, 6)
    ref = run_op(chunk_simple_gla, inp, chunk_size=64)
    for C in (16, 32, 1, 7, 128):
        assert_results_close(run_op(chunk_simple_gla, inp, chunk_size=C), ref, 1e-12, f"C={C}")


@pytest.mark.parametrize("fn", [chunk_simple_gla, fused_recurrent_simple_gla], ids=["chunk", "recurrent"])
def test_state_carry_over(fn):
    inp = make_inputs(2, 53, 2, 4, 3)
    o, ht = fn(**inp, output_final_state=True)
    cut = 29
    first = {n: (t[:, :cut] if n in ("q", "k", "v", "g") else t) for n, t in inp.items()}
    second = {n: (t[:, cut:] if n in ("q", "k", "v", "g") else t) for n, t in inp.items()}
    o1, h1 = fn(**first, output_final_state=True)
    second["initial_state"] = h1
    o2, h2 = fn(**second, output_final_state=True)
    assert_rel_close(torch.cat([o1, o2], 1), o, 1e-12, "o")
    assert_rel_close(h2, ht, 1e-12, "ht")


def test_token_by_token_decoding_equals_chunk():
    inp = make_inputs(2, 20, 2, 4, 5)
    o, ht = chunk_simple_gla(**inp, output_final_state=True)
    state, outs = inp["initial_state"], []
    for t in range(20):
        step = {n: inp[n][:, t : t + 1] for n in ("q", "k", "v", "g")}
        ot, state = fused_recurrent_simple_gla(
            **step, g_gamma=inp["g_gamma"], initial_state=state, output_final_state=True
        )
        outs.append(ot)
    assert_rel_close(torch.cat(outs, 1), o, 1e-12, "o")
    assert_rel_close(state, ht, 1e-12, "ht")


@pytest.mark.parametrize(
    "fn",
    [naive_recurrent_simple_gla, fused_recurrent_simple_gla, chunk_simple_gla],
    ids=["naive", "recurrent", "chunk"],
)
def test_varlen_equals_separate_sequences(fn):
    cu = torch.tensor([0, 5, 5, 23, 40])  # includes an empty sequence
    N, H, K, V = 4, 2, 4, 3
    inp = make_inputs(1, 40, H, K, V, h0=False)
    del inp["initial_state"]
    h0 = torch.randn(N, H, K, V, dtype=torch.float64).requires_grad_()
    o, ht = fn(**inp, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    assert o.shape == (1, 40, H, V) and ht.shape == (N, H, K, V)
    for n in range(N):
        s, e = cu[n].item(), cu[n + 1].item()
        if e == s:
            assert torch.equal(ht[n], h0[n]), "an empty sequence must pass its state through"
            continue
        piece = {m: (t[:, s:e] if m in ("q", "k", "v", "g") else t) for m, t in inp.items()}
        on, hn = naive_recurrent_simple_gla(**piece, initial_state=h0[n : n + 1], output_final_state=True)
        assert_rel_close(o[:, s:e], on, 1e-12, f"o seq {n}")
        assert_rel_close(ht[n : n + 1], hn, 1e-12, f"ht seq {n}")
    o.sum().backward()
    assert h0.grad is not None and torch.isfinite(h0.grad).all()


@settings(max_examples=12, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 40),
    H=st.integers(1, 3),
    K=st.integers(1, 6),
    V=st.integers(1, 6),
    C=st.sampled_from([1, 3, 8, 16, 64]),
    gates=st.sampled_from(["g", "g_gamma", "both", "none"]),
)
def test_hypothesis_shapes(B, T, H, K, V, C, gates):
    torch.manual_seed(B * 1000 + T * 10 + K)
    inp = make_inputs(B, T, H, K, V, gates=gates)
    assert_parity(partial(chunk_simple_gla, chunk_size=C), naive_recurrent_simple_gla, inp, what="chunk")


@pytest.mark.parametrize("fn", [chunk_simple_gla, fused_recurrent_simple_gla], ids=["chunk", "recurrent"])
def test_strong_gates_are_finite_and_exact(fn):
    inp = make_inputs(1, 150, 2, 4, 4, low=-20.0)
    inp["g"] = torch.full((1, 150, 2), -20.0, dtype=torch.float64).requires_grad_()
    res, _ = assert_parity(fn, naive_recurrent_simple_gla, inp, tol=1e-10, what="g=-20")
    for name, t in res.items():
        assert torch.isfinite(t).all(), f"{name} has NaN/Inf with g = -20"


def test_long_sequence_float32_finite_and_consistent():
    """T = 65536 (H = 1, K = V = 8) in the chunk form: finite, and the tail equals a recurrent run
    started from the chunk form's own state just before the tail."""
    T, tail = 65536, 40
    q, k, v = make_qkv(1, T, 1, 8, 8, dtype=torch.float32, requires_grad=False)
    g = F.logsigmoid(torch.randn(1, T, 1)) / 16
    with torch.no_grad():
        o, ht = chunk_simple_gla(q, k, v, g, output_final_state=True)
        _, h_mid = chunk_simple_gla(
            q[:, :-tail], k[:, :-tail], v[:, :-tail], g[:, :-tail], output_final_state=True
        )
        o_tail, h_end = fused_recurrent_simple_gla(
            q[:, -tail:],
            k[:, -tail:],
            v[:, -tail:],
            g[:, -tail:],
            initial_state=h_mid,
            output_final_state=True,
        )
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    assert_rel_close(o[:, -tail:], o_tail, 1e-5, "tail o")
    assert_rel_close(ht, h_end, 1e-5, "final state")


def test_final_state_is_none_unless_requested():
    inp = make_inputs(1, 9, 1, 2, 2)
    for fn in (chunk_simple_gla, fused_recurrent_simple_gla, naive_recurrent_simple_gla):
        assert fn(**inp)[1] is None


def test_scale_argument():
    inp = make_inputs(1, 12, 2, 4, 3)
    o1, _ = chunk_simple_gla(**inp, scale=1.0)
    o2, _ = naive_recurrent_simple_gla(**inp, scale=1.0)
    o_default, _ = naive_recurrent_simple_gla(**inp)
    assert_rel_close(o1, o2, 1e-12, "scale=1")
    assert not torch.allclose(o2, o_default), "scale must change the output"


# ----- retention -----------------------------------------------------------------------------------


def retnet_log_gamma(H):
    return torch.tensor([math.log(1 - 2 ** (-5 - h)) for h in range(H)], dtype=torch.float64)


@pytest.mark.parametrize("fn", [chunk_retention, fused_recurrent_retention], ids=["chunk", "recurrent"])
def test_retention_is_simple_gla_with_retnet_decay(fn):
    H = 3
    inp = make_inputs(2, 33, H, 4, 5, gates="none")
    o, ht = fn(inp["q"], inp["k"], inp["v"], initial_state=inp["initial_state"], output_final_state=True)
    ref_o, ref_ht = naive_recurrent_simple_gla(
        **{**inp, "g_gamma": retnet_log_gamma(H)}, output_final_state=True
    )
    assert_rel_close(o, ref_o, 1e-12, "o")
    assert_rel_close(ht, ref_ht, 1e-12, "ht")


def test_retention_varlen():
    cu = torch.tensor([0, 7, 20])
    q, k, v = make_qkv(1, 20, 2, 4, 4)
    o, ht = chunk_retention(q, k, v, output_final_state=True, cu_seqlens=cu)
    o2, ht2 = fused_recurrent_retention(q, k, v, output_final_state=True, cu_seqlens=cu)
    assert ht.shape == (2, 2, 4, 4)
    assert_rel_close(o, o2, 1e-12, "o")
    assert_rel_close(ht, ht2, 1e-12, "ht")


# ----- fla 0.6 options: reverse, state_v_first, cu_seqlens_cpu ----------------------------------------

#: the naive loop run on each (packed) sequence flipped in time: the reference for reverse=True
NAIVE_REVERSED = time_reversed_reference(naive_recurrent_simple_gla, ("q", "k", "v", "g"))


@pytest.mark.parametrize("gates", ["g", "g_gamma", "both", "none"])
@pytest.mark.parametrize("cu", [None, [0, 5, 5, 23, 40]], ids=["fixed", "varlen"])
def test_recurrent_reverse_equals_naive_on_flipped_sequences(gates, cu):
    """``reverse=True`` runs each sequence from its last token to its first (from its own initial
    state): outputs, final states and every gradient equal the naive loop on the flipped inputs."""
    B, N = (2, 2) if cu is None else (1, 4)
    inp = make_inputs(B, 40, 2, 4, 3, gates=gates)
    inp["initial_state"] = torch.randn(N, 2, 4, 3, dtype=torch.float64)
    varlen = {} if cu is None else {"cu_seqlens": torch.tensor(cu)}
    got, _ = assert_parity(
        partial(fused_recurrent_simple_gla, reverse=True, **varlen),
        partial(NAIVE_REVERSED, **varlen),
        inp,
        what=f"reverse {gates}",
    )
    # and the direction is right: the last token is read first, straight from the initial state
    q, k, v, h0 = (inp[n].detach() for n in ("q", "k", "v", "initial_state"))
    if cu is None and gates == "none":
        S = h0 + k[:, -1, :, :, None] * v[:, -1, :, None, :]
        last = 4**-0.5 * torch.einsum("bhk,bhkv->bhv", q[:, -1], S)
        assert_rel_close(got["o"][:, -1], last, 1e-14, "o at T - 1")


@pytest.mark.parametrize("form", ["chunk", "recurrent", "recurrent_reverse"])
@pytest.mark.parametrize("cu", [None, [0, 5, 5, 23, 40]], ids=["fixed", "varlen"])
def test_state_v_first_equals_naive_on_transposed_states(form, cu):
    """``state_v_first=True``: states in and out as fla's ``[N, H, V, K]``; every result (the
    gradient of the initial state included) equals the naive loop's on the transposed state."""
    B, N = (2, 2) if cu is None else (1, 4)
    inp = make_inputs(B, 40, 2, 4, 3)
    inp["initial_state"] = torch.randn(N, 2, 3, 4, dtype=torch.float64)  # [N, H, V, K]
    varlen = {} if cu is None else {"cu_seqlens": torch.tensor(cu)}
    fast = {
        "chunk": partial(chunk_simple_gla, chunk_size=16),
        "recurrent": fused_recurrent_simple_gla,
        "recurrent_reverse": partial(fused_recurrent_simple_gla, reverse=True),
    }[form]
    naive = NAIVE_REVERSED if form == "recurrent_reverse" else naive_recurrent_simple_gla
    got, _ = assert_parity(
        partial(fast, state_v_first=True, **varlen),
        partial(v_first_reference(naive), **varlen),
        inp,
        what=f"{form} state_v_first",
    )
    assert got["ht"].shape == (N, 2, 3, 4) and got["ht"].is_contiguous()


@pytest.mark.parametrize("reverse", [False, True])
def test_retention_reverse_and_state_v_first(reverse):
    """``fused_recurrent_retention`` passes both options on: simple GLA with RetNet's decay."""
    H, cu = 3, torch.tensor([0, 7, 30])
    inp = make_inputs(1, 30, H, 4, 5, gates="none")
    inp["initial_state"] = torch.randn(2, H, 5, 4, dtype=torch.float64)  # [N, H, V, K]
    del inp["g"], inp["g_gamma"]
    naive = partial(naive_recurrent_simple_gla, g_gamma=retnet_log_gamma(H))
    if reverse:
        naive = time_reversed_reference(naive, ("q", "k", "v"))
    assert_parity(
        partial(fused_recurrent_retention, reverse=reverse, state_v_first=True, cu_seqlens=cu),
        partial(v_first_reference(naive), cu_seqlens=cu),
        inp,
        what=f"retention reverse={reverse}",
    )


def test_fla_positional_order_of_the_new_arguments():
    """fla 0.6: ``fused_recurrent_simple_gla(q, k, v, g, g_gamma, scale, initial_state,
    output_final_state, reverse, state_v_first, cu_seqlens)``; ``chunk_simple_gla(..., output_final_state,
    state_v_first, cu_seqlens, cu_seqlens_cpu)``: positional calls bind as in fla."""
    inp = make_inputs(1, 12, 2, 4, 3)
    q, k, v, g, gg = (inp[n] for n in ("q", "k", "v", "g", "g_gamma"))
    h0 = inp["initial_state"].detach().transpose(-1, -2)
    cu = torch.tensor([0, 5, 12])
    h0n = torch.randn(2, 2, 3, 4, dtype=torch.float64)
    pos = fused_recurrent_simple_gla(q, k, v, g, gg, 0.5, h0n, True, True, True, cu)
    kw = fused_recurrent_simple_gla(
        q,
        k,
        v,
        g,
        gg,
        scale=0.5,
        initial_state=h0n,
        output_final_state=True,
        reverse=True,
        state_v_first=True,
        cu_seqlens=cu,
    )
    assert torch.equal(pos[0], kw[0]) and torch.equal(pos[1], kw[1])
    pos = chunk_simple_gla(q, k, v, g, gg, 0.5, h0, True, True, None, None)
    kw = chunk_simple_gla(
        q, k, v, g, gg, scale=0.5, initial_state=h0, output_final_state=True, state_v_first=True
    )
    assert torch.equal(pos[0], kw[0]) and torch.equal(pos[1], kw[1])


def test_chunk_cu_seqlens_cpu_is_checked_and_changes_nothing():
    cu = torch.tensor([0, 13, 40])
    inp = make_inputs(1, 40, 2, 4, 3, h0=False)
    o, ht = chunk_simple_gla(**inp, output_final_state=True, cu_seqlens=cu)
    o2, ht2 = chunk_simple_gla(**inp, output_final_state=True, cu_seqlens=cu, cu_seqlens_cpu=cu.clone())
    assert torch.equal(o, o2) and torch.equal(ht, ht2)
    with pytest.raises(
        ValueError, match=r"cu_seqlens_cpu: must hold the same boundaries as cu_seqlens \[0, 13, 40\]"
    ):
        chunk_simple_gla(**inp, cu_seqlens=cu, cu_seqlens_cpu=torch.tensor([0, 14, 40]))
    with pytest.raises(ValueError, match=r"cu_seqlens_cpu: expected an integer dtype"):
        chunk_simple_gla(**inp, cu_seqlens=cu, cu_seqlens_cpu=cu.double())


# ----- errors --------------------------------------------------------------------------------------


def _base():
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    return dict(q=q, k=k, v=v)


ERROR_CASES = [
    ("q rank", lambda d: d.update(q=d["q"][0]), r"q: expected 4 dims"),
    ("k shape", lambda d: d.update(k=d["k"][..., :3]), r"k: shape \[1, 6, 2, 3\] must equal q's"),
    ("v shape", lambda d: d.update(v=d["v"][:, :5]), r"v: shape .* must match q's"),
    ("k device", lambda d: d.update(k=torch.empty(1, 6, 2, 4, device="meta")), r"one device"),
    ("g shape", lambda d: d.update(g=torch.zeros(1, 6)), r"g: expected shape \[1, 6, 2\]"),
    (
        "g > 0",
        lambda d: d.update(g=torch.full((1, 6, 2), 0.5, dtype=torch.float64)),
        r"g: log-space gates must be <= 0",
    ),
    ("g nan", lambda d: d.update(g=torch.full((1, 6, 2), float("nan"))), r"g: must be finite"),
    ("g_gamma shape", lambda d: d.update(g_gamma=torch.zeros(3)), r"g_gamma: expected shape \[2\]"),
    ("g_gamma > 0", lambda d: d.update(g_gamma=torch.ones(2)), r"g_gamma: log-space gates must be <= 0"),
    ("scale type", lambda d: d.update(scale="big"), r"scale: expected a float"),
    (
        "h0 shape",
        lambda d: d.update(initial_state=torch.zeros(1, 2, 3, 4)),
        r"initial_state: expected shape \[N, H, K, V\]",
    ),
    (
        "cu end",
        lambda d: d.update(cu_seqlens=torch.tensor([0, 4])),
        r"cu_seqlens: must start at 0 and end at T = 6",
    ),
    (
        "cu float",
        lambda d: d.update(cu_seqlens=torch.tensor([0.0, 6.0])),
        r"cu_seqlens: expected an integer dtype",
    ),
]


@pytest.mark.parametrize(
    "fn",
    [chunk_simple_gla, fused_recurrent_simple_gla, naive_recurrent_simple_gla],
    ids=["chunk", "recurrent", "naive"],
)
@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(fn, case):
    _, mutate, msg = case
    d = _base()
    mutate(d)
    with pytest.raises(ValueError, match=msg):
        fn(**d)


@pytest.mark.parametrize("fn", [fused_recurrent_simple_gla, fused_recurrent_retention])
def test_option_flags_must_be_bools(fn):
    d = _base()
    with pytest.raises(ValueError, match=r"reverse: expected a bool, got 'yes'"):
        fn(**d, reverse="yes")
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, H, V, K\] = \[1, 2, 3, 4\]"):
        fn(**d, state_v_first=True, initial_state=torch.zeros(1, 2, 4, 3))


def test_cu_seqlens_needs_batch_one():
    q, k, v = make_qkv(2, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"cu_seqlens: packed sequences need batch size B == 1, got B = 2"):
        chunk_simple_gla(q, k, v, cu_seqlens=torch.tensor([0, 6]))


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_chunk_size_error(bad):
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive int"):
        chunk_simple_gla(**_base(), chunk_size=bad)


def test_retention_error_names_argument():
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"v: shape"):
        chunk_retention(q, k, v[:, :2])
    with pytest.raises(ValueError, match=r"initial_state: expected shape"):
        fused_recurrent_retention(q, k, v, initial_state=torch.zeros(1, 2, 4, 4))


def test_segmented_long_path_matches_naive(monkeypatch):
    """Long inputs run as a chain of segments passing the state; shrink the segment to test it."""
    from linearlab.ops.simple_gla import chunk as chunk_mod

    monkeypatch.setattr(chunk_mod, "SEGMENT_TOKENS", 24)
    inp = make_inputs(2, 101, 2, 4, 3)
    ref = run_op(naive_recurrent_simple_gla, inp)
    for C in (8, 16, 64):
        assert_results_close(run_op(chunk_simple_gla, inp, chunk_size=C), ref, 1e-10, f"C={C}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_constant_decay_fast_path_over_many_chunks_and_segments(monkeypatch, dtype):
    """A gate constant in time (``g_gamma`` alone: retention, Lightning) has the same decays in every
    chunk, so the chunk form computes them once from the first chunk (``_shared_gates``) and
    reuses them in every chunk of every segment, forward and backward. Run that path over 8 chunks
    in 4 segments, one head per regime (no decay, mild, medium, strong enough to flush factors),
    against the naive loop, and prove it ran: each pass built its gates once, from one chunk."""
    from linearlab.ops.simple_gla import chunk as chunk_mod

    C, T = 16, 128  # T % C == 0: a padded last chunk would send the gate down the per-segment path
    monkeypatch.setattr(chunk_mod, "SEGMENT_TOKENS", 2 * C)
    assert len(chunk_mod._segments(T // C, C)) == 4
    built = []  # chunks each _Gates was computed from, in construction order

    class SpyGates(chunk_mod._Gates):
        def __init__(self, g, *args):
            built.append(g.shape[0])
            super().__init__(g, *args)

    monkeypatch.setattr(chunk_mod, "_Gates", SpyGates)
    inp = make_inputs(2, T, 4, 5, 3, dtype=dtype, gates="none")
    inp["g_gamma"] = torch.tensor([0.0, -0.05, -0.7, -6.0], dtype=dtype)
    assert_parity(partial(chunk_simple_gla, chunk_size=C), naive_recurrent_simple_gla, inp, what="g_gamma")
    # the per-segment path would have built 2-chunk gates 4 times per pass
    assert built == [1, 1], f"constant-decay fast path not taken: gates built from {built} chunks"


@pytest.mark.parametrize("fn", [chunk_simple_gla, fused_recurrent_simple_gla], ids=["chunk", "recurrent"])
def test_varlen_gradients_match_naive(fn):
    """Packed sequences: every gradient (including each sequence's initial state) equals the naive
    loop's, which packs through the independent ``ops.utils.run_varlen`` path."""
    cu = torch.tensor([0, 13, 13, 50, 61])
    inp = make_inputs(1, 61, 2, 4, 3)
    inp["initial_state"] = torch.randn(4, 2, 4, 3, dtype=torch.float64).requires_grad_()
    assert_parity(
        partial(fn, cu_seqlens=cu), partial(naive_recurrent_simple_gla, cu_seqlens=cu), inp, what="varlen"
    )


@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_retention_decay_error(bad):
    from linearlab.ops.simple_gla._common import retention_decay

    with pytest.raises(ValueError, match=r"num_heads: expected a positive int"):
        retention_decay(bad)
