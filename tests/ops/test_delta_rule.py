"""Tests for the delta rule and gated delta rule ops (naive, chunk, recurrent).

Both families share one implementation (the delta rule is ``g = 0``), so every test runs on both
through the ``family`` parameter. The naive token loop is the oracle; everything is compared on
outputs, final states and every gradient.
"""

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
    rel_err,
    run_op,
    tol_for,
    v_first_reference,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from linearlab.ops.common import chunks_per_segment
from linearlab.ops.delta_rule import chunk_delta_rule, fused_recurrent_delta_rule, naive_recurrent_delta_rule
from linearlab.ops.gated_delta_rule import (
    chunk_gated_delta_rule,
    fused_recurrent_gated_delta_rule,
    naive_recurrent_gated_delta_rule,
)
from linearlab.ops.utils import chunk_indices, l2norm

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
    HV: int | None = None,
) -> dict[str, torch.Tensor]:
    """Random inputs in the regime layers use: L2-normalised keys and beta in (0, 1).

    ``raw_keys`` uses small unnormalised keys instead; ``N`` is the number of initial-state rows;
    ``HV`` the number of value heads (default ``H``; a multiple of it is grouped value attention:
    ``v``, ``beta``, ``g`` and the state then have ``HV`` heads).
    """
    HV = H if HV is None else HV
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = 0.3 * torch.randn(B, T, H, K, dtype=torch.float64)
    if not raw_keys:
        k = F.normalize(k, dim=-1)
    x = {
        "q": q,
        "k": k,
        "v": torch.randn(B, T, HV, V, dtype=torch.float64),
        "beta": torch.rand(B, T, HV, dtype=torch.float64),
        "h0": torch.randn(B if N is None else N, HV, K, V, dtype=torch.float64),
    }
    if family == "gated":
        x["g"] = F.logsigmoid(torch.randn(B, T, HV, dtype=torch.float64)) * gate_scale
    return {name: t.to(dtype) if name != "h0" else t for name, t in x.items()}


