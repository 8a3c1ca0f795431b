"""What the chunk kernels share: chunk layout, segment sizing and the subnormal-flush thresholds.

Layout: every chunk kernel cuts ``[B, T, H, D]`` into chunks of ``C`` tokens laid out
``[n, B, H, C, D]`` (chunk dim first, so a run of chunk states is a contiguous slice and each
chunk is a dense ``[C, D]`` matrix for the batched matmuls). Time is zero-padded at the end to a
multiple of ``C``; each kernel documents why zero padding is exact for its recurrence.

Segments: the chunks are walked in segments of a few chunks, so each step's temporaries stay
cache-sized and the cost per token does not grow with T. Each kernel sets its own budget (its
temporaries differ); the arithmetic that turns a budget into chunk ranges is here.

Flushing: decay factors and residues far below the dtype's resolution are set to exactly 0.
Left alone they become subnormal numbers, on which CPUs compute tens of times slower.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# ----------------------------------------------------------------------------------- chunk layout


def pad_time(x: torch.Tensor, multiple: int, value: float = 0.0) -> torch.Tensor:
    """Pad dim 1 (time) at the end with ``value`` up to a multiple of ``multiple``."""
    T = x.shape[1]
    pad = (-T) % multiple
    if pad == 0:
        return x
    shape = list(x.shape)
    shape[1] = pad
    return torch.cat([x, x.new_full(shape, value)], dim=1)


def to_chunks(
    x: torch.Tensor, C: int, t0: int = 0, t1: int | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """``x[:, t0:t1]: [B, t, H, ...] -> [n, B, H, C, ...]`` with ``n = ceil(t / C)``.

    Cast to ``dtype`` (if given) and zero-padded at the end of time. The result is a permuted
    view when no cast or padding was needed: callers whose matmuls want dense operands call
    ``.contiguous()`` on it (one copy of just the slice they work on).
    """
    seg = x[:, t0:t1]
    if dtype is not None:
        seg = seg.to(dtype)
    seg = pad_time(seg, C)
    B, t, H = seg.shape[:3]
    seg = seg.reshape(B, t // C, C, H, *seg.shape[3:])
    return seg.permute(1, 0, 3, 2, *range(4, seg.dim()))


def from_chunks(y: torch.Tensor, t: int) -> torch.Tensor:
    """``[n, B, H, C, ...] -> [B, t, H, ...]``, the first ``t`` steps (drops the padding)."""
    n, B, H, C = y.shape[:4]
    return y.permute(1, 0, 3, 2, *range(4, y.dim())).reshape(B, n * C, H, *y.shape[4:])[:, :t]


def causal_mask(C: int, device: torch.device, diagonal: int = 0) -> torch.Tensor:
    """Boolean ``[C, C]`` mask, True where key ``j`` is visible to query ``i`` (``j <= i + diagonal``).

    ``diagonal=-1`` keeps the strictly causal pairs ``j < i``.
    """
    return torch.ones(C, C, dtype=torch.bool, device=device).tril_(diagonal)


# ---------------------------------------------------------------------------------------- segments


def chunks_per_segment(C: int, budget: int, elements_per_token: int = 1) -> int:
    """Chunks of ``C`` tokens in one segment of at most ``budget`` elements (at least one chunk).

    ``elements_per_token`` is one token's share of the widest per-token tensor (``B * H * D``),
    so the budget bounds that tensor's segment slice; the default 1 makes ``budget`` a token count.
    """
    return max(1, budget // (elements_per_token * C))


def segments(n_chunks: int, per_segment: int) -> list[tuple[int, int]]:
    """Chunk ranges ``[(n0, n1), ...]`` covering ``0 .. n_chunks`` in steps of ``per_segment``."""
    return [(n0, min(n_chunks, n0 + per_segment)) for n0 in range(0, n_chunks, per_segment)]


# ---------------------------------------------------------------------------------------- flushing

# Log-decay floors: a decay factor exp(x) with x below the floor is set to exactly 0. Every floor
# drops terms far below the dtype's resolution next to the O(1) diagonal term of their row (float32
# eps ~ exp(-16)); they differ in how many further products a kept factor must survive before
# reaching the subnormal range (float32 below ~exp(-87.3), float64 below ~exp(-708.4)).

#: the factor itself is a normal number (GLA)
LOG_FLOOR_NORMAL = {torch.float32: -87.0, torch.float64: -700.0}
#: exp(-60) ~ 1e-26 in float32 and exp(-600) ~ 1e-261 in float64 stay far above the subnormal
#: range even after one more product, and a dropped term is < 1e-26 of its row's diagonal term
#: (simple GLA, Lightning, retention, linear attention)
LOG_FLOOR_ONE_PRODUCT = {torch.float32: -60.0, torch.float64: -600.0}
#: a product of two kept factors stays normal, 2 * -40 > -87 and 2 * -300 > -708 (gated delta
#: rule; subnormal decays made its strong gates 2-5x slower)
LOG_FLOOR_TWO_FACTORS = {torch.float32: -40.0, torch.float64: -300.0}
#: entries (not logs) below this magnitude are zeroed: the residues of decayed terms that the
#: gated delta rule's triangular solves leave at the edge of the float range, ~1e-23 below the
#: resolution of the O(1) entries next to them
TINY_VALUE = {torch.float32: 1e-30, torch.float64: 1e-290}


def exp_flush_(x: torch.Tensor, floors: Mapping[torch.dtype, float]) -> torch.Tensor:
    """``exp(x)`` in place, with exponents below ``floors[x.dtype]`` (and -inf) giving exactly 0.

    The values equal ``exp`` of ``x`` with those entries set to -inf, but ``exp`` only sees finite
    inputs: CPU ``exp`` takes a slow path on -inf and on subnormal results, several times slower.
    """
    floor = floors[x.dtype]
    tiny = x < floor
    return x.clamp_(min=floor).exp_().masked_fill_(tiny, 0.0)


def flush_tiny_(x: torch.Tensor) -> torch.Tensor:
    """Zero the entries of ``x`` smaller in magnitude than ``TINY_VALUE[x.dtype]``, in place."""
    return x.masked_fill_(x.abs() < TINY_VALUE[x.dtype], 0.0)
