"""Shared checks and the causal / sliding-window mask of the softmax-attention ops."""

from __future__ import annotations

import torch

from linearlab.ops.utils import check_cu_seqlens, check_qkv, check_scale


def check_window(window_size: int | None) -> int | None:
    if window_size is None:
        return None
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(
            f"window_size: expected None or an int >= 1 (the query plus w-1 previous keys), got {window_size!r}"
        )
    return window_size


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool,
    window_size: int | None,
    scale: float | None,
    cu_seqlens: torch.Tensor | None,
) -> float:
    """Check the arguments of ``attention`` / ``naive_attention``; return the resolved scale."""
    B, T, H, K, V = check_qkv(q, k, v)
    if not isinstance(causal, bool):
        raise ValueError(f"causal: expected a bool, got {causal!r}")
    check_window(window_size)
    check_cu_seqlens(cu_seqlens, B, T)
    return check_scale(scale, K)


def allowed_mask(
    Tq: int, Tk: int, causal: bool, window_size: int | None, device: torch.device
) -> torch.Tensor | None:
    """Boolean ``[Tq, Tk]`` mask (True = may attend), or None when every key is visible.

    The queries are the *last* ``Tq`` positions of the ``Tk`` keys (``Tq < Tk`` while decoding with a
    cache). Causal: key j is visible to query i iff ``j <= i``. A window ``w`` further keeps only
    ``i - j < w`` (itself and the ``w - 1`` previous keys); non-causal windows are symmetric,
    ``|i - j| < w``.
    """
    if not causal and window_size is None:
        return None
    qpos = torch.arange(Tk - Tq, Tk, device=device)[:, None]
    kpos = torch.arange(Tk, device=device)[None, :]
    rel = qpos - kpos  # how far back the key is
    mask = torch.ones(Tq, Tk, dtype=torch.bool, device=device)
    if causal:
        mask &= rel >= 0
    if window_size is not None:
        mask &= rel < window_size
        if not causal:
            mask &= rel > -window_size
    return mask


def split_varlen(fn, q, k, v, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """Run a fixed-length ``fn(q, k, v) -> o`` on each packed sequence (B == 1) and re-pack.

    ``split`` (not slicing in a loop) keeps the backward to one concatenation.
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    pieces = zip(*(x.split(lengths, dim=1) for x in (q, k, v)))
    return torch.cat([fn(qs, ks, vs) for qs, ks, vs in pieces if qs.shape[1] > 0], dim=1)
