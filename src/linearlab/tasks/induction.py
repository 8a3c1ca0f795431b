"""Repeated random token sequences: the smallest task that makes a transformer grow induction heads.

Each row is ``half_len`` uniform random tokens followed by the same tokens again, so the second half is
predictable only by looking back at what followed the previous occurrence of the current token.
"""

from __future__ import annotations

import torch


def repeated_tokens(batch_size: int, half_len: int, vocab_size: int, seed: int) -> torch.Tensor:
    """``[batch_size, 2 * half_len]`` long tensor: random tokens, then the same tokens again.

    Deterministic in ``seed`` (use ``seed`` = a run seed mixed with the step for training batches).
    """
    for name, value in (("batch_size", batch_size), ("half_len", half_len), ("vocab_size", vocab_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    g = torch.Generator().manual_seed(seed)
    first = torch.randint(0, vocab_size, (batch_size, half_len), generator=g)
    return torch.cat([first, first], dim=1)


def second_half_accuracy(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """Next-token accuracy on the predictable positions (second half, except its last token).

    ``logits: [B, T, V]`` for ``tokens: [B, T]`` with ``T = 2 * half_len``.
    """
    half = tokens.shape[1] // 2
    pred = logits[:, half - 1 : -1].argmax(-1)
    return float((pred == tokens[:, half:]).float().mean())
