"""Causal linear attention ops (plain and normalised): parity, gradients, state, varlen, errors."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from _helpers import (
    assert_parity,
    assert_rel_close,
    assert_results_close,
    make_qkv,
    run_op,
    time_reversed_reference,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops import chunk_linear_attn, fused_recurrent_linear_attn, naive_recurrent_linear_attn
from linearlab.ops.linear_attn._common import NORMALIZE_EPS

FORMS = {
    "recurrent": fused_recurrent_linear_attn,
    "chunk16": partial(chunk_linear_attn, chunk_size=16),
    "chunk64": chunk_linear_attn,
}


def make_inputs(B, T, H, K, V, normalize, dtype=torch.float64, h0=True):
    # positive features keep the normalised denominator away from 0, as elu + 1 does in practice
    q, k, v = make_qkv(B, T, H, K, V, dtype=dtype, positive=normalize)
    state_dt = torch.float64 if dtype == torch.float64 else torch.float32
    h = None
    if h0:
        h = torch.randn(B, H, K, V + int(normalize), dtype=state_dt)
        if normalize:
            h[..., -1] = h[..., -1].abs()  # z of a positive-feature prefix is positive
        h.requires_grad_()
    return dict(q=q, k=k, v=v, initial_state=h, normalize=normalize)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("shape", [(2, 37, 3, 5, 7), (1, 1, 2, 4, 4), (1, 70, 1, 8, 3)])
def test_parity_float64(form, normalize, shape):
    inp = make_inputs(*shape, normalize)
    assert_parity(FORMS[form], naive_recurrent_linear_attn, inp, what=f"{form} {shape}")


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("normalize", [False, True])
def test_parity_float32(form, normalize):
    inp = make_inputs(2, 45, 2, 16, 8, normalize, dtype=torch.float32)
    res, _ = assert_parity(FORMS[form], naive_recurrent_linear_attn, inp, what=form)
    assert res["o"].dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("normalize", [False, True])
def test_half_precision_inputs(form, normalize, dtype):
    inp = make_inputs(1, 40, 2, 16, 16, normalize, dtype=dtype)
    res, _ = assert_parity(FORMS[form], naive_recurrent_linear_attn, inp, what=form)
    assert res["o"].dtype == dtype and res["ht"].dtype == torch.float32


@pytest.mark.parametrize("normalize", [False, True])
def test_naive_equals_quadratic_definition(normalize):
    """``o_i = scale sum_{j<=i} (q_i.k_j) v_j``, divided by ``scale sum_{j<=i} q_i.k_j + eps``."""
    inp = make_inputs(2, 17, 2, 4, 3, normalize, h0=False)
    q, k, v = inp["q"], inp["k"], inp["v"]
    o, _ = naive_recurrent_linear_attn(**inp)
    T, scale = q.shape[1], q.shape[-1] ** -0.5
    scores = torch.einsum("bihk,bjhk->bhij", q, k) * scale * torch.ones(T, T, dtype=torch.float64).tril()
    expect = torch.einsum("bhij,bjhv->bihv", scores, v)
    if normalize:
        expect = expect / (scores.sum(-1).transpose(1, 2)[..., None] + NORMALIZE_EPS)
    assert_rel_close(o, expect, 1e-12, "o")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_gradcheck(form, normalize):
    inp = make_inputs(1, 6, 2, 3, 2, normalize)

    def fn(q, k, v, h0):
        if form == "chunk":
            return chunk_linear_attn(q, k, v, None, h0, True, normalize, chunk_size=4)
        return fused_recurrent_linear_attn(q, k, v, None, h0, True, False, normalize)  # reverse first

    assert torch.autograd.gradcheck(
        fn, (inp["q"], inp["k"], inp["v"], inp["initial_state"]), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("normalize", [False, True])
def test_chunk_size_invariance(normalize):
    inp = make_inputs(1, 100, 2, 8, 6, normalize)
    ref = run_op(chunk_linear_attn, inp)
    for C in (16, 32, 1, 13):
        assert_results_close(run_op(chunk_linear_attn, inp, chunk_size=C), ref, 1e-12, f"C={C}")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("fn", [chunk_linear_attn, fused_recurrent_linear_attn], ids=["chunk", "recurrent"])
def test_state_carry_over(fn, normalize):
    """With ``normalize`` the state carries z as its last column, so splitting is exact."""
    inp = make_inputs(2, 53, 2, 4, 3, normalize)
    o, ht = fn(**inp, output_final_state=True)
    assert ht.shape == (2, 2, 4, 3 + int(normalize))
    cut = 20
    head = {n: (t[:, :cut] if n in ("q", "k", "v") else t) for n, t in inp.items()}
    o1, h1 = fn(**head, output_final_state=True)
    tail = {n: (t[:, cut:] if n in ("q", "k", "v") else t) for n, t in inp.items()}
    tail["initial_state"] = h1
    o2, h2 = fn(**tail, output_final_state=True)
    assert_rel_close(torch.cat([o1, o2], 1), o, 1e-12, "o")
    assert_rel_close(h2, ht, 1e-12, "ht")


def test_normalized_state_last_column_is_key_sum():
    inp = make_inputs(1, 30, 2, 4, 3, True, h0=False)
    _, ht = chunk_linear_attn(**inp, output_final_state=True)
    assert_rel_close(ht[..., -1], inp["k"].sum(1), 1e-12, "z")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize(
    "fn",
    [naive_recurrent_linear_attn, fused_recurrent_linear_attn, chunk_linear_attn],
    ids=["naive", "recurrent", "chunk"],
)
def test_varlen_equals_separate_sequences(fn, normalize):
    cu = torch.tensor([0, 9, 9, 31])
    N, H, K, V = 3, 2, 4, 3
    inp = make_inputs(1, 31, H, K, V, normalize, h0=False)
    h0 = torch.rand(N, H, K, V + int(normalize), dtype=torch.float64)
    inp["initial_state"] = h0
    o, ht = fn(**inp, output_final_state=True, cu_seqlens=cu)
    for n in range(N):
        s, e = cu[n].item(), cu[n + 1].item()
        if s == e:
            assert torch.equal(ht[n], h0[n])
            continue
        piece = {m: (t[:, s:e] if m in ("q", "k", "v") else t) for m, t in inp.items()}
        piece["initial_state"] = h0[n : n + 1]
        on, hn = naive_recurrent_linear_attn(**piece, output_final_state=True)
        assert_rel_close(o[:, s:e], on, 1e-12, f"o seq {n}")
        assert_rel_close(ht[n : n + 1], hn, 1e-12, f"ht seq {n}")


@settings(max_examples=12, deadline=None)
@given(
    B=st.integers(1, 2),
    T=st.integers(1, 40),
    H=st.integers(1, 3),
    K=st.integers(1, 6),
    V=st.integers(1, 6),
    C=st.sampled_from([1, 4, 16, 64]),
    normalize=st.booleans(),
)
def test_hypothesis_shapes(B, T, H, K, V, C, normalize):
    torch.manual_seed(T * 7 + K)
    if normalize and K == 1:
        # with one key channel q cancels out of q S / (q z + eps): dq is O(eps) and pure rounding
        K = 2
    inp = make_inputs(B, T, H, K, V, normalize)
    assert_parity(partial(chunk_linear_attn, chunk_size=C), naive_recurrent_linear_attn, inp, what="chunk")


@pytest.mark.parametrize("normalize", [False, True])
def test_long_sequence_finite_and_consistent(normalize):
    T, tail = 65536, 30
    q, k, v = make_qkv(1, T, 1, 8, 8, dtype=torch.float32, requires_grad=False, positive=normalize)
    with torch.no_grad():
        o, ht = chunk_linear_attn(q, k, v, normalize=normalize, output_final_state=True)
        _, h_mid = chunk_linear_attn(
            q[:, :-tail], k[:, :-tail], v[:, :-tail], normalize=normalize, output_final_state=True
        )
        o_tail, _ = fused_recurrent_linear_attn(
            q[:, -tail:], k[:, -tail:], v[:, -tail:], initial_state=h_mid, normalize=normalize
        )
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    assert_rel_close(o[:, -tail:], o_tail, 1e-4, "tail o")


def test_final_state_is_none_unless_requested():
    inp = make_inputs(1, 9, 1, 2, 2, False)
    for fn in FORMS.values():
        assert fn(**inp)[1] is None


# ----- fla 0.6: normalize defaults, reverse -----------------------------------------------------------


def test_normalize_defaults_are_flas():
    """fla 0.6: ``chunk_linear_attn`` normalises by default, ``fused_recurrent_linear_attn`` does not."""
    inp = make_inputs(1, 20, 2, 4, 3, normalize=True, h0=False)
    del inp["normalize"]
    o_default, ht = chunk_linear_attn(**inp, output_final_state=True)
    o_norm, _ = chunk_linear_attn(**inp, normalize=True)
    assert torch.equal(o_default, o_norm) and ht.shape == (1, 2, 4, 4)  # z rides along: V + 1
    o_rec, _ = fused_recurrent_linear_attn(**inp)
    o_plain, _ = naive_recurrent_linear_attn(**inp, normalize=False)
    assert_rel_close(o_rec, o_plain, 1e-13, "recurrent default is unnormalised")


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("cu", [None, [0, 9, 9, 31]], ids=["fixed", "varlen"])
def test_recurrent_reverse_equals_naive_on_flipped_sequences(normalize, cu):
    """``reverse=True`` runs each sequence backwards from its own state; with ``normalize`` the key
    sum runs backwards too (``z_t = z_0 + sum_{s >= t} k_s``): outputs, states (z column included)
    and every gradient equal the naive loop on the flipped inputs."""
    B, N = (2, 2) if cu is None else (1, 3)
    inp = make_inputs(B, 31, 2, 4, 3, normalize, h0=False)
    h0 = torch.rand(N, 2, 4, 3 + int(normalize), dtype=torch.float64)  # z of positive features > 0
    inp["initial_state"] = h0
    varlen = {} if cu is None else {"cu_seqlens": torch.tensor(cu)}
    assert_parity(
        partial(fused_recurrent_linear_attn, reverse=True, **varlen),
        partial(time_reversed_reference(naive_recurrent_linear_attn, ("q", "k", "v")), **varlen),
        inp,
        what=f"reverse normalize={normalize}",
    )


# ----- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [chunk_linear_attn, fused_recurrent_linear_attn, naive_recurrent_linear_attn],
    ids=["chunk", "recurrent", "naive"],
)
def test_errors(fn):
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"normalize: expected a bool, got 'yes'"):
        fn(q, k, v, normalize="yes")
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, H, K, V\] = \[1, 2, 4, 4\]"):
        fn(q, k, v, initial_state=torch.zeros(1, 2, 4, 3), normalize=True)  # needs V + 1 columns
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, H, K, V\] = \[1, 2, 4, 3\]"):
        fn(q, k, v, initial_state=torch.zeros(1, 2, 4, 4), normalize=False)
    with pytest.raises(ValueError, match=r"q: expected 4 dims"):
        fn(q[0], k, v, normalize=True)
    with pytest.raises(ValueError, match=r"v: shape"):
        fn(q, k, v[:, :3], normalize=True)
    with pytest.raises(ValueError, match=r"cu_seqlens: must be non-decreasing"):
        fn(q, k, v, cu_seqlens=torch.tensor([0, 4, 2, 6]))
    with pytest.raises(ValueError, match=r"scale: expected a float"):
        fn(q, k, v, scale=[1.0])
    # fla 0.6 carries a normalised state as (kv [N, H, K, V], z [N, 1, H, K]): refused, with the fix
    fla_state = (torch.zeros(1, 2, 4, 3), torch.zeros(1, 1, 2, 4))
    with pytest.raises(ValueError, match=r"initial_state: got a tuple; .* z_state.squeeze\(1\)"):
        fn(q, k, v, initial_state=fla_state, normalize=True)


def test_reverse_must_be_a_bool():
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"reverse: expected a bool, got None"):
        fused_recurrent_linear_attn(q, k, v, reverse=None)


def test_chunk_size_error():
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive int such as 16, 32 or 64, got 0"):
        chunk_linear_attn(q, k, v, chunk_size=0)
