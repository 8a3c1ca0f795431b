"""Tests for the delta rule and gated delta rule ops (naive, chunk, recurrent).

Both families share one implementation (the delta rule is ``g = 0``), so every test runs on both
through the ``family`` parameter. The naive token loop is the oracle; everything is compared on
outputs, final states and every gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _helpers import assert_parity, assert_rel_close, assert_results_close, rel_err, run_op, tol_for
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops.common import chunks_per_segment
from linearlab.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule, naive_recurrent_delta_rule
from linearlab.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from linearlab.ops.utils import l2norm

FORMS = {
    "delta": {
        "naive": naive_recurrent_delta_rule,
        "recurrent": fused_recurrent_delta_rule,
        "chunk": chunk_delta_rule,
    },
    "gated": {
        "naive": naive_recurrent_gated_delta_rule,
        "recurrent": fused_recurrent_gated_delta_rule,
        "chunk": chunk_gated_delta_rule,
    },
}
FAMILIES = list(FORMS)


def make_inputs(
    family: str,
    B: int = 2,
    T: int = 37,
    H: int = 2,
    K: int = 8,
    V: int = 5,
    dtype: torch.dtype = torch.float64,
    gate_scale: float = 1.0,
    raw_keys: bool = False,
    N: int | None = None,
) -> dict[str, torch.Tensor]:
    """Random inputs in the regime layers use: L2-normalised keys and beta in (0, 1).

    ``raw_keys`` uses small unnormalised keys instead; ``N`` is the number of initial-state rows.
    """
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = 0.3 * torch.randn(B, T, H, K, dtype=torch.float64)
    if not raw_keys:
        k = F.normalize(k, dim=-1)
    x = {
        "q": q,
        "k": k,
        "v": torch.randn(B, T, H, V, dtype=torch.float64),
        "beta": torch.rand(B, T, H, dtype=torch.float64),
        "h0": torch.randn(B if N is None else N, H, K, V, dtype=torch.float64),
    }
    if family == "gated":
        x["g"] = F.logsigmoid(torch.randn(B, T, H, dtype=torch.float64)) * gate_scale
    return {name: t.to(dtype) if name != "h0" else t for name, t in x.items()}


def call(family: str, form: str, x: dict[str, torch.Tensor], **kwargs):
    """Call a form with the family's positional order: (q, k, v, [g,] beta)."""
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if family == "gated" else []) + [x["beta"]]
    kwargs.setdefault("initial_state", x.get("h0"))
    return FORMS[family][form](*args, **kwargs)


