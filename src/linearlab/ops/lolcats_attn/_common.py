"""Validation, the state layout and the varlen driver shared by the LoLCATs hybrid-attention forms.

State layout
------------
Every form reads and writes the same dict (``P = window_size - 1``, ``N`` = batch size, or the
number of sequences with ``cu_seqlens``)::

    "linear":     [N, H, F, V + 1]  S = sum fk_j^T v_j over the tokens that have left the window,
                                    with z = sum fk_j riding along as the last value column
    "window_k":   [N, H, P, K]      keys   of the last P tokens (the window of the next query, minus itself)
    "window_v":   [N, H, P, V]      values of those tokens
    "window_fk":  [N, H, P, F]      feature-mapped keys of those tokens (they enter S when they leave)
    "window_len": [N] int64         how many of the P slots hold a token (< P until P tokens were seen)

The window slots are in time order and right-aligned: slot ``P - 1`` is the most recent token, and
slot ``s`` is valid iff ``s >= P - window_len``. Invalid slots are zeros in the returned states and
are ignored (zeroed) in incoming ones. With ``window_size = 1`` the window tensors have ``P = 0``
slots. The size never depends on how many tokens were processed.

Dtypes: every floating tensor of the state is float32 (float64 when ``q`` is float64), window
keys/values included, so carrying the state between calls is exact (a bfloat16 key is exactly
representable in float32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from linearlab.ops.utils import (
    _shape,
    check_cu_seqlens,
    check_features,
    check_qkv,
    check_same_device,
    check_scale,
    check_window_factor,
    state_dtype,
)

#: the keys of a LoLCATs state dict, in a fixed order
STATE_KEYS = ("linear", "window_k", "window_v", "window_fk", "window_len")

State = dict[str, torch.Tensor]
Core = Callable[..., tuple[torch.Tensor, State | None]]


@dataclass(frozen=True)
class Resolved:
    """Checked arguments, shared by all forms."""

    scale: float
    window_size: int
    N: int
    H: int
    K: int
    V: int
    F: int
    #: ``[H]`` in the state dtype (autograd-tracked when the caller passed a tensor)
    window_factor: torch.Tensor
    linear_factor: torch.Tensor


def state_shapes(N: int, H: int, K: int, V: int, F: int, window_size: int) -> dict[str, tuple[int, ...]]:
    """The shape of every state entry (see the module docstring)."""
    P = window_size - 1
    return {
        "linear": (N, H, F, V + 1),
        "window_k": (N, H, P, K),
        "window_v": (N, H, P, V),
        "window_fk": (N, H, P, F),
        "window_len": (N,),
    }


def empty_state(
    N: int, H: int, K: int, V: int, F: int, window_size: int, dtype: torch.dtype, device: torch.device
) -> State:
    """The state of sequences that have seen no token yet: zeros, ``window_len = 0``."""
    shapes = state_shapes(N, H, K, V, F, window_size)
    state = {key: torch.zeros(shape, dtype=dtype, device=device) for key, shape in shapes.items()}
    state["window_len"] = torch.zeros(N, dtype=torch.int64, device=device)
    return state


def state_nbytes(state: Mapping[str, torch.Tensor]) -> int:
    """Total bytes of a state dict (constant in the number of tokens processed)."""
    return sum(t.numel() * t.element_size() for t in state.values())


# ------------------------------------------------------------------------------------------ checks


def check_window_size(window_size: int) -> int:
    if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
        raise ValueError(
            f"window_size: expected an int >= 1 (the query plus w-1 previous keys), got {window_size!r}"
        )
    return window_size


def _check_linear_factor(linear_factor: float | torch.Tensor, H: int, q: torch.Tensor) -> torch.Tensor:
    sd = state_dtype(q)
    if isinstance(linear_factor, torch.Tensor):
        if tuple(linear_factor.shape) != (H,) or not linear_factor.is_floating_point():
            raise ValueError(
                f"linear_factor: expected a float or a float tensor of shape [H] = [{H}], "
                f"got a {linear_factor.dtype} tensor of shape {_shape(linear_factor)}"
            )
        check_same_device(q, "linear_factor", linear_factor)
        bad = ~(torch.isfinite(linear_factor) & (linear_factor >= 0))
        if bad.any():
            raise ValueError(
                f"linear_factor: values must be finite and >= 0, got {linear_factor[bad][0].item()!r}"
            )
        return linear_factor.to(sd)
    if isinstance(linear_factor, bool) or not isinstance(linear_factor, (int, float)):
        raise ValueError(
            f"linear_factor: expected a float or a float tensor [H], got {type(linear_factor).__name__}"
        )
    if not (math.isfinite(linear_factor) and linear_factor >= 0):
        raise ValueError(f"linear_factor: expected a finite value >= 0, got {linear_factor!r}")
    return torch.full((H,), float(linear_factor), dtype=sd, device=q.device)


def check_state(
    state: Mapping[str, torch.Tensor],
    N: int,
    H: int,
    K: int,
    V: int,
    F: int,
    window_size: int,
    q: torch.Tensor,
) -> None:
    """``initial_state`` must be a dict with exactly :data:`STATE_KEYS`, each of the documented shape."""
    if not isinstance(state, Mapping):
        raise ValueError(
            f"initial_state: expected a dict with keys {list(STATE_KEYS)} (or None), got {type(state).__name__}"
        )
    if set(state) != set(STATE_KEYS):
        missing = sorted(set(STATE_KEYS) - set(state))
        extra = sorted(set(state) - set(STATE_KEYS))
        raise ValueError(
            f"initial_state: expected keys {list(STATE_KEYS)}, missing {missing}, unexpected {extra}"
        )
    P = window_size - 1
    for key, shape in state_shapes(N, H, K, V, F, window_size).items():
        t = state[key]
        name = f"initial_state[{key!r}]"
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {list(shape)}, got {_shape(t)}")
        check_same_device(q, name, t)
        if key == "window_len":
            if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
                raise ValueError(f"{name}: expected an integer dtype, got {t.dtype}")
            if ((t < 0) | (t > P)).any():
                raise ValueError(
                    f"{name}: values must be in [0, window_size - 1] = [0, {P}], got {t.tolist()}"
                )
        elif not t.is_floating_point():
            raise ValueError(f"{name}: expected a floating dtype, got {t.dtype}")


def validate(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fq: torch.Tensor,
    fk: torch.Tensor,
    window_factor: torch.Tensor,
    window_size: int,
    linear_factor: float | torch.Tensor,
    scale: float | None,
    initial_state: Mapping[str, torch.Tensor] | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> Resolved:
    """Check every public argument of a LoLCATs op; return the resolved values."""
    B, T, H, K, V = check_qkv(q, k, v)
    F = check_features(fq, fk, q)
    window_size = check_window_size(window_size)
    wf = check_window_factor(window_factor, H, q)
    lf = _check_linear_factor(linear_factor, H, q)
    scale = check_scale(scale, K)
    if not isinstance(output_final_state, bool):
        raise ValueError(f"output_final_state: expected a bool, got {output_final_state!r}")
    N = check_cu_seqlens(cu_seqlens, B, T)
    if initial_state is not None:
        check_state(initial_state, N, H, K, V, F, window_size, q)
    return Resolved(scale, window_size, N, H, K, V, F, wf, lf)


# ------------------------------------------------------------------------------------------ driver


def load_state(state: Mapping[str, torch.Tensor], sd: torch.dtype) -> State:
    """Cast an incoming state to the compute dtype and zero its unused window slots."""
    out = {key: state[key].to(sd) for key in STATE_KEYS if key != "window_len"}
    wl = state["window_len"].to(torch.int64)
    P = out["window_k"].shape[2]
    valid = torch.arange(P, device=wl.device)[None, :] >= (P - wl)[:, None]  # [N, P]
    for key in ("window_k", "window_v", "window_fk"):  # where, not a product: garbage may be NaN
        out[key] = torch.where(valid[:, None, :, None], out[key], 0.0)
    out["window_len"] = wl
    return out


def run_lolcats(
    core: Core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fq: torch.Tensor,
    fk: torch.Tensor,
    window_factor: torch.Tensor,
    window_size: int,
    linear_factor: float | torch.Tensor,
    scale: float | None,
    initial_state: Mapping[str, torch.Tensor] | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    **core_kwargs,
) -> tuple[torch.Tensor, State | None]:
    """Validate, then run ``core`` on the whole batch or on each packed sequence.

    ``core(q, k, v, fq, fk, r: Resolved, state: State | None, **core_kwargs) -> (o, final)`` gets
    the state already cast and cleaned (:func:`load_state`), or None for an empty state, and
    returns ``o`` in the state dtype and the final state (None is fine when the caller did not ask
    for it: the chunk form passes ``need_final=output_final_state`` in ``core_kwargs``).
    """
    r = validate(
        q,
        k,
        v,
        fq,
        fk,
        window_factor,
        window_size,
        linear_factor,
        scale,
        initial_state,
        output_final_state,
        cu_seqlens,
    )
    sd = state_dtype(q)
    state = None if initial_state is None else load_state(initial_state, sd)
    if cu_seqlens is None:
        o, ht = core(q, k, v, fq, fk, r, state, **core_kwargs)
        return o.to(q.dtype), (ht if output_final_state else None)

    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    # split (not slicing in a loop): its backward is one concatenation
    pieces = list(zip(*(x.split(lengths, dim=1) for x in (q, k, v, fq, fk))))
    outs, finals = [], []
    for n, length in enumerate(lengths):
        h0 = None if state is None else {key: t[n : n + 1] for key, t in state.items()}
        if length == 0:  # an empty sequence leaves its state untouched
            if h0 is None:
                h0 = empty_state(1, r.H, r.K, r.V, r.F, r.window_size, sd, q.device)
            finals.append(h0)
            continue
        o, ht = core(*pieces[n], r, h0, **core_kwargs)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, dim=1).to(q.dtype)
    if not output_final_state:
        return o, None
    return o, {key: torch.cat([f[key] for f in finals], dim=0) for key in STATE_KEYS}