def call(family: str, form: str, x: dict[str, torch.Tensor], **kwargs):
    """Call a form with ``(q, k, v, [g])`` by position and ``beta`` by keyword: the positional
    orders differ (fla's ``fused_recurrent_gated_delta_rule`` takes ``(q, k, v, g, gk, gv, beta)``)."""
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if family == "gated" else [])
    kwargs.setdefault("initial_state", x.get("h0"))
    return FORMS[family][form](*args, beta=x["beta"], **kwargs)


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
@pytest.mark.parametrize("segment_elements", [None, 2**16], ids=["default", "small"])
def test_parity_across_segments_of_chunks(family, segment_elements, monkeypatch):
    """Wide heads make the chunk form work on several segments of chunks; the seams must be exact
    (also with smaller segments, which put a seam between every two chunks here)."""
    from linearlab.ops.gated_delta_rule import chunk as chunk_mod

    if segment_elements is not None:
        monkeypatch.setattr(chunk_mod, "SEGMENT_ELEMENTS", segment_elements)
    T = 1100 if segment_elements is None else 300
    x = make_inputs(family, B=1, T=T, H=4, K=64, V=64)
    # chunks of 64 tokens, B * H = 4 rows of width max(K, V, C) = 64: more than one segment
    assert math.ceil(T / 64) > chunks_per_segment(64, chunk_mod.SEGMENT_ELEMENTS, 4 * 64)
    assert_parity(op(family, "chunk"), op(family, "naive"), x, tol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_half_precision_inputs_match_reference_and_keep_dtypes(family, dtype):
    x = make_inputs(family, T=40, dtype=dtype)
    ref = run_op(op(family, "naive"), x)
    for form in ("recurrent", "chunk"):
        got = run_op(op(family, form), x)
        assert got["o"].dtype == dtype and got["ht"].dtype == torch.float32
        assert got["dq"].dtype == dtype and got["dh0"].dtype == torch.float64
        assert_results_close(got, ref, tol_for(dtype), form)


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
    with pytest.raises(
        ValueError, match=r"beta: the delta rule needs a per-token step size \[B, T, HV\] = \[1, 3, 1\]"
    ):
        chunk_delta_rule(q, q, q, None)


# ------------------------------------------------------------------------------------------------
# fla 0.6 options of the gated delta rule: grouped value heads, per-key / per-value gates, the
# Mamba-2 gate and beta from raw inputs, the value-first state layout, fla's precomputed helpers.
# Each is proven against the naive loop with the option applied by hand outside it.


def gdn_reference(
    q,
    k,
    v,
    g,
    beta,
    initial_state=None,
    output_final_state=False,
    *,
    gk=None,
    gv=None,
    A_log=None,
    dt_bias=None,
    use_gate_in_kernel=False,
    use_beta_sigmoid_in_kernel=False,
    allow_neg_eigval=False,
    state_v_first=False,
    use_qk_l2norm_in_kernel=False,
    cu_seqlens=None,
):
    """The naive loop with fla's options written out by hand: the decay ``-exp(A_log) *
    softplus(g + dt_bias)`` (softplus as ``log1p(exp)``), the step size ``sigmoid(beta)`` (times 2
    with ``allow_neg_eigval``), the state transposed for ``state_v_first``. Both are computed in
    float32 for half-precision inputs (the precision the loop runs in)."""
    wide = torch.promote_types(q.dtype, torch.float32)
    if use_gate_in_kernel:
        x = g.to(wide) if dt_bias is None else g.to(wide) + dt_bias.to(wide)
        g = -A_log.to(wide).exp() * torch.log1p(torch.exp(x))
    if use_beta_sigmoid_in_kernel:
        beta = (2.0 if allow_neg_eigval else 1.0) * torch.sigmoid(beta.to(wide))
    naive = (
        v_first_reference(naive_recurrent_gated_delta_rule)
        if state_v_first
        else naive_recurrent_gated_delta_rule
    )
    gates = {n: t for n, t in (("gk", gk), ("gv", gv)) if t is not None}
    return naive(
        q,
        k,
        v,
        g,
        beta,
        initial_state=initial_state,
        output_final_state=output_final_state,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel,
        cu_seqlens=cu_seqlens,
        **gates,
    )


GDN = {"chunk": partial(chunk_gated_delta_rule, chunk_size=16), "recurrent": fused_recurrent_gated_delta_rule}


def gdn_inputs(B=2, T=30, H=2, HV=None, K=8, V=5, N=None, dtype=torch.float64, v_first=False):
    """``{q, k, v, g, beta, initial_state}`` by the ops' own names (``HV`` value heads)."""
    x = make_inputs("gated", B=B, T=T, H=H, K=K, V=V, N=N, HV=HV, dtype=dtype)
    h0 = x.pop("h0")
    x["initial_state"] = h0.transpose(-1, -2).contiguous() if v_first else h0
    return x


def varlen_args(cu):
    return {} if cu is None else {"cu_seqlens": torch.tensor(cu)}


# [0, 5, 5, 23, 40] runs as one padded batch, [0, 1, 2, 40] sequence by sequence (see VARLEN_CASES)
OPTION_VARLEN = [None, [0, 5, 5, 23, 40], [0, 1, 2, 40]]


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("cu", OPTION_VARLEN, ids=["fixed", "padded", "uneven"])
@pytest.mark.parametrize("HV", [4, 6])
def test_grouped_value_heads_match_naive(form, cu, HV):
    """GVA (fla's ``HV > H``): value head ``j`` reads query/key head ``j // (HV // H)``; outputs,
    states and every gradient (``dq``, ``dk`` summed over each group) equal the naive loop's."""
    B, N = (2, None) if cu is None else (1, len(cu) - 1)
    x = gdn_inputs(B=B, T=40, H=2, HV=HV, N=N)
    fast = partial(GDN[form], **varlen_args(cu))
    got, _ = assert_parity(fast, partial(naive_recurrent_gated_delta_rule, **varlen_args(cu)), x, what=form)
    assert got["o"].shape == (B, 40, HV, 5) and got["ht"].shape == (N or B, HV, 8, 5)


def test_naive_grouped_value_heads_equal_repeated_queries_and_keys():
    """The naive loop's GVA is the plain loop on ``q, k`` repeated ``HV // H`` times per head
    (``repeat_interleave``, fla's head mapping), gradients summed back over each group."""
    x = gdn_inputs(T=20, H=2, HV=6)

    def repeated(q, k, **kw):
        return naive_recurrent_gated_delta_rule(q.repeat_interleave(3, 2), k.repeat_interleave(3, 2), **kw)

    assert_parity(naive_recurrent_gated_delta_rule, repeated, x, what="naive GVA")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("bias", [True, False], ids=["dt_bias", "no_bias"])
@pytest.mark.parametrize("cu", [None, [0, 5, 5, 23, 40]], ids=["fixed", "varlen"])
def test_gate_in_kernel_matches_naive_with_the_gate_computed_outside(form, bias, cu):
    """``use_gate_in_kernel=True``: ``g`` is the raw gate input (any sign), the decay is
    ``-exp(A_log) * softplus(g + dt_bias)``; gradients reach ``g``, ``A_log`` and ``dt_bias``."""
    B, N = (2, None) if cu is None else (1, 4)
    x = gdn_inputs(B=B, T=40, HV=4, N=N)
    x["g"] = 3.0 * torch.randn_like(x["g"])  # raw: positive too
    x["g"][..., 0, 0] = 25.0  # above softplus's linear threshold (20)
    x["A_log"] = torch.empty(4, dtype=torch.float64).uniform_(1, 16).log()  # Mamba-2's init range
    if bias:
        x["dt_bias"] = 0.5 * torch.randn(4, dtype=torch.float64)
    opts = dict(use_gate_in_kernel=True, **varlen_args(cu))
    got, _ = assert_parity(partial(GDN[form], **opts), partial(gdn_reference, **opts), x, what=form)
    assert got["dA_log"].shape == (4,) and (not bias or got["ddt_bias"].shape == (4,))


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("neg", [False, True], ids=["sigmoid", "2sigmoid"])
def test_beta_logits_match_naive_with_the_sigmoid_outside(form, neg):
    """``use_beta_sigmoid_in_kernel``: beta given as logits; ``allow_neg_eigval`` makes the step
    size ``2 sigmoid(beta)`` in (0, 2) (negative eigenvalues of ``I - beta k^T k``)."""
    x = gdn_inputs(T=40, HV=4)
    x["beta"] = 2.0 * torch.randn_like(x["beta"])
    opts = dict(use_beta_sigmoid_in_kernel=True, allow_neg_eigval=neg)
    assert_parity(partial(GDN[form], **opts), partial(gdn_reference, **opts), x, what=form)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize("cu", [None, [0, 5, 5, 23, 40]], ids=["fixed", "varlen"])
def test_state_v_first_matches_naive_on_transposed_states(form, cu):
    """``state_v_first=True``: ``initial_state`` and the final state are fla's ``[N, HV, V, K]``."""
    B, N = (2, None) if cu is None else (1, 4)
    x = gdn_inputs(B=B, T=40, HV=4, N=N, v_first=True)
    opts = dict(state_v_first=True, **varlen_args(cu))
    got, _ = assert_parity(partial(GDN[form], **opts), partial(gdn_reference, **opts), x, what=form)
    assert got["ht"].shape == (N or B, 4, 5, 8) and got["ht"].is_contiguous()


@pytest.mark.parametrize("gates", ["gk", "gv", "gk+gv", "g+gk+gv"])
@pytest.mark.parametrize("cu", [None, [0, 5, 5, 23, 40]], ids=["fixed", "varlen"])
def test_recurrent_per_key_and_per_value_gates_match_naive(gates, cu):
    """``fused_recurrent_gated_delta_rule``'s ``gk: [B, T, HV, K]`` and ``gv: [B, T, HV, V]`` decay
    the state's rows and columns before the delta update, like ``g`` does as a whole."""
    B, N = (2, None) if cu is None else (1, 4)
    x = gdn_inputs(B=B, T=40, HV=4, N=N)
    if "g+" not in gates:
        x["g"] = None
    if "gk" in gates:
        x["gk"] = F.logsigmoid(torch.randn(B, 40, 4, 8, dtype=torch.float64))
    if "gv" in gates:
        x["gv"] = F.logsigmoid(torch.randn(B, 40, 4, 5, dtype=torch.float64))
    assert_parity(
        partial(fused_recurrent_gated_delta_rule, **varlen_args(cu)),
        partial(naive_recurrent_gated_delta_rule, **varlen_args(cu)),
        x,
        what=gates,
    )


def test_naive_key_and_value_gates_decay_rows_and_columns():
    """Independent checks of the naive loop's ``gk`` / ``gv``: with ``beta = 0`` nothing is written,
    so the state is ``h0`` decayed row-wise by ``exp(sum gk)`` and column-wise by ``exp(sum gv)``;
    and ``gk`` equal to ``g`` on every key is the scalar gate ``g``."""
    x = gdn_inputs(T=15)
    gk = F.logsigmoid(torch.randn(2, 15, 2, 8, dtype=torch.float64))
    gv = F.logsigmoid(torch.randn(2, 15, 2, 5, dtype=torch.float64))
    h0 = x["initial_state"]
    _, ht = naive_recurrent_gated_delta_rule(
        **dict(x, beta=torch.zeros_like(x["beta"])), gk=gk, gv=gv, output_final_state=True
    )
    expect = h0 * x["g"].sum(1).exp()[..., None, None]
    expect = expect * gk.sum(1).exp()[..., :, None] * gv.sum(1).exp()[..., None, :]
    assert_rel_close(ht, expect, 1e-13, "rows by gk, columns by gv")
    g_as_gk = x["g"][..., None].expand(-1, -1, -1, 8)
    for fn in (naive_recurrent_gated_delta_rule, fused_recurrent_gated_delta_rule):
        o_g, h_g = fn(**x, output_final_state=True)
        o_k, h_k = fn(**dict(x, g=None), gk=g_as_gk, output_final_state=True)
        assert_rel_close(o_k, o_g, 1e-13, "o")
        assert_rel_close(h_k, h_g, 1e-13, "ht")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=["f64", "f32", "bf16", "fp16"]
)
def test_every_option_at_once_matches_naive(form, dtype):
    """GVA, the in-kernel gate, beta logits with negative eigenvalues, the v-first state, the
    in-kernel L2 norm and packed sequences together (and ``gk``, ``gv`` in the recurrent form),
    in every input dtype (tolerances of ``tol_for``; states stay float32/float64)."""
    cu = [0, 5, 5, 23, 40]
    x = gdn_inputs(B=1, T=40, HV=4, N=4, dtype=dtype, v_first=True)
    x["q"], x["k"] = 2.0 * x["q"], 3.0 * x["k"]  # unnormalised: the in-kernel L2 norm matters
    x["g"] = 2.0 * torch.randn_like(x["g"])
    x["beta"] = torch.randn_like(x["beta"])
    x["A_log"] = torch.empty(4, dtype=dtype).uniform_(1, 16).log()
    x["dt_bias"] = 0.5 * torch.randn(4, dtype=dtype)
    if form == "recurrent":
        x["gk"] = F.logsigmoid(torch.randn(1, 40, 4, 8, dtype=dtype))
        x["gv"] = F.logsigmoid(torch.randn(1, 40, 4, 5, dtype=dtype))
    opts = dict(
        use_gate_in_kernel=True,
        use_beta_sigmoid_in_kernel=True,
        allow_neg_eigval=True,
        state_v_first=True,
        use_qk_l2norm_in_kernel=True,
        cu_seqlens=torch.tensor(cu),
    )
    assert_parity(partial(GDN[form], **opts), partial(gdn_reference, **opts), x, what=f"{form} all")


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
def test_gradcheck_with_fla_options(form):
    x = gdn_inputs(B=1, T=6, H=1, HV=2, K=3, V=2, v_first=True)
    x["g"] = torch.randn_like(x["g"])
    x["beta"] = torch.randn_like(x["beta"])
    x["A_log"], x["dt_bias"] = torch.rand(2, dtype=torch.float64), torch.randn(2, dtype=torch.float64)
    if form == "recurrent":
        x["gk"] = F.logsigmoid(torch.randn(1, 6, 2, 3, dtype=torch.float64))
        x["gv"] = F.logsigmoid(torch.randn(1, 6, 2, 2, dtype=torch.float64))
    names = list(x)
    fast = partial(GDN[form], chunk_size=4) if form == "chunk" else GDN[form]

    def fn(*ts):
        return fast(
            **dict(zip(names, ts)),
            output_final_state=True,
            use_gate_in_kernel=True,
            use_beta_sigmoid_in_kernel=True,
            allow_neg_eigval=True,
            state_v_first=True,
        )

    leaves = [x[n].clone().requires_grad_() for n in names]
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("family", FAMILIES)
def test_recurrent_beta_defaults_to_one(family):
    """fla's recurrent forms take ``beta=None`` as a step size of 1 (the chunk forms require it)."""
    x = make_inputs(family, T=12)
    x.pop("h0")
    args = [x["q"], x["k"], x["v"]] + ([x["g"]] if family == "gated" else [])
    o, ht = FORMS[family]["recurrent"](*args, output_final_state=True)
    o1, ht1 = FORMS[family]["recurrent"](*args, beta=torch.ones_like(x["beta"]), output_final_state=True)
    assert torch.equal(o, o1) and torch.equal(ht, ht1)
    with pytest.raises(ValueError, match=r"beta: the delta rule needs a per-token step size"):
        FORMS[family]["chunk"](*args, None)