def op(family: str, form: str, **fixed):
    """The form taking :func:`make_inputs`' names by keyword (for the parity harness), with
    ``fixed`` keyword arguments such as ``chunk_size`` or ``cu_seqlens``."""

    def run(output_final_state: bool = False, **x):
        return call(family, form, x, output_final_state=output_final_state, **fixed)

    return run


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("raw_keys", [False, True])
def test_parity_chain_outputs_states_and_every_gradient(family, dtype, raw_keys):
    x = make_inputs(family, dtype=dtype, raw_keys=raw_keys)
    ref = run_op(op(family, "naive"), x)
    rec = run_op(op(family, "recurrent"), x)
    chk = run_op(op(family, "chunk", chunk_size=16), x)
    expected = {"o", "ht", "dq", "dk", "dv", "dbeta", "dh0"} | ({"dg"} if family == "gated" else set())
    assert set(ref) == expected
    # the harness also asserts every reference entry is nonzero: no comparison is vacuous
    assert_results_close(rec, ref, tol_for(dtype), "recurrent vs naive")
    assert_results_close(chk, rec, tol_for(dtype), "chunk vs recurrent")
    assert_results_close(chk, ref, tol_for(dtype), "chunk vs naive")


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_across_segments_of_chunks(family):
    """Wide heads make the chunk form work on several segments of chunks; the seams must be exact."""
    from linearlab.ops.gated_delta_rule.chunk import SEGMENT_ELEMENTS

    x = make_inputs(family, B=1, T=300, H=4, K=64, V=64)
    # chunks of 64 tokens, B * H = 4 rows of width max(K, V, C) = 64: more than one segment
    assert math.ceil(300 / 64) > chunks_per_segment(64, SEGMENT_ELEMENTS, 4 * 64)
    assert_parity(op(family, "chunk"), op(family, "naive"), x, tol=1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_inputs_match_reference_and_keep_dtypes(family):
    x = make_inputs(family, T=40, dtype=torch.bfloat16)
    ref = run_op(op(family, "naive"), x)
    for form in ("recurrent", "chunk"):
        got = run_op(op(family, form), x)
        assert got["o"].dtype == torch.bfloat16 and got["ht"].dtype == torch.float32
        assert got["dq"].dtype == torch.bfloat16 and got["dh0"].dtype == torch.float64
        assert_results_close(got, ref, tol_for(torch.bfloat16), form)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_gradcheck_float64(family, form):
    x = make_inputs(family, B=1, T=6, H=1, K=3, V=2)
    names = list(x)
    leaves = [x[n].clone().requires_grad_() for n in names]
    kwargs = {"chunk_size": 4} if form == "chunk" else {}

    def fn(*ts):
        o, ht = call(family, form, dict(zip(names, ts)), output_final_state=True, **kwargs)
        return o, ht

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_chunk_size_invariance(family):
    x = make_inputs(family, T=70)
    base = run_op(op(family, "chunk", chunk_size=64), x)
    for cs in (16, 32, 5):
        assert_results_close(run_op(op(family, "chunk", chunk_size=cs), x), base, 1e-12, f"C={cs}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_state_carry_over_equals_whole_sequence(family, form):
    x = make_inputs(family, T=50)
    o, ht = call(family, form, x, output_final_state=True)
    first = {n: (t[:, :29] if t.dim() >= 3 and n != "h0" else t) for n, t in x.items()}
    second = {n: t[:, 29:] for n, t in x.items() if n != "h0"}
    o1, h1 = call(family, form, first, output_final_state=True)
    o2, h2 = call(family, form, second, initial_state=h1, output_final_state=True)
    assert_rel_close(torch.cat([o1, o2], 1), o, 1e-12, "o")
    assert_rel_close(h2, ht, 1e-12, "ht")


@pytest.mark.parametrize("family", FAMILIES)
def test_token_by_token_decoding_equals_chunk(family):
    x = make_inputs(family, T=20)
    o, ht = call(family, "chunk", x, output_final_state=True, chunk_size=8)
    state, steps = x["h0"], []
    for t in range(20):
        step = {n: v[:, t : t + 1] for n, v in x.items() if n != "h0"}
        o_t, state = call(family, "recurrent", step, initial_state=state, output_final_state=True)
        steps.append(o_t)
    assert_rel_close(torch.cat(steps, 1), o, 1e-12, "o")
    assert_rel_close(state, ht, 1e-12, "ht")


# [0, 5, 5, 23, 40] runs as one padded batch (and has an empty sequence, which must keep its
# initial state); [0, 1, 2, 40] is too uneven to pad and runs sequence by sequence.
VARLEN_CASES = [[0, 5, 5, 23, 40], [0, 1, 2, 40]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
@pytest.mark.parametrize("cu", VARLEN_CASES)
def test_varlen_equals_each_sequence_alone(family, form, cu):
    x = make_inputs(family, B=1, T=40, N=len(cu) - 1)
    o, ht = call(family, form, x, output_final_state=True, cu_seqlens=torch.tensor(cu))
    for n, (s, e) in enumerate(zip(cu[:-1], cu[1:])):
        if e == s:
            assert torch.equal(ht[n], x["h0"][n].to(ht.dtype))
            continue
        alone = {name: t[:, s:e] for name, t in x.items() if name != "h0"}
        o_n, h_n = call(family, "naive", alone, initial_state=x["h0"][n : n + 1], output_final_state=True)
        assert_rel_close(o[:, s:e], o_n, 1e-10, f"o seq {n}")
        assert_rel_close(ht[n : n + 1], h_n, 1e-10, f"ht seq {n}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cu", VARLEN_CASES)
def test_varlen_gradients_match_reference(family, cu):
    x = make_inputs(family, B=1, T=40, N=len(cu) - 1)
    cu_t = torch.tensor(cu)
    ref = run_op(op(family, "naive", cu_seqlens=cu_t), x)
    for form in ("chunk", "recurrent"):
        fixed = {"chunk_size": 16} if form == "chunk" else {}
        assert_results_close(run_op(op(family, form, cu_seqlens=cu_t, **fixed), x), ref, 1e-10, form)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("T", [1, 2, 13, 67])
def test_short_prime_and_ragged_lengths(family, T):
    x = make_inputs(family, B=1, T=T, H=3, K=4, V=7)
    ref = call(family, "naive", x, output_final_state=True)
    for form in ("recurrent", "chunk"):
        o, ht = call(family, form, x, output_final_state=True)
        assert o.shape == (1, T, 3, 7) and ht.shape == (1, 3, 4, 7)
        assert_rel_close(o, ref[0], 1e-10, f"{form} o")
        assert_rel_close(ht, ref[1], 1e-10, f"{form} ht")


@settings(max_examples=12, deadline=None)
@given(
    family=st.sampled_from(FAMILIES),
    B=st.integers(1, 2),
    T=st.integers(1, 40),
    H=st.integers(1, 2),
    K=st.integers(1, 6),
    V=st.integers(1, 6),
    chunk_size=st.sampled_from([4, 16, 64]),
    with_h0=st.booleans(),
)
def test_hypothesis_shapes_chunk_and_recurrent_match_naive(family, B, T, H, K, V, chunk_size, with_h0):
    x = make_inputs(family, B=B, T=T, H=H, K=K, V=V)
    if not with_h0:
        x["h0"] = None
    o_ref, h_ref = call(family, "naive", x, output_final_state=True)
    o_c, h_c = call(family, "chunk", x, output_final_state=True, chunk_size=chunk_size)
    o_r, h_r = call(family, "recurrent", x, output_final_state=True)
    for got, ref in ((o_c, o_ref), (h_c, h_ref), (o_r, o_ref), (h_r, h_ref)):
        assert got.shape == ref.shape
        assert_rel_close(got, ref, 1e-10, "chunk/recurrent vs naive")


def test_strong_gates_are_finite_and_exact():
    x = make_inputs("gated", T=150, dtype=torch.float32)
    x["g"] = -20.0 * torch.rand_like(x["g"])  # down to -20 per step: exp(cumsum) underflows
    x["g"][:, ::3] = -20.0
    got, _ = assert_parity(op("gated", "chunk"), op("gated", "naive"), x, tol=1e-4)
    for name, t in got.items():
        assert torch.isfinite(t).all(), name


@pytest.mark.parametrize("family", FAMILIES)
def test_long_sequence_is_finite(family):
    T = 65536
    x = make_inputs(family, B=1, T=T, H=1, K=8, V=8, dtype=torch.float32)
    with torch.no_grad():
        o, ht = call(family, "chunk", x, output_final_state=True)
        # the last tokens only see the recent past (decay / overwrite), so the tail is checkable
        tail = {n: t[:, -100:] for n, t in x.items() if n != "h0"}
        o_tail = call(family, "chunk", tail, initial_state=None)[0]
    assert torch.isfinite(o).all() and torch.isfinite(ht).all()
    assert o.abs().max() < 1e3
    if family == "gated":
        assert_rel_close(o[:, -10:], o_tail[:, -10:], 1e-3, "tail o")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_qk_l2norm_in_kernel_equals_normalising_outside(family, form):
    x = make_inputs(family, raw_keys=True)
    o, ht = call(family, form, x, output_final_state=True, use_qk_l2norm_in_kernel=True)
    outside = dict(x, q=l2norm(x["q"]), k=l2norm(x["k"]))
    o2, ht2 = call(family, form, outside, output_final_state=True)
    assert_rel_close(o, o2, 1e-13, "o")
    assert_rel_close(ht, ht2, 1e-13, "ht")
    assert rel_err(o, call(family, form, x)[0]) > 1e-3  # the flag really changes the inputs


@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
def test_delta_rule_is_gated_delta_rule_with_zero_gate(form):
    x = make_inputs("gated")
    o_g, h_g = call("gated", form, dict(x, g=torch.zeros_like(x["g"])), output_final_state=True)
    o_d, h_d = call("delta", form, x, output_final_state=True)
    assert_rel_close(o_d, o_g, 1e-13, "o")
    assert_rel_close(h_d, h_g, 1e-13, "ht")


@pytest.mark.parametrize("family", FAMILIES)
def test_scale_default_and_final_state_flag(family):
    x = make_inputs(family, K=9)
    o_default, ht = call(family, "chunk", x)
    assert ht is None
    o_explicit, _ = call(family, "chunk", x, scale=1 / 3)
    o_double, _ = call(family, "chunk", x, scale=2 / 3)
    assert_rel_close(o_default, o_explicit, 1e-14, "default scale")
    assert_rel_close(o_double, 2 * o_explicit, 1e-13, "scale is linear")  # o is linear in the scale


def test_delta_rule_overwrites_a_stored_key():
    """With beta = 1 and a unit key, writing (k, v1) then (k, v2) makes the memory return v2 for k."""
    k = F.normalize(torch.randn(1, 1, 1, 4, dtype=torch.float64), dim=-1).expand(1, 2, 1, 4)
    v = torch.randn(1, 2, 1, 3, dtype=torch.float64)
    beta = torch.ones(1, 2, 1, dtype=torch.float64)
    o, _ = chunk_delta_rule(k, k, v, beta, scale=1.0)
    assert torch.allclose(o[0, 1, 0], v[0, 1, 0], atol=1e-12)


# ------------------------------------------------------------------------------------------ errors


def _bad(family: str, **override):
    x = make_inputs(family, B=2, T=5, H=2, K=4, V=3)
    kw = {k: override.pop(k) for k in list(override) if k in ("cu_seqlens", "scale", "chunk_size")}
    x.update(override)
    return x, kw


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
@pytest.mark.parametrize(
    "override, match",
    [
        ({"q": torch.randn(2, 5, 8)}, r"q: expected 4 dims"),
        (
            {"k": torch.randn(2, 5, 2, 3, dtype=torch.float64)},
            r"k: shape \[2, 5, 2, 3\] must equal q's shape",
        ),
        ({"v": torch.randn(2, 4, 2, 3, dtype=torch.float64)}, r"v: shape \[2, 4, 2, 3\] must match q's"),
        (
            {"beta": torch.rand(2, 5, 3, dtype=torch.float64)},
            r"beta: expected shape \[2, 5, 2\], got \[2, 5, 3\]",
        ),
        ({"beta": torch.full((2, 5, 2), math.nan, dtype=torch.float64)}, r"beta: must be finite"),
        ({"beta": torch.ones(2, 5, 2, dtype=torch.long)}, r"beta: expected a floating-point tensor"),
        ({"beta": torch.rand(2, 5, 2, device="meta")}, r"beta: on device meta"),
        ({"k": torch.randn(2, 5, 2, 4, device="meta")}, r"q, k, v: all tensors must be on one device"),
        ({"h0": torch.randn(2, 2, 3, 4)}, r"initial_state: expected shape \[N, H, K, V\] = \[2, 2, 4, 3\]"),
        ({"h0": torch.randn(2, 2, 4, 3, device="meta")}, r"initial_state: on device meta"),
        (
            {"h0": torch.ones(2, 2, 4, 3, dtype=torch.int32)},
            r"initial_state: expected a floating-point tensor",
        ),
        ({"cu_seqlens": torch.tensor([0, 5])}, r"cu_seqlens: packed sequences need batch size B == 1"),
        ({"scale": "big"}, r"scale: expected a float or None, got str"),
    ],
)
def test_errors_name_the_argument(family, form, override, match):
    x, kw = _bad(family, **override)
    with pytest.raises(ValueError, match=match):
        call(family, form, x, **kw)


@pytest.mark.parametrize("form", ["chunk", "recurrent", "naive"])
@pytest.mark.parametrize(
    "g, match",
    [
        (torch.full((2, 5, 2), 0.5, dtype=torch.float64), r"g: log-space gates must be <= 0.*max 0.5"),
        (torch.full((2, 5, 2), -math.inf, dtype=torch.float64), r"g: must be finite"),
        (torch.zeros(2, 5, 1, dtype=torch.float64), r"g: expected shape \[2, 5, 2\], got \[2, 5, 1\]"),
        (torch.zeros(2, 5, 2, device="meta"), r"g: on device meta"),
    ],
)
def test_gate_errors(form, g, match):
    x, _ = _bad("gated", g=g)
    with pytest.raises(ValueError, match=match):
        call("gated", form, x)


@pytest.mark.parametrize("family", FAMILIES)
def test_cu_seqlens_must_cover_the_sequence(family):
    x = make_inputs(family, B=1, T=10, N=2)
    with pytest.raises(ValueError, match=r"cu_seqlens: must start at 0 and end at T = 10, got 0 \.\.\. 8"):
        call(family, "chunk", x, cu_seqlens=torch.tensor([0, 4, 8]))
    with pytest.raises(ValueError, match=r"initial_state: expected shape \[N, H, K, V\] = \[3, 2, 8, 5\]"):
        call(family, "chunk", x, cu_seqlens=torch.tensor([0, 4, 8, 10]))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk_size", [0, -16, 16.0, True])
def test_chunk_size_must_be_a_positive_int(family, chunk_size):
    x = make_inputs(family, T=5)
    with pytest.raises(ValueError, match=r"chunk_size: expected a positive int such as 16, 32 or 64"):
        call(family, "chunk", x, chunk_size=chunk_size)


def test_missing_beta_is_reported():
    q = torch.randn(1, 3, 1, 2)
    with pytest.raises(ValueError, match=r"beta: the delta rule needs a per-token step size \[B, T, H\]"):
        chunk_delta_rule(q, q, q, None)
