"""Softmax attention on ``torch.nn.functional.scaled_dot_product_attention`` in the ``[B, T, H, D]``
layout, plus a KV-cache decoding step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from linearlab.ops.common import pad_time
from linearlab.ops.softmax_attn._common import allowed_mask, check_window, split_varlen, validate
from linearlab.ops.utils import check_qkv, check_scale

KVCache = tuple[torch.Tensor, torch.Tensor]


#: query block of the banded sliding-window path (at least the window); see ``_banded_causal``
BAND_BLOCK = 64


def _banded_causal(q, k, v, window_size: int, scale: float) -> torch.Tensor:
    """Causal sliding-window attention in ``O(T * w)`` time and memory.

    Queries go in blocks of ``Bq = max(w, BAND_BLOCK)``; block i only needs keys
    ``[i Bq - (w - 1), (i + 1) Bq)``, gathered for all blocks at once with ``unfold`` (keys are
    front-padded with ``w - 1`` masked slots). One SDPA call covers every block.
    """
    B, T, H, _ = q.shape
    w = window_size
    Bq = max(w, BAND_BLOCK)
    n = -(-T // Bq)
    L = Bq + w - 1
    qb = pad_time(q, Bq).reshape(B, n, Bq, H, -1).permute(0, 1, 3, 2, 4)  # [B, n, H, Bq, K]

    def keys(x):  # [B, T, H, D] -> [B, n, H, L, D]: block i gets padded slots i Bq .. i Bq + L - 1
        D = x.shape[-1]
        xp = torch.cat([x.new_zeros(B, w - 1, H, D), x, x.new_zeros(B, n * Bq - T, H, D)], dim=1)
        return xp.unfold(1, L, Bq).permute(0, 1, 2, 4, 3)

    kb, vb = keys(k), keys(v)
    # query r of a block sits at key slot r + w - 1; it may see slots r .. r + w - 1
    r = torch.arange(Bq, device=q.device)[:, None]
    c = torch.arange(L, device=q.device)[None, :]
    band = (c <= r + w - 1) & (c >= r)
    # the front padding only exists for block 0
    slot = torch.arange(n, device=q.device)[:, None] * Bq + c - (w - 1)  # absolute key position
    mask = band[None] & (slot >= 0)[:, None, :]  # [n, Bq, L]
    o = F.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask[:, None], scale=scale)
    return o.permute(0, 1, 3, 2, 4).reshape(B, n * Bq, H, -1)[:, :T]


def _sdpa(q, k, v, causal: bool, window_size: int | None, scale: float) -> torch.Tensor:
    """SDPA on ``[B, T, H, D]`` tensors; queries are the last ``Tq`` positions of the keys."""
    Tq, Tk = q.shape[1], k.shape[1]
    if causal and window_size is not None and Tq == Tk and Tq > 2 * max(window_size, BAND_BLOCK):
        return _banded_causal(q, k, v, window_size, scale)
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    if causal and window_size is None and Tq == Tk:
        # the fused causal path needs no [T, T] mask in memory
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True, scale=scale)
    else:
        mask = allowed_mask(Tq, Tk, causal, window_size, q.device)
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale)
    return o.transpose(1, 2)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    window_size: int | None = None,
    scale: float | None = None,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax attention with an optional sliding window.

    Args:
        q, k: ``[B, T, H, K]``; v: ``[B, T, H, V]``.
        causal: each query sees only itself and earlier keys.
        window_size: ``w`` -> each query sees itself and the ``w - 1`` previous keys
            (non-causal: keys with ``|i - j| < w``). None: no window.
        scale: default ``K ** -0.5``.
        cu_seqlens: ``[N + 1]`` packed sequence boundaries (B must be 1); sequences never see each other.

    Returns:
        ``o: [B, T, H, V]`` in q's dtype.

    Example:
        >>> q = k = v = torch.randn(2, 10, 4, 16)
        >>> attention(q, k, v, window_size=4).shape
        torch.Size([2, 10, 4, 16])
    """
    scale = validate(q, k, v, causal, window_size, scale, cu_seqlens)

    def one(q, k, v):
        return _sdpa(q, k, v, causal, window_size, scale)

    o = one(q, k, v) if cu_seqlens is None else split_varlen(one, q, k, v, cu_seqlens)
    return o.contiguous()


def _check_cache(cache, q: torch.Tensor, v: torch.Tensor) -> KVCache | None:
    if cache is None:
        return None
    if not isinstance(cache, (tuple, list)) or len(cache) != 2:
        raise ValueError(f"cache: expected None or a (k_cache, v_cache) tuple, got {type(cache).__name__}")
    kc, vc = cache
    B, _, H, K = q.shape
    V = v.shape[-1]
    for name, t, D in (("k_cache", kc, K), ("v_cache", vc, V)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"cache: {name} must be a 4-D tensor [B, T_past, H, D], got {t!r:.60}")
        if (t.shape[0], t.shape[2], t.shape[3]) != (B, H, D):
            raise ValueError(
                f"cache: {name} shape {list(t.shape)} does not match [B, T_past, H, D] = [{B}, *, {H}, {D}]"
            )
        if t.device != q.device:
            raise ValueError(f"cache: {name} is on {t.device}, but q is on {q.device}")
    if kc.shape[1] != vc.shape[1]:
        raise ValueError(f"cache: k_cache has {kc.shape[1]} steps but v_cache has {vc.shape[1]}")
    return kc, vc


def attention_step(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: KVCache | None = None,
    window_size: int | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, KVCache]:
    """Causal decoding step(s) with a KV cache.

    Args:
        q, k: ``[B, T_new, H, K]``; v: ``[B, T_new, H, V]`` (new tokens, right after the cached ones).
        cache: ``(k_cache [B, T_past, H, K], v_cache [B, T_past, H, V])`` or None (empty).
        window_size: sliding window ``w`` (see :func:`attention`); the returned cache keeps only the
            last ``w - 1`` steps, all a later query can still see.
        scale: default ``K ** -0.5``.

    Returns:
        ``(o [B, T_new, H, V], (k_cache, v_cache))`` with the new keys/values appended.

    Example:
        >>> cache = None
        >>> for t in range(5):
        ...     x = torch.randn(1, 1, 2, 8)
        ...     o, cache = attention_step(x, x, x, cache, window_size=3)
        >>> cache[0].shape
        torch.Size([1, 2, 2, 8])
    """
    B, T, H, K, V = check_qkv(q, k, v)
    window_size = check_window(window_size)
    scale = check_scale(scale, K)
    cache = _check_cache(cache, q, v)
    if cache is not None:
        k_all = torch.cat([cache[0].to(k.dtype), k], dim=1)
        v_all = torch.cat([cache[1].to(v.dtype), v], dim=1)
    else:
        k_all, v_all = k, v
    o = _sdpa(q, k_all, v_all, True, window_size, scale).contiguous()
    if window_size is not None:
        start = max(0, k_all.shape[1] - (window_size - 1))
        k_all, v_all = k_all[:, start:], v_all[:, start:]
    return o, (k_all, v_all)
