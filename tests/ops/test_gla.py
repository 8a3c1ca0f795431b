"""Gated Linear Attention ops: chunk vs recurrent vs naive parity (outputs, states, every
gradient), gradcheck, chunk-size invariance, state carry-over, varlen, gates, dtypes and errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from _helpers import (
    assert_parity,
    assert_rel_close,
    assert_results_close,
    run_op,
    time_reversed_reference,
    tol_for,
    v_first_reference,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops.common import chunks_per_segment
from linearlab.ops.gla import chunk_gla, fused_recurrent_gla, naive_recurrent_gla
from linearlab.ops.gla._intra import SAFE_SPAN, chunk_cumsum, intra_plan

# Per-step log decay of each regime; chunk_gla picks a different intra-chunk form for each:
# "mild" -> one factorised matmul per chunk, "medium" -> sub-chunks of 16 with factorised
# diagonal blocks, "strong" -> sub-chunks with exact (pairwise-difference) diagonal blocks.
GATES = {"mild": (-0.1, 0.0), "medium": (-1.5, -1.0), "strong": (-20.0, -10.0)}


def _gate_by_position(fn):
    """The forms name the gate ``g`` (chunk) or ``gk`` (fla's naive and recurrent), always 4th:
    pass it by position, so every form takes the inputs of :func:`make_inputs` by keyword."""

    def call(q, k, v, g, **kwargs):
        return fn(q, k, v, g, **kwargs)

    return call


FORMS = {
    "naive": _gate_by_position(naive_recurrent_gla),
    "recurrent": _gate_by_position(fused_recurrent_gla),
    "chunk": chunk_gla,
    "chunk16": partial(chunk_gla, chunk_size=16),
}


def make_inputs(B=2, T=37, H=2, K=8, V=6, dtype=torch.float64, gate="mild", h0=True, N=None):
    """Leaf tensors ``{q, k, v, g, initial_state}`` (``initial_state`` None without ``h0``), in the
    forms' positional order."""
    low, high = GATES[gate]
    q, k = torch.randn(B, T, H, K, dtype=torch.float64), torch.randn(B, T, H, K, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    g = low + (high - low) * torch.rand(B, T, H, K, dtype=torch.float64)
    state = torch.randn(N or B, H, K, V, dtype=torch.float64) if h0 else None
    leaves = [None if x is None else x.to(dtype).requires_grad_() for x in (q, k, v, g, state)]
    return dict(zip(("q", "k", "v", "g", "initial_state"), leaves))


def dense_gla(q, k, v, gk=None, gv=None, scale=None, reverse=False):
    """Quadratic closed form, an independent definition to check the naive loop against:
    ``o_t = sum_{s<=t} (scale q_t * exp(Gk_t - Gk_s)) . k_s  *  v_s * exp(Gv_t - Gv_s)``
    (``s >= t`` and reversed cumsums when ``reverse``). float64, no initial state."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    gk = torch.zeros_like(q) if gk is None else gk
    gv = torch.zeros_like(v) if gv is None else gv
    if reverse:
        Gk, Gv = gk.flip(1).cumsum(1).flip(1), gv.flip(1).cumsum(1).flip(1)
        mask = torch.ones(T, T, dtype=torch.bool).triu()
    else:
        Gk, Gv = gk.cumsum(1), gv.cumsum(1)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
    dk_ = (Gk[:, :, None] - Gk[:, None, :]).masked_fill(~mask[None, :, :, None, None], -torch.inf).exp()
    dv_ = (Gv[:, :, None] - Gv[:, None, :]).masked_fill(~mask[None, :, :, None, None], -torch.inf).exp()
    score = torch.einsum("bthk,bshk,btshk->btsh", q * scale, k, dk_)
    return torch.einsum("btsh,bshv,btshv->bthv", score, v, dv_)


# ----------------------------------------------------------------------------------------------
# the ground truth


def test_naive_matches_dense_closed_form():
    q, k, v, g, _ = make_inputs(T=23, h0=False, gate="medium").values()
    o, _ = naive_recurrent_gla(q, k, v, g, scale=0.7)
    assert_rel_close(o, dense_gla(q, k, v, g, scale=0.7), 1e-12, "naive vs dense o")


def test_naive_takes_fla_positional_order():
    """fla: ``naive_recurrent_gla(q, k, v, gk, initial_state, output_final_state)``."""
    q, k, v, g, h0 = make_inputs(T=9, h0=True, gate="medium").values()
    o_pos, h_pos = naive_recurrent_gla(q, k, v, g, h0, True)
    o_kw, h_kw = naive_recurrent_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    assert h_pos is not None and torch.equal(o_pos, o_kw) and torch.equal(h_pos, h_kw)
    _, none_state = naive_recurrent_gla(q, k, v, g, h0)
    assert none_state is None


@pytest.mark.parametrize("gates", ["gk", "gv", "both", "none"])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_gates_and_reverse_match_dense(gates, reverse):
    q, k, v, g, _ = make_inputs(T=19, K=5, V=7, h0=False, gate="medium").values()
    gk = g if gates in ("gk", "both") else None
    gv = F.logsigmoid(torch.randn(v.shape, dtype=v.dtype)) if gates in ("gv", "both") else None
    o, _ = fused_recurrent_gla(q, k, v, gk, gv, reverse=reverse)
    assert_rel_close(o, dense_gla(q, k, v, gk, gv, reverse=reverse), 1e-12, f"{gates} reverse={reverse}")


def test_recurrent_reverse_is_forward_on_flipped_sequence():
    q, k, v, g, h0 = make_inputs(T=11, gate="medium").values()
    gv = F.logsigmoid(torch.randn(v.shape, dtype=v.dtype))
    o_r, ht_r = fused_recurrent_gla(q, k, v, g, gv, initial_state=h0, output_final_state=True, reverse=True)
    flip = [x.flip(1) for x in (q, k, v, g, gv)]
    o_f, ht_f = fused_recurrent_gla(*flip, initial_state=h0, output_final_state=True)
    assert_rel_close(o_r, o_f.flip(1), 1e-14, "o")
    assert_rel_close(ht_r, ht_f, 1e-14, "ht")


# ----------------------------------------------------------------------------------------------
# parity chain: chunk vs recurrent vs naive, outputs, final states and every gradient


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("T", [1, 37, 100])
def test_parity_chain(dtype, gate, T):
    inp = make_inputs(T=T, K=8, V=6, dtype=dtype, gate=gate)
    ref = run_op(FORMS["naive"], inp)
    rec = run_op(FORMS["recurrent"], inp)
    tol = tol_for(dtype)
    assert_results_close(rec, ref, tol, "recurrent vs naive")
    for C in (16, 32, 64):
        got = run_op(chunk_gla, inp, chunk_size=C)
        assert_results_close(got, ref, tol, f"chunk{C} vs naive")
        assert_results_close(got, rec, tol, f"chunk{C} vs recurrent")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("gate", list(GATES))
def test_half_precision_inputs_within_2e_2(gate, dtype):
    """bfloat16 and float16 (fla's tests use float16 throughout) inputs: states in float32,
    outputs and gradients in the input dtype, within 2e-2 of the naive loop."""
    inp = make_inputs(T=45, K=16, V=8, dtype=dtype, gate=gate)
    ref = run_op(FORMS["naive"], inp)
    for form in ("recurrent", "chunk16"):
        got = run_op(FORMS[form], inp)
        assert got["o"].dtype == dtype and got["ht"].dtype == torch.float32
        assert all(got[n].dtype == dtype for n in ("dq", "dk", "dv", "dg"))
        assert_results_close(got, ref, 2e-2, f"{form} {dtype}")


@pytest.mark.parametrize(("gate", "expected"), [("mild", "whole"), ("medium", "sub"), ("strong", "exact")])
def test_each_intra_form_is_selected_by_the_gate_span(gate, expected):
    """The parity tests above cover all three intra-chunk forms only if each regime selects its
    form; check the selection so a change of thresholds cannot silently drop a path."""
    g = make_inputs(B=1, T=64, H=1, gate=gate)["g"]
    ell = chunk_cumsum(g.detach().double().reshape(1, 1, 1, 64, -1))
    assert intra_plan(ell, 16) == expected
    assert (ell[..., 0, :] - ell[..., -1, :]).max() > 0  # spans are positive: the check is live
    assert SAFE_SPAN < 88  # exp(88) overflows float32


# ----------------------------------------------------------------------------------------------
# gradcheck


@pytest.mark.parametrize("gate", list(GATES))
def test_gradcheck_chunk(gate):
    # chunk_size 32 with two sub-chunks: "medium" gates then take the sub-chunk path
    q, k, v, g, h0 = make_inputs(B=1, T=37, H=1, K=3, V=2, gate=gate).values()

    def f(q, k, v, g, h0):
        return chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=32)

    assert torch.autograd.gradcheck(f, (q, k, v, g, h0))


def test_gradcheck_recurrent_both_gates_reverse():
    q, k, v, g, h0 = make_inputs(B=1, T=6, H=1, K=3, V=2, gate="medium").values()
    gv = F.logsigmoid(torch.randn(v.shape, dtype=v.dtype)).requires_grad_()

    def f(q, k, v, g, gv, h0):
        return fused_recurrent_gla(q, k, v, g, gv, initial_state=h0, output_final_state=True, reverse=True)

    assert torch.autograd.gradcheck(f, (q, k, v, g, gv, h0))


@pytest.mark.parametrize("gate", list(GATES))
def test_many_segments_match_naive(gate, monkeypatch):
    """Long inputs are processed in segments of chunks (state carried in forward, its gradient in
    backward); shrink the segment to 2 chunks so that path runs at test size."""
    import linearlab.ops.gla.chunk as chunk_module

    inp = make_inputs(T=150, gate=gate)
    B, _, H, K = inp["q"].shape
    monkeypatch.setattr(chunk_module, "SEGMENT_ELEMENTS", 32 * B * H * K)  # 32 tokens
    assert chunks_per_segment(16, chunk_module.SEGMENT_ELEMENTS, B * H * K) == 2  # K >= V
    assert_parity(partial(chunk_gla, chunk_size=16), FORMS["naive"], inp, tol=1e-10, what="segmented chunk")


# ----------------------------------------------------------------------------------------------
# state carry-over, decoding, varlen


@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_state_carry_over_equals_whole_sequence(form):
    fn = FORMS[form]
    q, k, v, g, h0 = make_inputs(T=53, gate="medium").values()
    o, ht = fn(q, k, v, g, initial_state=h0, output_final_state=True)
    cut = 29
    o1, h1 = fn(q[:, :cut], k[:, :cut], v[:, :cut], g[:, :cut], initial_state=h0, output_final_state=True)
    o2, h2 = fn(q[:, cut:], k[:, cut:], v[:, cut:], g[:, cut:], initial_state=h1, output_final_state=True)
    assert_rel_close(torch.cat([o1, o2], 1), o, 1e-12, "o")
    assert_rel_close(h2, ht, 1e-12, "ht")


def test_chunk_prefill_then_recurrent_decode_equals_full_chunk():
    q, k, v, g, _ = make_inputs(B=1, T=40, gate="mild", h0=False).values()
    o, _ = chunk_gla(q, k, v, g)
    o_pre, state = chunk_gla(q[:, :33], k[:, :33], v[:, :33], g[:, :33], output_final_state=True)
    steps = [o_pre]
    for t in range(33, 40):
        s = slice(t, t + 1)
        o_t, state = fused_recurrent_gla(
            q[:, s], k[:, s], v[:, s], g[:, s], initial_state=state, output_final_state=True
        )
        steps.append(o_t)
    assert_rel_close(torch.cat(steps, 1), o, 1e-12, "decode")


@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_varlen_equals_each_sequence_alone(form):
    fn = FORMS[form]
    cu = torch.tensor([0, 5, 5, 37, 50, 51])  # includes an empty and a length-1 sequence
    N = len(cu) - 1
    inp = make_inputs(B=1, T=50 + 1, gate="medium", N=N)
    got = run_op(fn, inp, cu_seqlens=cu)
    q, k, v, g, h0 = inp.values()
    for n in range(N):
        a, b = cu[n].item(), cu[n + 1].item()
        if a == b:
            assert torch.equal(got["ht"][n], h0[n].detach().to(got["ht"].dtype)), (
                "empty sequence must keep its state"
            )
            continue
        o_n, h_n = fn(
            q[:, a:b], k[:, a:b], v[:, a:b], g[:, a:b], initial_state=h0[n : n + 1], output_final_state=True
        )
        assert_rel_close(got["o"][:, a:b], o_n, 1e-12, f"o seq {n}")
        assert_rel_close(got["ht"][n : n + 1], h_n, 1e-12, f"ht seq {n}")
    if form == "chunk":  # gradients of the packed call equal the naive packed call
        ref = run_op(FORMS["naive"], inp, cu_seqlens=cu)
        assert_results_close(got, ref, 1e-10, "varlen chunk vs naive")


def test_recurrent_varlen_with_value_gate_and_reverse():
    cu = torch.tensor([0, 7, 20, 26])
    q, k, v, g, h0 = make_inputs(B=1, T=26, gate="medium", N=3).values()
    gv = F.logsigmoid(torch.randn(v.shape, dtype=v.dtype))
    o, ht = fused_recurrent_gla(
        q, k, v, g, gv, initial_state=h0, output_final_state=True, reverse=True, cu_seqlens=cu
    )
    for n in range(3):
        s = slice(cu[n].item(), cu[n + 1].item())
        o_n, h_n = fused_recurrent_gla(
            q[:, s],
            k[:, s],
            v[:, s],
            g[:, s],
            gv[:, s],
            initial_state=h0[n : n + 1],
            output_final_state=True,
            reverse=True,
        )
        assert_rel_close(o[:, s], o_n, 1e-14, f"o seq {n}")
        assert_rel_close(ht[n : n + 1], h_n, 1e-14, f"ht seq {n}")


# ----------------------------------------------------------------------------------------------
# shapes, scale, numerics


@settings(max_examples=12, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 70),
    H=st.integers(1, 2),
    K=st.integers(1, 9),
    V=st.integers(1, 9),
    gate=st.sampled_from(list(GATES)),
    C=st.sampled_from([16, 32, 64]),
)
def test_hypothesis_shapes_chunk_matches_naive(B, T, H, K, V, gate, C):
    torch.manual_seed(B * 1000 + T * 10 + H)
    inp = make_inputs(B=B, T=T, H=H, K=K, V=V, gate=gate)
    assert_parity(partial(chunk_gla, chunk_size=C), FORMS["naive"], inp, what="hyp")


@pytest.mark.parametrize("form", list(FORMS))
def test_scale_default_and_explicit(form):
    fn = FORMS[form]
    q, k, v, g, _ = make_inputs(T=9, K=9, h0=False).values()
    o_default, ht = fn(q, k, v, g)
    o_explicit, _ = fn(q, k, v, g, scale=9**-0.5)
    o_double, _ = fn(q, k, v, g, scale=2 * 9**-0.5)
    assert ht is None  # final state only on request
    assert_rel_close(o_default, o_explicit, 1e-14, "default scale")
    assert_rel_close(o_double, 2 * o_default, 1e-14, "scale is linear")


def test_strong_gates_finite_and_forgetful_in_float32():
    q, k, v, _, h0 = make_inputs(B=1, T=300, H=2, K=16, V=16, dtype=torch.float32).values()
    g = torch.full_like(q, -20.0).requires_grad_()
    o, ht = chunk_gla(q, k, v, g, initial_state=h0, output_final_state=True)
    (o.sum() + ht.sum()).backward()
    for name, x in [("o", o), ("ht", ht), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad), ("dg", g.grad)]:
        assert torch.isfinite(x).all(), f"{name} has NaN/Inf"
    # exp(-20) ~ 2e-9: the state is essentially the last token's k^T v alone
    last = k[0, -1, :, :, None] * v[0, -1, :, None, :]
    assert_rel_close(ht[0], last.detach(), 1e-6, "state forgets")


@pytest.mark.parametrize("gate", ["mild", "strong"])
def test_long_sequence_is_finite_and_matches_naive_on_the_tail(gate):
    T, tail = 65536, 50
    low, high = (-0.1, 0.0) if gate == "mild" else (-20.0, -20.0)
    q, k, v = (torch.randn(1, T, 1, 8).requires_grad_() for _ in range(3))
    g = (low + (high - low) * torch.rand(1, T, 1, 8)).requires_grad_()
    o, ht = chunk_gla(q, k, v, g, output_final_state=True)
    (o.sum() + ht.sum()).backward()
    for name, x in [("o", o), ("ht", ht), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad), ("dg", g.grad)]:
        assert torch.isfinite(x).all(), f"{name} has NaN/Inf"
    with torch.no_grad():  # the last tokens, replayed by the naive loop from the carried state
        cut = [x[:, : T - tail] for x in (q, k, v, g)]
        _, h_cut = chunk_gla(*cut, output_final_state=True)
        o_tail, h_tail = naive_recurrent_gla(
            *(x[:, T - tail :] for x in (q, k, v, g)), initial_state=h_cut, output_final_state=True
        )
    assert_rel_close(o[:, T - tail :].detach(), o_tail, 1e-5, "o tail")
    assert_rel_close(ht.detach(), h_tail, 1e-5, "final state")


def test_chunk_size_invariance():
    inp = make_inputs(T=150, gate="medium")
    ref = run_op(chunk_gla, inp, chunk_size=64)
    for C in (16, 32):
        assert_results_close(run_op(chunk_gla, inp, chunk_size=C), ref, 1e-12, f"chunk {C} vs 64")


# ----------------------------------------------------------------------------------------------
# fla 0.6 options: state_v_first (states as [N, H, V, K]) and cu_seqlens_cpu


@pytest.mark.parametrize("form", ["chunk", "recurrent", "recurrent_reverse"])
@pytest.mark.parametrize("cu", [None, [0, 9, 9, 30]], ids=["fixed", "varlen"])
def test_state_v_first_equals_naive_on_transposed_states(form, cu):
    """``state_v_first=True``: the state comes in and goes out as fla's ``[N, H, V, K]``; the
    naive loop run on the transposed state gives the same outputs, states and every gradient
    (``dinitial_state`` included, in the v-first layout)."""
    B, N = (2, 2) if cu is None else (1, 3)
    inp = make_inputs(B=B, T=30, gate="medium", N=N)
    inp["initial_state"] = inp["initial_state"].detach().transpose(-1, -2).contiguous()  # [N, H, V, K]
    varlen = {} if cu is None else {"cu_seqlens": torch.tensor(cu)}
    naive = FORMS["naive"]
    if form == "recurrent_reverse":  # reverse is the naive loop on each sequence flipped in time
        fast = partial(FORMS["recurrent"], reverse=True, **varlen)
        naive = time_reversed_reference(naive, ("q", "k", "v", "g"))
    else:
        fast = partial(FORMS[form], **varlen)
    naive = partial(naive, **varlen)
    got, _ = assert_parity(partial(fast, state_v_first=True), v_first_reference(naive), inp, what=form)
    assert got["ht"].shape == (N, 2, 6, 8) and got["ht"].is_contiguous()  # [N, H, V, K], dense
    plain = run_op(fast, dict(inp, initial_state=inp["initial_state"].transpose(-1, -2)))
    assert_rel_close(got["ht"], plain["ht"].transpose(-1, -2), 1e-15, "same state, transposed")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_state_v_first_errors(form):
    q, k, v, g = _good()  # K = 4, V = 3
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, H, V, K\] = \[1, 2, 3, 4\] "):
        FORMS[form](q, k, v, g, initial_state=torch.zeros(1, 2, 4, 3), state_v_first=True)
    with pytest.raises(ValueError, match=r"state_v_first: expected a bool, got 1"):
        FORMS[form](q, k, v, g, state_v_first=1)


def test_chunk_cu_seqlens_cpu_is_checked_and_changes_nothing():
    """fla's ``cu_seqlens_cpu`` (a host copy of ``cu_seqlens``) is accepted, checked, unused."""
    cu = torch.tensor([0, 5, 20])
    inp = make_inputs(B=1, T=20, N=2)
    o, ht = chunk_gla(**inp, output_final_state=True, cu_seqlens=cu)
    o2, ht2 = chunk_gla(**inp, output_final_state=True, cu_seqlens=cu, cu_seqlens_cpu=cu.clone())
    assert torch.equal(o, o2) and torch.equal(ht, ht2)
    with pytest.raises(ValueError, match=r"cu_seqlens_cpu: must hold the same boundaries as cu_seqlens"):
        chunk_gla(**inp, cu_seqlens=cu, cu_seqlens_cpu=torch.tensor([0, 6, 20]))
    with pytest.raises(ValueError, match=r"cu_seqlens_cpu: given without cu_seqlens"):
        chunk_gla(**make_inputs(B=1, T=20, N=1), cu_seqlens_cpu=torch.tensor([0, 20]))


# ----------------------------------------------------------------------------------------------
# errors


def _good(T=4, B=1):
    return torch.randn(B, T, 2, 4), torch.randn(B, T, 2, 4), torch.randn(B, T, 2, 3), -torch.rand(B, T, 2, 4)


def _bad_inputs():
    q, k, v, g = _good()
    return {
        "rank": ((q[0], k, v, g), {}, r"q: expected 4 dims"),
        "k shape": ((q, k[..., :3], v, g), {}, r"k: shape \[1, 4, 2, 3\] must equal q's shape"),
        "v shape": ((q, k, v[:, :3], g), {}, r"v: shape .* must match q's \[B, T, H\]"),
        "gate shape": ((q, k, v, g[..., :2]), {}, r"gk?: expected shape \[1, 4, 2, 4\], got \[1, 4, 2, 2\]"),
        "gate positive": ((q, k, v, g.abs() + 0.5), {}, r"gk?: log-space gates must be <= 0"),
        "gate nan": ((q, k, v, g.index_fill(1, torch.tensor([2]), float("nan"))), {}, r"gk?: must be finite"),
        "device": ((q, k.to("meta"), v, g), {}, r"q, k, v: all tensors must be on one device"),
        "h0 shape": (
            (q, k, v, g),
            {"initial_state": torch.zeros(1, 2, 3, 4)},
            r"initial_state: expected shape",
        ),
        "cu end": (
            (q, k, v, g),
            {"cu_seqlens": torch.tensor([0, 3])},
            r"cu_seqlens: must start at 0 and end at T",
        ),
        "cu batch": (
            _good(B=2),
            {"cu_seqlens": torch.tensor([0, 4])},
            r"cu_seqlens: packed sequences need batch",
        ),
        "scale": ((q, k, v, g), {"scale": "big"}, r"scale: expected a float or None, got str"),
    }


@pytest.mark.parametrize("form", ["naive", "recurrent", "chunk"])
@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_raises_clear_error(form, case):
    args, kwargs, pattern = _bad_inputs()[case]
    with pytest.raises(ValueError, match=pattern):
        FORMS[form](*args, **kwargs)


@pytest.mark.parametrize(
    ("chunk_size", "pattern"), [(0, "positive int"), (True, "positive int"), (24, "multiple of 16")]
)
def test_bad_chunk_size(chunk_size, pattern):
    with pytest.raises(ValueError, match=rf"chunk_size: .*{pattern}"):
        chunk_gla(*_good(), chunk_size=chunk_size)


def test_bad_value_gate_in_recurrent():
    q, k, v, g = _good()
    with pytest.raises(ValueError, match=r"gv: expected shape \[1, 4, 2, 3\], got \[1, 4, 2, 4\]"):
        fused_recurrent_gla(q, k, v, g, gv=g)
    with pytest.raises(ValueError, match=r"gv: log-space gates must be <= 0"):
        fused_recurrent_gla(q, k, v, g, gv=torch.ones_like(v))