def test_recurrent_takes_flas_positional_order_and_catches_beta_in_gks_place():
    """fla 0.6: ``fused_recurrent_gated_delta_rule(q, k, v, g, gk, gv, beta, scale, initial_state,
    output_final_state, ...)``. A call in the old ``(q, k, v, g, beta)`` order puts beta where
    ``gk`` goes: that is a ValueError saying so, not a silent misreading."""
    x = gdn_inputs(T=10)
    q, k, v, g, beta, h0 = (x[n] for n in ("q", "k", "v", "g", "beta", "initial_state"))
    pos = fused_recurrent_gated_delta_rule(q, k, v, g, None, None, beta, 0.5, h0, True)
    kw = fused_recurrent_gated_delta_rule(
        q, k, v, g, beta=beta, scale=0.5, initial_state=h0, output_final_state=True
    )
    assert torch.equal(pos[0], kw[0]) and torch.equal(pos[1], kw[1])
    with pytest.raises(
        ValueError, match=r"gk: expected shape .* the shape of beta, and no beta: .* pass beta by keyword"
    ):
        fused_recurrent_gated_delta_rule(q, k, v, g, beta)


def test_chunk_indices_follow_flas_layout():
    """fla's ``prepare_chunk_indices``: one ``[sequence, chunk]`` row per chunk, none for an empty
    sequence (here ``cu_seqlens = [0, 5, 5, 70]``, chunks of 64: 1, 0 and 2 chunks)."""
    assert chunk_indices(torch.tensor([0, 5, 5, 70]), 64) == [[0, 0], [2, 0], [2, 1]]
    assert chunk_indices(torch.tensor([0, 40]), 16) == [[0, 0], [0, 1], [0, 2]]


