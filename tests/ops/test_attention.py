"""Softmax attention: SDPA path vs explicit reference, windows, varlen and KV-cache decoding."""

from __future__ import annotations

import types
from functools import partial

import pytest
import torch
from _helpers import assert_parity, assert_rel_close, make_qkv

from linearlab.ops import attention, attention_step, naive_attention


def loop_reference(q, k, v, causal, window, scale):
    """Per-query softmax over the keys the query may see (the definition of the window)."""
    B, T, H, _ = q.shape
    out = torch.zeros(B, T, H, v.shape[-1], dtype=torch.float64)
    for i in range(T):
        if causal:
            lo = 0 if window is None else max(0, i - window + 1)
            keys = list(range(lo, i + 1))  # itself and the window - 1 previous keys
        else:
            keys = [j for j in range(T) if window is None or abs(i - j) < window]
        s = torch.einsum("bhd,bjhd->bhj", q[:, i].double(), k[:, keys].double()) * scale
        out[:, i] = torch.einsum("bhj,bjhd->bhd", s.softmax(-1), v[:, keys].double())
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 1, 3, 50])
def test_naive_matches_definition(causal, window):
    q, k, v = make_qkv(2, 13, 2, 4, 5, requires_grad=False)
    o = naive_attention(q, k, v, causal=causal, window_size=window)
    assert_rel_close(o, loop_reference(q, k, v, causal, window, 4**-0.5), 1e-12, "o")


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_sdpa_matches_naive_with_grads(causal, window, dtype):
    q, k, v = make_qkv(2, 19, 3, 8, 6, dtype=dtype)
    how = dict(causal=causal, window_size=window, scale=0.3)
    got, _ = assert_parity(
        partial(attention, **how), partial(naive_attention, **how), dict(q=q, k=k, v=v), final_state=False
    )
    assert got["o"].dtype == dtype and got["o"].shape == (2, 19, 3, 6)


@pytest.mark.parametrize("fn", [attention, naive_attention], ids=["sdpa", "naive"])
def test_varlen_equals_separate_sequences(fn):
    cu = torch.tensor([0, 4, 4, 17, 25])
    q, k, v = make_qkv(1, 25, 2, 4, 4, requires_grad=False)
    o = fn(q, k, v, window_size=5, cu_seqlens=cu)
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        if e > s:
            alone = naive_attention(q[:, s:e], k[:, s:e], v[:, s:e], window_size=5)
            assert_rel_close(o[:, s:e], alone, 1e-12, f"seq {s}:{e}")


@pytest.mark.parametrize("window", [None, 1, 4])
def test_cached_decoding_equals_full(window):
    q, k, v = make_qkv(2, 21, 2, 4, 3, requires_grad=False)
    full = naive_attention(q, k, v, window_size=window)
    # prefill 8 tokens in one call, then one token at a time, then a block of 3
    o, cache = attention_step(q[:, :8], k[:, :8], v[:, :8], None, window_size=window)
    outs = [o]
    for t in range(8, 18):
        o, cache = attention_step(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], cache, window_size=window
        )
        outs.append(o)
        expect_len = t + 1 if window is None else min(t + 1, window - 1)
        assert cache[0].shape[1] == expect_len and cache[1].shape[1] == expect_len
    o, cache = attention_step(q[:, 18:], k[:, 18:], v[:, 18:], cache, window_size=window)
    outs.append(o)
    assert_rel_close(torch.cat(outs, 1), full, 1e-12, "o")


def test_window_larger_than_sequence_is_full_causal():
    q, k, v = make_qkv(1, 9, 2, 4, 4, requires_grad=False)
    assert_rel_close(attention(q, k, v, window_size=100), attention(q, k, v), 1e-12, "o")


def test_errors():
    q, k, v = make_qkv(1, 6, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"window_size: expected None or an int >= 1.*got 0"):
        attention(q, k, v, window_size=0)
    with pytest.raises(ValueError, match=r"causal: expected a bool, got 1"):
        naive_attention(q, k, v, causal=1)
    with pytest.raises(ValueError, match=r"k: shape"):
        attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match=r"cu_seqlens: must start at 0 and end at T = 6"):
        attention(q, k, v, cu_seqlens=torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"window_size: expected None or an int"):
        attention_step(q, k, v, window_size=-2)


def test_cache_errors():
    q, k, v = make_qkv(1, 1, 2, 4, 3, requires_grad=False)
    with pytest.raises(ValueError, match=r"cache: expected None or a \(k_cache, v_cache\) tuple"):
        attention_step(q, k, v, cache=torch.zeros(1))
    with pytest.raises(ValueError, match=r"cache: k_cache shape \[1, 5, 3, 4\] does not match"):
        attention_step(q, k, v, cache=(torch.zeros(1, 5, 3, 4), torch.zeros(1, 5, 2, 3)))
    with pytest.raises(ValueError, match=r"cache: k_cache has 5 steps but v_cache has 4"):
        attention_step(q, k, v, cache=(torch.zeros(1, 5, 2, 4), torch.zeros(1, 4, 2, 3)))
    with pytest.raises(ValueError, match=r"cache: v_cache must be a 4-D tensor"):
        attention_step(q, k, v, cache=(torch.zeros(1, 5, 2, 4), torch.zeros(5, 2, 3)))


@pytest.mark.parametrize("T,window,block", [(300, 5, 16), (301, 16, 16), (97, 1, 8), (200, 40, 16)])
def test_banded_window_path_matches_naive_with_grads(monkeypatch, T, window, block):
    """Long causal windows run blockwise in O(T * w); shrink the block so small T takes that path."""
    from linearlab.ops.softmax_attn import sdpa

    monkeypatch.setattr(sdpa, "BAND_BLOCK", block)
    q, k, v = make_qkv(2, T, 2, 8, 4)
    assert_parity(
        partial(attention, window_size=window),
        partial(naive_attention, window_size=window),
        dict(q=q, k=k, v=v),
        tol=1e-12,
        final_state=False,
        nonzero=window > 1,  # a window of 1 attends to itself only: o = v, dq = dk = 0 exactly
    )


def test_import_order_always_gives_the_op():
    """Importing the family package first must not shadow the op ``linearlab.ops.attention``."""
    import linearlab.ops.softmax_attn.sdpa  # noqa: F401
    from linearlab.ops import attention as op

    assert callable(op) and not isinstance(op, types.ModuleType)

    q, k, v = make_qkv(1, 7, 2, 4, 4, requires_grad=False)
    assert_rel_close(op(q, k, v, window_size=3), naive_attention(q, k, v, window_size=3), 1e-12, "o")


def test_cache_device_error():
    q, k, v = make_qkv(1, 1, 2, 4, 3, requires_grad=False)
    meta = (torch.empty(1, 5, 2, 4, device="meta"), torch.empty(1, 5, 2, 3, device="meta"))
    with pytest.raises(ValueError, match=r"cache: k_cache is on meta, but q is on cpu"):
        attention_step(q, k, v, cache=meta)
