"""Shared pieces of the per-mixer tests: float64 inputs, head reshapes, a quadratic-form reference
of causal linear attention and a spy on ``linearlab.ops``.

Import from a test file in this folder with ``from _mixer_reference import ...`` (pytest puts the
test's folder on ``sys.path``; the name is unique across ``tests/`` because modules are cached by
name).
"""

from __future__ import annotations

import pytest
import torch

from linearlab import ops

f64 = torch.float64


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=f64)


def heads(t: torch.Tensor, H: int) -> torch.Tensor:
    """``[..., H * D] -> [..., H, D]``."""
    return t.unflatten(-1, (H, -1))


def causal_linear_reference(q, k, v, normalize: bool, scale: float = 1.0, log_decay=None):
    """Quadratic-form reference: ``o_t = sum_{s<=t} w_ts (q_t . k_s) v_s`` (``[B, T, H, *]``)."""
    T = q.shape[1]
    scores = torch.einsum("bthd,bshd->bhts", q, k) * scale
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if log_decay is not None:
        dist = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).clamp(min=0).to(f64)
        scores = scores * torch.exp(log_decay.to(f64)[:, None, None] * dist)
    scores = scores.masked_fill(~mask, 0.0)
    o = torch.einsum("bhts,bshd->bthd", scores, v)
    if normalize:
        # same eps as the ops: a ReLU-type map can give an all-zero query
        o = o / (scores.sum(-1).transpose(1, 2)[..., None] + 1e-6)
    return o


def spy(monkeypatch: pytest.MonkeyPatch, op_name: str) -> list[dict]:
    """Wrap ``linearlab.ops.<op_name>`` so each call's arguments are recorded (the op still runs)."""
    real = getattr(ops, op_name)
    calls: list[dict] = []

    def wrapper(*args, **kwargs):
        calls.append({"args": args, "kwargs": kwargs})
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, op_name, wrapper)
    return calls