@pytest.mark.parametrize("family", FAMILIES)
def test_precomputed_varlen_helpers_are_checked_and_change_nothing(family):
    """``cu_seqlens_cpu`` (both chunk forms) and ``chunk_indices`` (gated): accepted when they match
    ``cu_seqlens``, unused (the result is bit-identical), a ValueError when they do not."""
    cu = torch.tensor([0, 5, 5, 23, 40])
    x = make_inputs(family, B=1, T=40, N=4)
    o, ht = call(family, "chunk", x, output_final_state=True, cu_seqlens=cu, chunk_size=16)
    extra = {"cu_seqlens_cpu": cu.clone()}
    if family == "gated":
        extra["chunk_indices"] = torch.tensor(chunk_indices(cu, 16))
    o2, ht2 = call(family, "chunk", x, output_final_state=True, cu_seqlens=cu, chunk_size=16, **extra)
    assert torch.equal(o, o2) and torch.equal(ht, ht2)
    with pytest.raises(ValueError, match=r"cu_seqlens_cpu: must hold the same boundaries as cu_seqlens"):
        call(family, "chunk", x, cu_seqlens=cu, cu_seqlens_cpu=torch.tensor([0, 5, 6, 23, 40]))
    if family == "gated":
        with pytest.raises(
            ValueError,
            match=r"chunk_indices: does not match cu_seqlens with chunk_size = 64: expected 3 rows, got 5",
        ):
            call(family, "chunk", x, cu_seqlens=cu, chunk_indices=extra["chunk_indices"])  # made for 16
        with pytest.raises(ValueError, match=r"chunk_indices: given without cu_seqlens"):
            call(family, "chunk", dict(x, h0=x["h0"][:1]), chunk_indices=extra["chunk_indices"])


