"""Shared input checks and helpers for every op family.

Every public op validates its inputs with these functions so that bad input fails early with a
``ValueError`` that names the argument, says what it got and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

ALLOWED_DTYPES = (torch.float64, torch.float32, torch.bfloat16, torch.float16)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Check ``q, k: [B, T, H, K]`` and ``v: [B, T, H, V]``; return ``(B, T, H, K, V)``."""
    B, T, H, HV, K, V = check_qkv_grouped(q, k, v, grouped=False)
    return B, T, H, K, V


def check_qkv_grouped(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grouped: bool = True
) -> tuple[int, int, int, int, int, int]:
    """Check ``q, k: [B, T, H, K]`` and ``v: [B, T, HV, V]``; return ``(B, T, H, HV, K, V)``.

    With ``grouped`` (fla's grouped value attention, GVA) ``HV`` may be any multiple of ``H``:
    value head ``j`` reads query/key head ``j // (HV // H)``. Without it ``HV == H``.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name}: expected 4 dims [B, T, H, D], got shape {_shape(t)}")
        if t.dtype not in ALLOWED_DTYPES:
            raise ValueError(
                f"{name}: dtype {t.dtype} is not supported; allowed: float64, float32, bfloat16, float16"
            )
    if q.shape != k.shape:
        raise ValueError(f"k: shape {_shape(k)} must equal q's shape {_shape(q)} ([B, T, H, K])")
    if not grouped and v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"v: shape {_shape(v)} must match q's [B, T, H] = {list(q.shape[:3])} ([B, T, H, V])"
        )
    if grouped and (
        v.shape[:2] != q.shape[:2] or q.shape[2] == 0 or v.shape[2] % q.shape[2] or v.shape[2] == 0
    ):
        raise ValueError(
            f"v: shape {_shape(v)} must match q's [B, T] = {list(q.shape[:2])} and have HV heads, a "
            f"multiple of q's H = {q.shape[2]} ([B, T, HV, V]; HV > H is grouped value attention)"
        )
    devices = {t.device for t in (q, k, v)}
    if len(devices) > 1:
        raise ValueError(f"q, k, v: all tensors must be on one device, got {sorted(str(d) for d in devices)}")
    if q.shape[1] == 0:
        raise ValueError("q: sequence length T must be at least 1, got 0")
    B, T, H, K = q.shape
    return B, T, H, v.shape[2], K, v.shape[-1]


def check_same_device(ref: torch.Tensor, name: str, t: torch.Tensor | None) -> None:
    if t is not None and t.device != ref.device:
        raise ValueError(
            f"{name}: on device {t.device}, but q is on {ref.device}; move all inputs to one device"
        )


def check_per_token(
    name: str, t: torch.Tensor | None, expected: Sequence[int], ref: torch.Tensor, finite: bool = True
) -> None:
    """Check a per-token tensor (gate ``g``, ``beta``) has shape ``expected`` and finite values."""
    if t is None:
        return
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {list(expected)}, got {_shape(t)}")
    check_same_device(ref, name, t)
    if finite and not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).sum().item()
        raise ValueError(f"{name}: must be finite, got {bad} NaN/Inf value(s)")


def check_log_gate(name: str, g: torch.Tensor | None, expected: Sequence[int], ref: torch.Tensor) -> None:
    """A log-space decay gate: right shape, finite, and <= 0 (``exp(g)`` is the forget factor)."""
    check_per_token(name, g, expected, ref)
    if g is not None and (g > 0).any():
        raise ValueError(
            f"{name}: log-space gates must be <= 0 (exp(g) is a forget factor), got max {g.max().item():.4g}"
        )


def check_scale(scale: float | None, K: int) -> float:
    """Resolve ``scale`` (default ``K ** -0.5``)."""
    if scale is None:
        return K**-0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise ValueError(f"scale: expected a float or None, got {type(scale).__name__}")
    return float(scale)


def check_chunk_size(chunk_size: int) -> int:
    """``chunk_size`` must be a positive int (16, 32 and 64 are the usual choices)."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int such as 16, 32 or 64, got {chunk_size!r}")
    return chunk_size


def check_cu_seqlens(cu_seqlens: torch.Tensor | None, B: int, T: int) -> int:
    """Check FlashAttention-style ``cu_seqlens: [N + 1]`` (int, starts at 0, non-decreasing, ends at T).

    Returns N, the number of sequences (``B`` when ``cu_seqlens`` is None).
    """
    if cu_seqlens is None:
        return B
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dim() != 1:
        raise ValueError(f"cu_seqlens: expected a 1-D integer tensor [N + 1], got {cu_seqlens!r}")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype == torch.bool:
        raise ValueError(f"cu_seqlens: expected an integer dtype, got {cu_seqlens.dtype}")
    if B != 1:
        raise ValueError(f"cu_seqlens: packed sequences need batch size B == 1, got B = {B}")
    if cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens: needs at least 2 entries [0, ..., T], got {cu_seqlens.tolist()}")
    cu = cu_seqlens.tolist()
    if cu[0] != 0 or cu[-1] != T:
        raise ValueError(f"cu_seqlens: must start at 0 and end at T = {T}, got {cu[0]} ... {cu[-1]}")
    if any(b < a for a, b in zip(cu[:-1], cu[1:])):
        raise ValueError(f"cu_seqlens: must be non-decreasing, got {cu}")
    return len(cu) - 1


