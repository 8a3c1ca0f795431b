"""A counting task whose training objective never asks for the count.

Vocabulary (``VOCAB_SIZE = 21``): ``0`` BOS/PAD, ``1..9`` the digit tokens (never in training text),
``10`` SEP, ``11`` END, ``12..19`` eight item types, ``20`` FILL. A sequence is::

    BOS  FILL * f  a_1 .. a_n  SEP  b_1 .. b_n  END  PAD ...

with ``n`` uniform in ``1..max_count``, ``f`` uniform in ``0..max_fill`` (so the count is not the
position) and random items. Next-token loss is taken on the items and on
the END token; the second list ends exactly after ``n`` items, so predicting END needs the count of
the first list (then the model carries it from SEP on), yet no digit is ever a target. This is the
"the model knows the count but its digit rows cannot read it" setting of Garcia (arXiv 2605.03258).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BOS, SEP, END = 0, 10, 11
DIGITS = tuple(range(1, 10))
ITEMS = tuple(range(12, 20))
FILL = 20
VOCAB_SIZE = 21
MAX_FILL = 6


@dataclass(frozen=True)
class CountingBatch:
    """``tokens: [B, T]``, ``targets: [B, T]`` (next token, -100 where not scored), ``counts: [B]``
    and ``sep_pos: [B]`` (the SEP position, where the count of the first list is complete)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    counts: torch.Tensor
    sep_pos: torch.Tensor


def seq_len(max_count: int = 9) -> int:
    """Length of every sequence: BOS + filler + two lists + SEP + END."""
    return 2 * max_count + 3 + MAX_FILL


def counting_batch(batch_size: int, seed: int, max_count: int = 9) -> CountingBatch:
    """Draw a batch (deterministic in ``seed``)."""
    if not isinstance(max_count, int) or not 1 <= max_count <= 9:
        raise ValueError(
            f"max_count: expected an int in [1, 9] (one digit token per count), got {max_count!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    g = torch.Generator().manual_seed(seed)
    t = seq_len(max_count)
    counts = torch.randint(1, max_count + 1, (batch_size,), generator=g)
    fills = torch.randint(0, MAX_FILL + 1, (batch_size,), generator=g)
    items = torch.tensor(ITEMS)[torch.randint(0, len(ITEMS), (batch_size, 2 * max_count), generator=g)]
    tokens = torch.full((batch_size, t), BOS, dtype=torch.long)
    targets = torch.full((batch_size, t), -100, dtype=torch.long)
    for b, (n, f) in enumerate(zip(counts.tolist(), fills.tolist())):
        row = [BOS, *[FILL] * f, *items[b, :n].tolist(), SEP, *items[b, n : 2 * n].tolist(), END]
        tokens[b, : len(row)] = torch.tensor(row)
        # score the second list and its END (the first list and SEP's timing are unpredictable)
        sep = f + n + 1
        targets[b, sep : sep + n + 1] = torch.tensor(row[sep + 1 : sep + n + 2])
    return CountingBatch(tokens=tokens, targets=targets, counts=counts, sep_pos=fills + counts + 1)


def end_accuracy(logits: torch.Tensor, batch: CountingBatch) -> float:
    """Share of sequences whose second list the model ends exactly right: END is the argmax after
    the n-th item and not before (``logits: [B, T, V]``)."""
    ok = 0
    pred = logits.argmax(-1)
    for b, (n, sep) in enumerate(zip(batch.counts.tolist(), batch.sep_pos.tolist())):
        is_end = pred[b, sep : sep + n + 1] == END
        ok += bool(is_end[-1]) and not bool(is_end[:-1].any())
    return ok / len(batch.counts)