def _gdn_error_inputs():
    return gdn_inputs(B=1, T=5, H=2, HV=4, K=4, V=3)


@pytest.mark.parametrize("form", ["chunk", "recurrent"])
@pytest.mark.parametrize(
    "override, match",
    [
        ({"v": torch.randn(1, 5, 3, 3, dtype=torch.float64)}, r"v: shape \[1, 5, 3, 3\] must match q's \[B, T\] = \[1, 5\] and have HV heads, a multiple of q's H = 2"),
        ({"beta": torch.rand(1, 5, 2, dtype=torch.float64)}, r"beta: expected shape \[1, 5, 4\], got \[1, 5, 2\]"),
        ({"g": torch.zeros(1, 5, 2, dtype=torch.float64)}, r"g: expected shape \[1, 5, 4\]"),
        ({"initial_state": torch.zeros(1, 2, 4, 3, dtype=torch.float64)}, r"initial_state: expected shape \[N, H, K, V\] = \[1, 4, 4, 3\]"),
        ({"state_v_first": True}, r"initial_state: expected shape \[N, H, V, K\] = \[1, 4, 3, 4\] \(state_v_first=True\)"),
        ({"allow_neg_eigval": True}, r"allow_neg_eigval: True requires use_beta_sigmoid_in_kernel=True"),
        ({"use_gate_in_kernel": True}, r"A_log: required with use_gate_in_kernel=True \(shape \[HV\] = \[4\]\)"),
        ({"use_gate_in_kernel": True, "g": None, "A_log": torch.zeros(4)}, r"g: use_gate_in_kernel=True computes the decay from the raw gate input"),
        ({"use_gate_in_kernel": True, "A_log": torch.zeros(2)}, r"A_log: expected shape \[4\], got \[2\]"),
        ({"use_gate_in_kernel": True, "A_log": torch.zeros(4), "dt_bias": torch.zeros(4, 1)}, r"dt_bias: expected shape \[4\]"),
        ({"use_gate_in_kernel": True, "A_log": torch.tensor([0.0, 1, 2, math.inf])}, r"A_log: must be finite"),
        ({"use_beta_sigmoid_in_kernel": 1}, r"use_beta_sigmoid_in_kernel: expected a bool, got 1"),
        ({"state_v_first": "no"}, r"state_v_first: expected a bool, got 'no'"),
        ({"use_qk_l2norm_in_kernel": None}, r"use_qk_l2norm_in_kernel: expected a bool, got None"),
    ],
)  # fmt: skip
def test_option_errors_name_the_argument(form, override, match):
    x = _gdn_error_inputs()
    x.update(override)
    with pytest.raises(ValueError, match=match):
        GDN[form](**x)