def check_initial_state(
    h0: torch.Tensor | None, N: int, H: int, K: int, V: int, ref: torch.Tensor, v_first: bool = False
) -> None:
    """``initial_state: [N, H, K, V]`` (N = batch size, or number of sequences with cu_seqlens);
    ``[N, H, V, K]`` with ``v_first`` (fla's ``state_v_first=True``)."""
    if h0 is None:
        return
    if not isinstance(h0, torch.Tensor):
        raise ValueError(f"initial_state: expected a torch.Tensor, got {type(h0).__name__}")
    if v_first and tuple(h0.shape) != (N, H, V, K):
        raise ValueError(
            f"initial_state: expected shape [N, H, V, K] = {[N, H, V, K]} (state_v_first=True), "
            f"got {_shape(h0)}"
        )
    if not v_first and tuple(h0.shape) != (N, H, K, V):
        raise ValueError(f"initial_state: expected shape [N, H, K, V] = {[N, H, K, V]}, got {_shape(h0)}")
    check_same_device(ref, "initial_state", h0)


def check_flag(name: str, value: bool) -> bool:
    """A boolean switch such as ``reverse`` or ``state_v_first`` (a real bool, not a truthy value)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
    return value


def state_from_v_first(h0: torch.Tensor | None, v_first: bool) -> torch.Tensor | None:
    """A checked ``initial_state`` in the ``[N, H, K, V]`` layout the kernels use (a transposed
    view of fla's ``state_v_first`` layout ``[N, H, V, K]``; gradients flow back through it)."""
    return h0.transpose(-1, -2) if v_first and h0 is not None else h0


def state_to_v_first(ht: torch.Tensor | None, v_first: bool) -> torch.Tensor | None:
    """A final state ``[N, H, K, V]`` in the layout the caller asked for: ``[N, H, V, K]``, dense
    like fla's, with ``v_first``."""
    return ht.transpose(-1, -2).contiguous() if v_first and ht is not None else ht


def check_cu_seqlens_cpu(cu_seqlens_cpu: torch.Tensor | None, cu_seqlens: torch.Tensor | None) -> None:
    """fla's ``cu_seqlens_cpu``: a precomputed host copy of ``cu_seqlens`` (it spares the GPU kernels
    a device sync). Nothing here needs it; it is accepted when it holds the same boundaries."""
    if cu_seqlens_cpu is None:
        return
    if cu_seqlens is None:
        raise ValueError(
            "cu_seqlens_cpu: given without cu_seqlens; it is a copy of cu_seqlens, so pass both or neither"
        )
    if not isinstance(cu_seqlens_cpu, torch.Tensor) or cu_seqlens_cpu.dim() != 1:
        raise ValueError(f"cu_seqlens_cpu: expected a 1-D integer tensor [N + 1], got {cu_seqlens_cpu!r}")
    if cu_seqlens_cpu.dtype.is_floating_point or cu_seqlens_cpu.dtype == torch.bool:
        raise ValueError(f"cu_seqlens_cpu: expected an integer dtype, got {cu_seqlens_cpu.dtype}")
    if cu_seqlens_cpu.tolist() != cu_seqlens.tolist():
        raise ValueError(
            f"cu_seqlens_cpu: must hold the same boundaries as cu_seqlens {cu_seqlens.tolist()}, "
            f"got {cu_seqlens_cpu.tolist()}"
        )


def chunk_indices(cu_seqlens: torch.Tensor, chunk_size: int) -> list[list[int]]:
    """fla's ``chunk_indices`` for packed sequences: one ``[sequence, chunk within it]`` row per
    chunk of ``chunk_size`` tokens, sequences in order (an empty sequence has no rows)."""
    cu = cu_seqlens.tolist()
    return [[n, c] for n, (a, b) in enumerate(zip(cu[:-1], cu[1:])) for c in range(-(-(b - a) // chunk_size))]


def check_chunk_indices(
    indices: torch.Tensor | None, cu_seqlens: torch.Tensor | None, chunk_size: int
) -> None:
    """fla's ``chunk_indices``: precomputed from ``cu_seqlens`` for fla's chunk kernels. The forms
    here do not use it; it is accepted when it equals what fla would compute for ``chunk_size``."""
    if indices is None:
        return
    if cu_seqlens is None:
        raise ValueError(
            "chunk_indices: given without cu_seqlens; it indexes the chunks of packed sequences, "
            "so pass cu_seqlens too"
        )
    if not isinstance(indices, torch.Tensor) or indices.dim() != 2 or indices.shape[-1] != 2:
        raise ValueError(f"chunk_indices: expected an integer tensor [num_chunks, 2], got {indices!r}")
    if indices.dtype.is_floating_point or indices.dtype == torch.bool:
        raise ValueError(f"chunk_indices: expected an integer dtype, got {indices.dtype}")
    expected, got = chunk_indices(cu_seqlens, chunk_size), indices.tolist()
    if got != expected:
        row = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
        raise ValueError(
            f"chunk_indices: does not match cu_seqlens with chunk_size = {chunk_size}: expected "
            f"{len(expected)} rows, got {len(got)}; first difference at row {row}: expected "
            f"{expected[row] if row < len(expected) else 'no row'}, got {got[row] if row < len(got) else 'no row'}"
        )


def state_dtype(x: torch.Tensor) -> torch.dtype:
    """States and gate cumsums are kept in float32, or float64 when the inputs are float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def run_varlen(
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor | None]],
    per_token: dict[str, torch.Tensor | None],
    cu_seqlens: torch.Tensor,
    initial_state: torch.Tensor | None,
    output_final_state: bool,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a fixed-length op on each packed sequence of a ``B == 1`` batch and re-pack the results.

    ``per_token`` holds tensors with time on dim 1 (``q, k, v, g, beta, ...``; None entries are passed
    through). ``fn(**per_token_slices, initial_state=..., output_final_state=True, **kwargs)`` must
    return ``(o, final_state)`` for one sequence.
    """
    cu = cu_seqlens.tolist()
    lengths = [end - start for start, end in zip(cu[:-1], cu[1:])]
    # split (not slicing in a loop): its backward is one concatenation, not N full-length zero grads
    pieces = {k: (None if t is None else t.split(lengths, dim=1)) for k, t in per_token.items()}
    outs, finals = [], []
    for n, length in enumerate(lengths):
        h0 = None if initial_state is None else initial_state[n : n + 1]
        if length == 0:  # an empty sequence leaves its state untouched
            ref = per_token["v"]
            if h0 is None:  # v has the state's heads (more than q's with grouped values)
                q = per_token["q"]
                h0 = torch.zeros(
                    1, ref.shape[2], q.shape[3], ref.shape[3], dtype=state_dtype(q), device=q.device
                )
            finals.append(h0.to(state_dtype(ref)))
            continue
        sliced = {k: (None if p is None else p[n]) for k, p in pieces.items()}
        o, ht = fn(**sliced, initial_state=h0, output_final_state=True, **kwargs)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, dim=1)
    return o, (torch.cat(finals, dim=0) if output_final_state else None)


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L2-normalise the last dim (``x / sqrt(sum x^2 + eps)``, used by ``use_qk_l2norm_in_kernel``).

    Computed in float32 for low-precision input and in float64 for float64 input.
    """
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    return (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def check_features(fq: torch.Tensor, fk: torch.Tensor, q: torch.Tensor) -> int:
    """Check the feature-mapped ``fq, fk: [B, T, H, F]`` beside ``q: [B, T, H, K]``; return ``F``.

    Shared by the hybrid families (``lolcats_attn``, ``still_attn``) whose ops take both the raw
    q/k (for softmax terms) and their features (for linear terms).
    """
    B, T, H = q.shape[:3]
    for name, t in (("fq", fq), ("fk", fk)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor [B, T, H, F], got {type(t).__name__}")
        if t.dim() != 4 or tuple(t.shape[:3]) != (B, T, H):
            raise ValueError(
                f"{name}: expected shape [B, T, H, F] with [B, T, H] = {[B, T, H]} (q's), got {_shape(t)}"
            )
        if t.dtype not in ALLOWED_DTYPES:
            raise ValueError(
                f"{name}: dtype {t.dtype} is not supported; allowed: float64, float32, bfloat16, float16"
            )
        check_same_device(q, name, t)
    if fk.shape != fq.shape:
        raise ValueError(f"fk: shape {_shape(fk)} must equal fq's shape {_shape(fq)} (same feature dim F)")
    if fq.shape[-1] == 0:
        raise ValueError("fq: feature dim F must be at least 1, got 0")
    return fq.shape[-1]


def check_window_factor(window_factor: torch.Tensor, H: int, q: torch.Tensor) -> torch.Tensor:
    """Check ``window_factor: [H]`` in (0, 1] (the weight of softmax terms); return it in the state dtype."""
    if not isinstance(window_factor, torch.Tensor):
        raise ValueError(
            f"window_factor: expected a float tensor [H] = [{H}] with values in (0, 1] "
            f"(apply the sigmoid first), got {type(window_factor).__name__}"
        )
    if tuple(window_factor.shape) != (H,):
        raise ValueError(f"window_factor: expected shape [H] = [{H}], got {_shape(window_factor)}")
    if not window_factor.is_floating_point():
        raise ValueError(f"window_factor: expected a floating dtype, got {window_factor.dtype}")
    check_same_device(q, "window_factor", window_factor)
    bad = ~((window_factor > 0) & (window_factor <= 1))  # also catches NaN
    if bad.any():
        raise ValueError(
            f"window_factor: values must be in (0, 1] (apply the sigmoid first), "
            f"got {window_factor[bad][0].item()!r} at head {int(bad.nonzero()[0, 0])}"
        )
    return window_factor.to(state_dtype(q))
