"""Validation, the state layout, the selection rule and the varlen driver shared by the STILL forms.

State layout
------------
Every form reads and writes the same dict (``P = window_size - 1``, ``R = block_size - 1``,
``M = budget``, ``N`` = batch size, or the number of sequences with ``cu_seqlens``)::

    "linear":        [N, H, F, V + 1]  S = sum fk_j^T v_j over the summarised tokens, z = sum fk_j as
                                       the last value column
    "window_k":      [N, H, P, K]      keys of the last P tokens (the window of the next query minus itself)
    "window_v":      [N, H, P, V]
    "window_fk":     [N, H, P, F]
    "window_score":  [N, H, P]  f64    their partial self-saliency (the queries seen so far)
    "pending_k":     [N, H, R, K]      tokens that left the window since the last block boundary
    "pending_v":     [N, H, R, V]
    "pending_fk":    [N, H, R, F]
    "pending_score": [N, H, R]  f64    their (complete) self-saliency
    "salient_k":     [N, H, M, K]      the salient tokens, kept for softmax attention
    "salient_v":     [N, H, M, V]
    "salient_fk":    [N, H, M, F]
    "salient_score": [N, H, M]  f64
    "salient_pos":   [N, H, M]  int64  their stream positions; -1 marks an empty slot
    "position":      [N] int64         tokens processed so far (the stream position of the next token)

Window and pending slots are in time order and right-aligned, like lolcats' window: slot ``P - 1``
is the newest token and the pending slot ``R - 1`` the token just before window slot 0, so the two
buffers together hold consecutive positions. How many of their slots are used is a function of the
position ``p`` alone (so it is not stored)::

    window_len  = min(p, P)
    pending_len = max(0, p - max(b * floor(p / b), w - 1))      (< b: the buffer is emptied at every boundary)

Salient slots are left-aligned in increasing position (incoming states are put in that order);
a slot is used iff ``salient_pos >= 0``. Unused slots are zeros in returned states and ignored in
incoming ones. The size never depends on how many tokens were processed.

Dtypes: keys, values, features and ``linear`` are float32 (float64 when ``q`` is float64), so carrying
the state is exact for every input dtype. The scores are float64 whatever the input dtype: they
only drive the discrete selection, and computing them in float64 (from the exact float64 images of
q and k) makes the choices of the three forms agree up to ~1e-16 instead of flipping near-ties at
float32 resolution. They carry no gradient.
"""

from __future__ import annotations

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

#: the keys of a STILL state dict, in a fixed order
STATE_KEYS = (
    "linear",
    "window_k",
    "window_v",
    "window_fk",
    "window_score",
    "pending_k",
    "pending_v",
    "pending_fk",
    "pending_score",
    "salient_k",
    "salient_v",
    "salient_fk",
    "salient_score",
    "salient_pos",
    "position",
)
#: state entries holding integers
INT_KEYS = ("salient_pos", "position")
#: state entries holding self-saliency scores (float64, no gradient)
SCORE_KEYS = ("window_score", "pending_score", "salient_score")
#: every score is kept in this dtype
SCORE_DTYPE = torch.float64
#: "never" for exit times and "after everything" for sort keys (int64)
NEVER = 2**62

State = dict[str, torch.Tensor]
Core = Callable[..., tuple[torch.Tensor, State | None]]


@dataclass(frozen=True)
class Resolved:
    """Checked arguments, shared by all forms."""

    scale: float
    window_size: int
    budget: int
    block_size: int
    N: int
    H: int
    K: int
    V: int
    F: int
    #: ``[H]`` in the state dtype (autograd-tracked when the caller passed a tensor)
    window_factor: torch.Tensor

    @property
    def P(self) -> int:
        """Window cache slots: the ``w - 1`` tokens before the query."""
        return self.window_size - 1

    @property
    def R(self) -> int:
        """Pending slots: at most ``b - 1`` undecided tokens between two boundaries."""
        return self.block_size - 1


def state_shapes(
    N: int, H: int, K: int, V: int, F: int, window_size: int, budget: int, block_size: int
) -> dict[str, tuple[int, ...]]:
    """The shape of every state entry (see the module docstring)."""
    P, R, M = window_size - 1, block_size - 1, budget
    shapes: dict[str, tuple[int, ...]] = {"linear": (N, H, F, V + 1)}
    for part, slots in (("window", P), ("pending", R), ("salient", M)):
        shapes.update(
            {
                f"{part}_k": (N, H, slots, K),
                f"{part}_v": (N, H, slots, V),
                f"{part}_fk": (N, H, slots, F),
                f"{part}_score": (N, H, slots),
            }
        )
    shapes["salient_pos"] = (N, H, M)
    shapes["position"] = (N,)
    return {key: shapes[key] for key in STATE_KEYS}