def test_option_errors_of_one_form():
    x = _gdn_error_inputs()
    with pytest.raises(ValueError, match=r"cp_context: fla's context parallelism .* is not available here"):
        chunk_gated_delta_rule(**x, cp_context=object())
    with pytest.raises(ValueError, match=r"gk: expected shape \[1, 5, 4, 4\], got \[1, 5, 4, 3\]"):
        fused_recurrent_gated_delta_rule(**x, gk=torch.zeros(1, 5, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"gv: log-space gates must be <= 0"):
        fused_recurrent_gated_delta_rule(**x, gv=torch.ones(1, 5, 4, 3, dtype=torch.float64))
    # without use_gate_in_kernel, fla ignores A_log and dt_bias, and so does this
    o, _ = fused_recurrent_gated_delta_rule(**x, A_log=torch.zeros(7))
    assert torch.equal(o, fused_recurrent_gated_delta_rule(**x)[0])


# ------------------------------------------------------------------------------------------------
# Internals of the chunk form's fast paths: the single-chunk path (T <= chunk_size, no initial
# state), gradients that reach only one output (no materialised zeros), the cached masks, the
# blocked unit-lower inverse and the float-only flushes. Each is proven against the naive loop
# or a plain torch reference.

from linearlab.ops.gated_delta_rule import chunk as chunk_module  # noqa: E402


def _losses(x, fn, which, seed=3):
    """Output, final state and every gradient of ``fn`` with a loss on ``which`` of ``o, ht``."""
    leaves = {n: (t.detach().clone().requires_grad_() if t is not None else None) for n, t in x.items()}
    o, ht = fn(leaves)
    gen = torch.Generator().manual_seed(seed)
    r_o = torch.randn(o.shape, generator=gen, dtype=torch.float64)
    r_h = torch.randn(ht.shape, generator=gen, dtype=torch.float64)
    loss = 0.0
    if "o" in which:
        loss = loss + (o.double() * r_o).sum()
    if "ht" in which:
        loss = loss + (ht.double() * r_h).sum()
    loss.backward()
    grads = {f"d{n}": t.grad for n, t in leaves.items() if t is not None}
    return {"o": o.detach(), "ht": ht.detach(), **grads}


@pytest.fixture
def single_calls(monkeypatch):
    """Counts the calls of the single-chunk forward (proves which path ran)."""
    calls = []
    real = chunk_module._forward_single

    def spy(*args):
        calls.append(args[1].shape)
        return real(*args)

    monkeypatch.setattr(chunk_module, "_forward_single", spy)
    return calls


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T", [1, 37, 64])
@pytest.mark.parametrize("which", ["o+ht", "o", "ht"])
def test_single_chunk_path_matches_naive(family, dtype, T, which, single_calls):
    """T <= chunk_size without an initial state runs the single-chunk path (no W, no scan); its
    outputs and every gradient match the naive loop, also when only one output reaches the loss
    (the other's gradient then arrives as None and its work is skipped)."""
    x = make_inputs(family, B=2, T=T, H=2, K=8, V=5, dtype=dtype)
    x.pop("h0")
    ref = _losses(x, lambda y: call(family, "naive", y, output_final_state=True, initial_state=None), which)
    got = _losses(x, lambda y: call(family, "chunk", y, output_final_state=True, chunk_size=64), which)
    assert len(single_calls) == 1
    for name, r in ref.items():
        a = got[name]
        if r is None:  # the queries do not reach the final state: zeros (or None) are right
            assert a is None or not a.any(), name
            continue
        assert a.dtype == r.dtype and a.shape == r.shape, name
        if name == "dg" and T == 1:  # one token: its gate only multiplies the zero initial state
            assert r.abs().max() == 0 and a.abs().max() == 0
            continue
        assert r.abs().sum() > 0, f"{name}: vacuous comparison"
        assert_rel_close(a, r, tol_for(dtype), f"{which}: {name}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("which", ["o+ht", "o", "ht"])
def test_single_chunk_path_in_groups_of_rows_matches_naive(family, which, single_calls, monkeypatch):
    """The single-chunk path runs the B*H rows in groups (``SINGLE_GROUP``); uneven groups (7 rows
    in groups of 3) give the naive loop's outputs and gradients."""
    monkeypatch.setattr(chunk_module, "SINGLE_GROUP", 3)
    x = make_inputs(family, B=7, T=37, H=1, K=8, V=5)
    x.pop("h0")
    ref = _losses(x, lambda y: call(family, "naive", y, output_final_state=True, initial_state=None), which)
    got = _losses(x, lambda y: call(family, "chunk", y, output_final_state=True, chunk_size=64), which)
    assert len(single_calls) == 3
    for name, r in ref.items():
        if r is None:  # the queries do not reach the final state: zeros (or None) are right
            assert got[name] is None or not got[name].any(), name
            continue
        assert r.abs().sum() > 0, f"{name}: vacuous comparison"
        assert_rel_close(got[name], r, 1e-10, f"{which}: {name}")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("with_h0", [True, False])
@pytest.mark.parametrize("which", ["o", "ht"])
def test_multi_chunk_gradient_of_one_output_matches_naive(family, with_h0, which, single_calls):
    """Several chunks (or one chunk with an initial state) run the general path; a loss on only the
    output or only the final state gives the naive loop's gradients."""
    T = 40 if with_h0 else 50
    x = make_inputs(family, B=2, T=T, H=2, K=8, V=5)
    if not with_h0:
        x.pop("h0")
    chunk_size = 64 if with_h0 else 16  # with h0 even one chunk takes the general path
    ref = _losses(x, lambda y: call(family, "naive", y, output_final_state=True), which)
    got = _losses(
        x, lambda y: call(family, "chunk", y, output_final_state=True, chunk_size=chunk_size), which
    )
    assert not single_calls
    for name, r in ref.items():
        if r is None:  # the queries do not reach the final state: zeros (or None) are right
            assert got[name] is None or not got[name].any(), name
            continue
        assert r.abs().sum() > 0, f"{name}: vacuous comparison"
        assert_rel_close(got[name], r, 1e-10, f"{which}: {name}")


def test_cached_masks_are_per_size_dtype_and_device():
    """The float masks are cached per (C, dtype, device): a float32 call never gets float64 masks
    (nor CPU masks on another device), and the cache returns the same read-only tensors."""
    m32 = chunk_module._masks(8, torch.float32, torch.device("cpu"))
    m64 = chunk_module._masks(8, torch.float64, torch.device("cpu"))
    meta = chunk_module._masks(8, torch.float32, torch.device("meta"))
    assert all(t.dtype == torch.float32 for t in m32) and all(t.dtype == torch.float64 for t in m64)
    assert all(t.device.type == "meta" for t in meta)
    assert chunk_module._masks(8, torch.float32, torch.device("cpu"))[0] is m32[0]
    causal, strict, neg_upper = m64
    ones = torch.ones(8, 8, dtype=torch.float64)
    assert torch.equal(causal, ones.tril()) and torch.equal(strict, ones.tril(-1))
    assert torch.equal(neg_upper.isneginf(), ones.triu(1).bool()) and (neg_upper.tril() == 0).all()
    assert chunk_module._masks(16, torch.float32, torch.device("cpu"))[0].shape == (16, 16)
    # alternating dtypes through the op: each call matches the naive loop in its own dtype
    for dtype in (torch.float64, torch.float32, torch.float64):
        x = make_inputs("gated", T=20, dtype=dtype)
        assert_parity(op("gated", "chunk", chunk_size=8), op("gated", "naive"), x)


@pytest.mark.parametrize("C", [1, 5, 16, 17, 48, 64, 100])
def test_unit_lower_inverse_by_blocks(C):
    """``(I + L)^-1`` of a strictly lower ``L`` by block recursion: exact to float64 rounding, unit
    lower triangular with exact zeros above the diagonal."""
    L = (0.3 * torch.randn(3, 2, C, C, dtype=torch.float64)).tril_(-1)
    X = chunk_module._unit_lower_inverse(L)
    eye = torch.eye(C, dtype=torch.float64)
    assert torch.allclose((eye + L) @ X, eye.expand_as(X), atol=1e-12)
    assert torch.equal(X.triu(1), torch.zeros_like(X)) and torch.equal(
        X.diagonal(0, -2, -1), torch.ones(3, 2, C, dtype=torch.float64)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_float_only_flushes(dtype):
    """``_exp_flushed_`` equals exp with exponents below the floor (and -inf) set to exactly 0;
    ``_flush_tiny_`` zeroes entries below ``TINY_VALUE`` in magnitude and keeps the rest bitwise."""
    from linearlab.ops.common import LOG_FLOOR_TWO_FACTORS, TINY_VALUE

    floor = LOG_FLOOR_TWO_FACTORS[dtype]
    x = torch.tensor([0.0, -1.0, floor + 1.0, floor - 1.0, 2 * floor, float("-inf")], dtype=dtype)
    got = chunk_module._exp_flushed_(x.clone())
    assert torch.equal(got[:3], x[:3].exp()) and torch.equal(got[3:], torch.zeros(3, dtype=dtype))
    tiny = TINY_VALUE[dtype]
    y = torch.tensor([1.0, -2.0, tiny * 10, -tiny * 10, tiny / 10, -tiny / 10, 0.0], dtype=dtype)
    got = chunk_module._flush_tiny_(y.clone())
    assert torch.equal(got[:4], y[:4]) and (got[4:] == 0).all()
