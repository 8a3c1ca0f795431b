"""The state vocabulary shared by every mixer, and the one check of an incoming state.

A mixer is called as ``y, state = mixer(x, state)``: ``state`` is None at the start of a sequence,
afterwards the dict the previous call returned. Its keys follow one convention:

- ``"recurrent"``: the state of the mixer's recurrence, i.e. what its op carries as
  ``initial_state`` / final state: the matrix memory ``[B, H, K, V]`` of the linear-attention
  family (``[B, H, F, V + 1]`` with a normalised read-out, whose key sum rides along as the last
  value column), or the LSSL's per-channel state ``[B, D, N]``.
- ``"conv"``, ``"conv_q"``, ``"conv_k"``, ``"conv_v"``: short-convolution buffers ``[B, C, kernel - 1]``
  (the last inputs of the convolution over the whole stream, or of the one over q, k or v).
- ``"k"``, ``"v"``: a KV cache ``[B, P, H, D]`` of ``P`` past tokens (softmax attention, block
  attention).
- ``"pos"``: a 0-dim long tensor counting the tokens seen, for mixers whose math depends on the
  absolute position (rotary phases, block boundaries).

Every mixer declares the exact keys and shapes it expects in ``state_shapes(batch_size)`` and calls
:func:`check_state` on entry, so a wrong state (a different mixer's state, a stale batch size, a
renamed key) is a ``ValueError`` naming the expected keys and shapes instead of a bare ``KeyError``
or a shape error deep inside an op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StateShape:
    """Expected shape of one state entry: a name per dim and its size (None: any size).

    A size-None dim name used by several entries of one state must have one size across them
    (e.g. the cache length ``P`` of ``"k"`` and ``"v"``).
    """

    names: tuple[str, ...]
    sizes: tuple[int | None, ...]

    def __str__(self) -> str:
        return "[" + ", ".join(n if s is None else f"{n}={s}" for n, s in zip(self.names, self.sizes)) + "]"


def shape(names: str, *sizes: int | None) -> StateShape:
    """``shape("B H K V", 2, 4, 16, 16)`` -> ``[B=2, H=4, K=16, V=16]``; ``shape("")`` is a 0-dim entry."""
    dims = tuple(names.split())
    if len(dims) != len(sizes):
        raise ValueError(f"names: {len(dims)} dim names {list(dims)} for {len(sizes)} sizes")
    return StateShape(dims, tuple(sizes))


StateShapes = dict[str, StateShape]


def describe(expected: StateShapes) -> str:
    """``{'recurrent': [B=2, H=4, K=16, V=16], 'pos': []}``: the form used in error messages."""
    return "{" + ", ".join(f"{k!r}: {s}" for k, s in expected.items()) + "}"


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_state(state: object, expected: StateShapes) -> None:
    """Check an incoming mixer ``state`` (None passes) against ``expected`` (key -> :class:`StateShape`).

    Raises a ValueError naming the expected keys and shapes when ``state`` is not a dict, lacks a
    key or has an extra one, holds a non-tensor, or holds a tensor of another shape (with a
    dedicated message when only the batch size differs from ``x``'s).
    """
    if state is None:
        return
    want = describe(expected)
    if not isinstance(state, dict):
        raise ValueError(f"state: expected None or a dict {want}, got {type(state).__name__}")
    missing = [k for k in expected if k not in state]
    extra = sorted(str(k) for k in state if k not in expected)
    problems = [f"missing key(s) {missing}"] if missing else []
    if extra:
        problems.append(f"unexpected key(s) {extra}")
    if problems:
        raise ValueError(f"state: {'; '.join(problems)}; expected {want}")
    bound: dict[str, int] = {}
    for key, spec in expected.items():
        t = state[key]
        if not isinstance(t, torch.Tensor):
            raise ValueError(
                f"state[{key!r}]: expected a torch.Tensor {spec}, got {type(t).__name__}; expected {want}"
            )
        fits = t.dim() == len(spec.sizes)
        if fits:
            for name, size, got in zip(spec.names, spec.sizes, t.shape):
                if size is None:
                    size = bound.setdefault(name, got)
                fits = fits and got == size
        if fits:
            continue
        batch_only = (
            t.dim() == len(spec.sizes)
            and t.dim() > 0
            and t.shape[0] != spec.sizes[0]
            and all(s is None or s == g for s, g in zip(spec.sizes[1:], t.shape[1:]))
        )
        if batch_only:
            raise ValueError(
                f"state[{key!r}]: batch size must match x's B = {spec.sizes[0]}, got shape {_shape(t)}; "
                f"expected {want}"
            )
        raise ValueError(f"state[{key!r}]: expected shape {spec}, got {_shape(t)}; expected {want}")


def get_position(state: dict | None) -> int:
    """Absolute position of the next token: ``state["pos"]``, 0 at the start of a sequence."""
    return 0 if state is None else int(state["pos"])


def position_tensor(pos: int, device: torch.device) -> torch.Tensor:
    """``pos`` as the ``"pos"`` entry of a state."""
    # a 0-dim tensor, so that the whole state is a dict of tensors (HF caches map over it)
    return torch.tensor(pos, dtype=torch.long, device=device)