def empty_state(r: Resolved, N: int, dtype: torch.dtype, device: torch.device) -> State:
    """The state of sequences that have seen no token: zeros, no salient token, position 0."""
    shapes = state_shapes(N, r.H, r.K, r.V, r.F, r.window_size, r.budget, r.block_size)
    state = {}
    for key, shape in shapes.items():
        dt = torch.int64 if key in INT_KEYS else SCORE_DTYPE if key in SCORE_KEYS else dtype
        state[key] = torch.zeros(shape, dtype=dt, device=device)
    state["salient_pos"] -= 1
    return state


def state_nbytes(state: Mapping[str, torch.Tensor]) -> int:
    """Total bytes of a state dict (constant in the number of tokens processed)."""
    return sum(t.numel() * t.element_size() for t in state.values())


def window_len(pos: torch.Tensor, window_size: int) -> torch.Tensor:
    """Used window slots after ``pos`` tokens: ``min(pos, w - 1)``."""
    return pos.clamp(max=window_size - 1)


def pending_len(pos: torch.Tensor, window_size: int, block_size: int) -> torch.Tensor:
    """Used pending slots after ``pos`` tokens: the tokens that left the window (``j + w <= pos``)
    after the last block boundary (at ``b * floor(pos / b)`` tokens); always ``< b``."""
    last_boundary = torch.div(pos, block_size, rounding_mode="floor") * block_size
    return (pos - torch.clamp(last_boundary, min=window_size - 1)).clamp(min=0)


# ------------------------------------------------------------------------------------------ selection


