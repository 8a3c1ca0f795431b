"""Long-range key-value recall inside byte text: a needle task whose keys lie far behind the queries.

A row of ``seq_len`` byte tokens::

    k1 v1 k2 v2 ... kN vN | filler text ...................... | kp1 vp1 kp2 vp2 ... kpN vpN

Keys are bytes ``128..191`` and values ``192..255``, drawn without repetition within a row; the
filler is ASCII text (bytes >= 128 of the source become spaces), so a key or value byte never
appears by chance in between. The queries at the end repeat every key in a random order; the model
must answer each with its value, which it last saw ``seq_len - 4N`` tokens or more earlier. With a
long enough row every answer lies far outside a sliding window of softmax attention (LoLCATs and
Liger keep 64 tokens), so only the long-range part of a linearised layer can recall it.

Rows are plain next-token sequences (a language model trains on them as on text);
:func:`recall_accuracy` scores only the answers.
"""

from __future__ import annotations

import torch

KEY_BYTES = range(128, 192)
VALUE_BYTES = range(192, 256)


def recall_rows(
    filler: torch.Tensor, num_rows: int, seq_len: int, num_pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_rows`` rows ``[num_rows, seq_len]`` (int64) and their answer mask (True where a value is due).

    ``mask[r, t]`` is True when token ``t + 1`` of row ``r`` is the value the query key at ``t``
    asks for, i.e. the prediction at ``t`` is scored.

    Args:
        filler: a uint8 or int64 stream of text bytes to cut the filler from.
        num_pairs: ``N`` key-value pairs per row, at most 64.
    """
    if not 1 <= num_pairs <= len(KEY_BYTES):
        raise ValueError(f"num_pairs: must be in [1, {len(KEY_BYTES)}], got {num_pairs}")
    fill_len = seq_len - 4 * num_pairs
    if fill_len < 1:
        raise ValueError(
            f"seq_len: {seq_len} leaves no room for filler with num_pairs={num_pairs} (needs > {4 * num_pairs})"
        )
    if filler.numel() < fill_len + 1:
        raise ValueError(f"filler: {filler.numel()} bytes is too short for {fill_len} filler tokens")
    rows, masks = [], []
    for _ in range(num_rows):
        keys = torch.randperm(len(KEY_BYTES), generator=generator)[:num_pairs] + KEY_BYTES.start
        values = torch.randperm(len(VALUE_BYTES), generator=generator)[:num_pairs] + VALUE_BYTES.start
        context = torch.stack([keys, values], 1).flatten()
        start = int(torch.randint(0, filler.numel() - fill_len, (1,), generator=generator))
        text = filler[start : start + fill_len].long()
        text = torch.where(text >= KEY_BYTES.start, torch.full_like(text, ord(" ")), text)
        order = torch.randperm(num_pairs, generator=generator)
        queries = torch.stack([keys[order], values[order]], 1).flatten()
        row = torch.cat([context, text, queries])
        mask = torch.zeros(seq_len, dtype=torch.bool)
        mask[seq_len - 2 * num_pairs :: 2] = True  # each query key predicts its value next
        rows.append(row)
        masks.append(mask)
    return torch.stack(rows), torch.stack(masks)


@torch.no_grad()
def recall_accuracy(logits: torch.Tensor, rows: torch.Tensor, mask: torch.Tensor) -> float:
    """Fraction of answers right: ``argmax logits[r, t] == rows[r, t + 1]`` where ``mask[r, t]``.

    ``logits: [R, T, V]`` of the model on ``rows: [R, T]``; ``mask: [R, T]`` from :func:`recall_rows`.
    """
    predicted = logits[:, :-1].argmax(-1)
    right = (predicted == rows[:, 1:]) & mask[:, :-1]
    return float(right.sum()) / float(mask[:, :-1].sum())
