"""Lightning attention: the decay formula, and chunk / recurrent forms against the naive loop."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from _helpers import assert_parity, assert_rel_close, make_qkv, time_reversed_reference

from linearlab.ops import (
    chunk_lightning_attn,
    chunk_simple_gla,
    fused_recurrent_lightning_attn,
    lightning_attn_decay,
)
from linearlab.ops.lightning_attn.naive import naive_recurrent_lightning_attn


@pytest.mark.parametrize("H,layer,L", [(4, 0, 2), (8, 3, 12), (1, 0, 1), (6, 5, 6)])
def test_decay_formula(H, layer, L):
    got = lightning_attn_decay(H, layer, L)
    assert got.shape == (H,) and got.dtype == torch.float32
    for h in range(H):
        expect = -(8 / H) * (1 - layer / L) * h
        assert abs(got[h].item() - expect) < 1e-6, f"head {h}: {got[h].item()} != {expect}"
    assert got[0].item() == 0.0, "head 0 never decays (fla convention)"
    assert (got <= 0).all()


def test_deeper_layers_decay_less():
    shallow, deep = lightning_attn_decay(8, 0, 12), lightning_attn_decay(8, 11, 12)
    assert (deep[1:].abs() < shallow[1:].abs()).all()


def make_inputs(B, T, H, K, V, dtype=torch.float64, layer_idx=1, num_layers=4):
    q, k, v = make_qkv(B, T, H, K, V, dtype=dtype)
    sd = torch.float64 if dtype == torch.float64 else torch.float32
    h0 = torch.randn(B, H, K, V, dtype=sd).requires_grad_()
    return dict(q=q, k=k, v=v, layer_idx=layer_idx, num_layers=num_layers, initial_state=h0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "fn", [chunk_lightning_attn, fused_recurrent_lightning_attn], ids=["chunk", "recurrent"]
)
def test_parity_with_naive(fn, dtype):
    inp = make_inputs(2, 41, 4, 8, 6, dtype=dtype)
    res, _ = assert_parity(fn, naive_recurrent_lightning_attn, inp)
    assert res["o"].dtype == dtype


@pytest.mark.parametrize("cu", [None, [0, 11, 40]], ids=["fixed", "varlen"])
def test_recurrent_reverse_equals_naive_on_flipped_sequences(cu):
    """fla 0.6's ``fused_recurrent_lightning_attn(..., output_final_state, reverse, cu_seqlens)``:
    ``reverse=True`` equals the naive loop on each sequence flipped in time (every gradient too)."""
    B, N = (2, 2) if cu is None else (1, 2)
    inp = make_inputs(B, 40, 4, 8, 6)
    inp["initial_state"] = torch.randn(N, 4, 8, 6, dtype=torch.float64)
    varlen = {} if cu is None else {"cu_seqlens": torch.tensor(cu)}
    assert_parity(
        partial(fused_recurrent_lightning_attn, reverse=True, **varlen),
        partial(time_reversed_reference(naive_recurrent_lightning_attn, ("q", "k", "v")), **varlen),
        inp,
    )
    q, k, v, h0 = (inp[n] for n in ("q", "k", "v", "initial_state"))
    positional = fused_recurrent_lightning_attn(q, k, v, 1, 4, None, h0[:B], True, True)
    keyword = fused_recurrent_lightning_attn(
        q, k, v, 1, 4, initial_state=h0[:B], output_final_state=True, reverse=True
    )
    assert torch.equal(positional[0], keyword[0]) and torch.equal(positional[1], keyword[1])


def test_is_simple_gla_with_lightning_decay():
    inp = make_inputs(1, 30, 3, 4, 4, layer_idx=2, num_layers=5)
    o, ht = chunk_lightning_attn(**inp, output_final_state=True)
    g_gamma = lightning_attn_decay(3, 2, 5, dtype=torch.float64)
    o2, ht2 = chunk_simple_gla(
        inp["q"],
        inp["k"],
        inp["v"],
        g_gamma=g_gamma,
        initial_state=inp["initial_state"],
        output_final_state=True,
    )
    assert torch.equal(o, o2) and torch.equal(ht, ht2)


def test_gradcheck_chunk():
    inp = make_inputs(1, 7, 2, 3, 2)

    def fn(q, k, v, h0):
        return chunk_lightning_attn(q, k, v, 0, 3, initial_state=h0, output_final_state=True, chunk_size=3)

    assert torch.autograd.gradcheck(
        fn, (inp["q"], inp["k"], inp["v"], inp["initial_state"]), eps=1e-6, atol=1e-8
    )


def test_varlen_and_chunk_size():
    cu = torch.tensor([0, 11, 40])
    q, k, v = make_qkv(1, 40, 2, 4, 4)
    o, ht = chunk_lightning_attn(q, k, v, 0, 2, output_final_state=True, cu_seqlens=cu, chunk_size=16)
    o2, ht2 = fused_recurrent_lightning_attn(q, k, v, 0, 2, output_final_state=True, cu_seqlens=cu)
    assert ht.shape == (2, 2, 4, 4)
    assert_rel_close(o, o2, 1e-12, "o")
    assert_rel_close(ht, ht2, 1e-12, "ht")
    o3, _ = naive_recurrent_lightning_attn(q[:, 11:], k[:, 11:], v[:, 11:], 0, 2)
    assert_rel_close(o[:, 11:], o3, 1e-12, "second sequence")


@pytest.mark.parametrize(
    "fn", [chunk_lightning_attn, fused_recurrent_lightning_attn], ids=["chunk", "recurrent"]
)
def test_errors(fn):
    q, k, v = make_qkv(1, 5, 2, 4, 4, requires_grad=False)
    with pytest.raises(ValueError, match=r"layer_idx: expected an int in \[0, num_layers\) = \[0, 4\)"):
        fn(q, k, v, 4, 4)
    with pytest.raises(ValueError, match=r"layer_idx: expected an int"):
        fn(q, k, v, -1, 4)
    with pytest.raises(ValueError, match=r"num_layers: expected a positive int, got 0"):
        fn(q, k, v, 0, 0)
    with pytest.raises(ValueError, match=r"v: shape"):
        fn(q, k, v[:, :2], 0, 4)
    with pytest.raises(ValueError, match=r"initial_state: expected shape"):
        fn(q, k, v, 0, 4, initial_state=torch.zeros(2, 2, 4, 4))


def test_decay_errors():
    with pytest.raises(ValueError, match=r"num_heads: expected a positive int, got 0"):
        lightning_attn_decay(0, 0, 2)
    with pytest.raises(ValueError, match=r"layer_idx: .* got 2.0"):
        lightning_attn_decay(4, 2.0, 4)