def beats(score: torch.Tensor, pos: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """``[..., Z, Z]``: entry ``[z, u]`` is True iff candidate ``u`` is a member and ranks above ``z``.

    Ranking: higher self-saliency first; equal scores go to the later position.
    """
    su, sz = score[..., None, :], score[..., :, None]
    pu, pz = pos[..., None, :], pos[..., :, None]
    return member[..., None, :] & ((su > sz) | ((su == sz) & (pu > pz)))


def keep_top(score: torch.Tensor, pos: torch.Tensor, member: torch.Tensor, budget: int) -> torch.Tensor:
    """``[..., Z]``: the members among the ``budget`` best (fewer than ``budget`` members beat them)."""
    return member & (beats(score, pos, member).sum(-1) < budget)


def time_order(pos: torch.Tensor, used: torch.Tensor, slots: int) -> torch.Tensor:
    """Indices of the first ``slots`` entries when the used ones are sorted by position, unused last."""
    key = torch.where(used, pos, NEVER)
    return key.argsort(dim=-1, stable=True)[..., :slots]


# ------------------------------------------------------------------------------------------ checks


def _check_int(name: str, value: int, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an int >= {low} ({what}), got {value!r}")
    return value


def check_state(state: Mapping[str, torch.Tensor], r: Resolved, q: torch.Tensor) -> None:
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
    shapes = state_shapes(r.N, r.H, r.K, r.V, r.F, r.window_size, r.budget, r.block_size)
    for key, shape in shapes.items():
        t = state[key]
        name = f"initial_state[{key!r}]"
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {list(shape)}, got {_shape(t)}")
        check_same_device(q, name, t)
        if key in INT_KEYS:
            if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
                raise ValueError(f"{name}: expected an integer dtype, got {t.dtype}")
            low = 0 if key == "position" else -1
            if (t < low).any():
                raise ValueError(f"{name}: values must be >= {low}, got {t.min().item()}")
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
    budget: int,
    block_size: int,
    scale: float | None,
    initial_state: Mapping[str, torch.Tensor] | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
) -> Resolved:
    """Check every public argument of a STILL op; return the resolved values."""
    B, T, H, K, V = check_qkv(q, k, v)
    F = check_features(fq, fk, q)
    window_size = _check_int("window_size", window_size, 1, "the query plus w-1 previous keys")
    budget = _check_int("budget", budget, 0, "the most salient tokens kept per sequence and head")
    block_size = _check_int("block_size", block_size, 1, "tokens between two selection boundaries")
    wf = check_window_factor(window_factor, H, q)
    scale = check_scale(scale, K)
    if not isinstance(output_final_state, bool):
        raise ValueError(f"output_final_state: expected a bool, got {output_final_state!r}")
    N = check_cu_seqlens(cu_seqlens, B, T)
    r = Resolved(scale, window_size, budget, block_size, N, H, K, V, F, wf)
    if initial_state is not None:
        check_state(initial_state, r, q)
    return r


# ------------------------------------------------------------------------------------------ driver


def load_state(state: Mapping[str, torch.Tensor], r: Resolved, sd: torch.dtype) -> State:
    """Cast an incoming state, zero its unused slots and put its salient slots in time order."""
    out = {}
    for key in STATE_KEYS:
        dt = torch.int64 if key in INT_KEYS else SCORE_DTYPE if key in SCORE_KEYS else sd
        out[key] = state[key].to(dt)
    pos = out["position"]
    for part, slots, used in (
        ("window", r.P, window_len(pos, r.window_size)),
        ("pending", r.R, pending_len(pos, r.window_size, r.block_size)),
    ):
        ok = torch.arange(slots, device=pos.device)[None, :] >= (slots - used)[:, None]  # [N, slots]
        for key in ("k", "v", "fk"):  # where, not a product: garbage may be NaN
            out[f"{part}_{key}"] = torch.where(ok[:, None, :, None], out[f"{part}_{key}"], 0.0)
        out[f"{part}_score"] = torch.where(ok[:, None, :], out[f"{part}_score"], 0.0)
    used = out["salient_pos"] >= 0
    order = time_order(out["salient_pos"], used, r.budget)
    used = used.gather(-1, order)
    for key in ("k", "v", "fk"):
        x = out[f"salient_{key}"]
        x = x.gather(2, order[..., None].expand(*order.shape, x.shape[-1]))
        out[f"salient_{key}"] = torch.where(used[..., None], x, 0.0)
    out["salient_score"] = torch.where(used, out["salient_score"].detach().gather(-1, order), 0.0)
    out["salient_pos"] = torch.where(used, out["salient_pos"].gather(-1, order), -1)
    for key in SCORE_KEYS:
        out[key] = out[key].detach()
    return out


def run_still(
    core: Core,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    fq: torch.Tensor,
    fk: torch.Tensor,
    window_factor: torch.Tensor,
    window_size: int,
    budget: int,
    block_size: int,
    scale: float | None,
    initial_state: Mapping[str, torch.Tensor] | None,
    output_final_state: bool,
    cu_seqlens: torch.Tensor | None,
    **core_kwargs,
) -> tuple[torch.Tensor, State | None]:
    """Validate, then run ``core`` on the whole batch or on each packed sequence.

    ``core(q, k, v, fq, fk, r: Resolved, state: State, **core_kwargs) -> (o, final)`` gets the
    state already cast and cleaned (:func:`load_state`, or :func:`empty_state`) and returns ``o``
    in the state dtype and the final state (None is fine when the caller did not ask for it).
    """
    r = validate(
        q,
        k,
        v,
        fq,
        fk,
        window_factor,
        window_size,
        budget,
        block_size,
        scale,
        initial_state,
        output_final_state,
        cu_seqlens,
    )
    sd = state_dtype(q)
    state = empty_state(r, r.N, sd, q.device) if initial_state is None else load_state(initial_state, r, sd)
    if cu_seqlens is None:
        o, ht = core(q, k, v, fq, fk, r, state, **core_kwargs)
        return o.to(q.dtype), (ht if output_final_state else None)

    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()
    # split (not slicing in a loop): its backward is one concatenation
    pieces = list(zip(*(x.split(lengths, dim=1) for x in (q, k, v, fq, fk))))
    outs, finals = [], []
    for n, length in enumerate(lengths):
        h0 = {key: t[n : n + 1] for key, t in state.items()}
        if length == 0:  # an empty sequence leaves its state untouched
            finals.append(h0)
            continue
        o, ht = core(*pieces[n], r, h0, **core_kwargs)
        outs.append(o)
        finals.append(ht)
    o = torch.cat(outs, dim=1).to(q.dtype)
    if not output_final_state:
        return o, None
    return o, {key: torch.cat([f[key] for f in finals], dim=0) for key in STATE_KEYS}
