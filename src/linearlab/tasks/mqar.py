"""Multi-query associative recall (MQAR), re-implemented from Zoology.

Zoology: Measuring and Improving Recall in Efficient Language Models (Arora et al., arXiv 2312.04927).
An example is ``k1 v1 k2 v2 ... kN vN`` followed by a query region in which each key reappears once;
at the position of a repeated key the model must output that key's value. Keys come from
``[1, V/2)``, values from ``[V/2, V)``, each drawn without replacement per example. The gap before
each query is drawn without replacement from a power law ``p(g) ∝ a (g + 1)^(a - 1)`` (``a = 0.01``)
that favours short gaps. Labels are -100 everywhere except at query positions.

The draws follow Zoology's ``multiquery_ar`` call for call on a legacy ``numpy.random.RandomState``
seeded with ``seed``, so the same arguments give Zoology's examples; random non-query filler
tokens come from a seeded ``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class MQARConfig:
    """One MQAR setting: ``vocab_size``, ``seq_len`` (L), ``num_kv_pairs`` (N), ``num_examples``."""

    vocab_size: int = 256
    seq_len: int = 64
    num_kv_pairs: int = 4
    num_examples: int = 1000
    power_a: float = 0.01
    random_non_queries: bool = True

    def validate(self) -> None:
        if self.seq_len % 2 != 0:
            raise ValueError(f"seq_len: must be even, got {self.seq_len}")
        if self.vocab_size <= self.seq_len:
            raise ValueError(f"vocab_size: must exceed seq_len = {self.seq_len}, got {self.vocab_size}")
        if self.num_kv_pairs < 1 or 4 * self.num_kv_pairs > self.seq_len:
            raise ValueError(
                f"num_kv_pairs: need 1 <= 4 * num_kv_pairs <= seq_len = {self.seq_len}, got {self.num_kv_pairs}"
            )
        if self.vocab_size // 2 - 1 < self.num_kv_pairs:
            raise ValueError(
                f"vocab_size: {self.vocab_size} has too few key tokens for {self.num_kv_pairs} pairs"
            )
        if self.num_examples < 1:
            raise ValueError(f"num_examples: must be >= 1, got {self.num_examples}")
        if not 0 < self.power_a <= 1:
            raise ValueError(f"power_a: must be in (0, 1], got {self.power_a}")


def multiquery_ar(config: MQARConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate MQAR examples.

    Returns:
        inputs: ``[num_examples, seq_len]`` int64 tokens in ``[0, vocab_size)``.
        labels: ``[num_examples, seq_len]`` int64, the value at each query position, else -100.

    Example:
        >>> x, y = multiquery_ar(MQARConfig(vocab_size=256, seq_len=64, num_kv_pairs=4), seed=0)
    """
    config.validate()
    V, L, N, E = config.vocab_size, config.seq_len, config.num_kv_pairs, config.num_examples
    rng = np.random.RandomState(seed)
    context_size = 2 * N
    key_vocab = V // 2
    key_choices = np.arange(1, key_vocab)
    value_choices = np.arange(key_vocab, V)
    keys = np.stack([rng.choice(key_choices, size=N, replace=False) for _ in range(E)])
    values = np.stack([rng.choice(value_choices, size=N, replace=False) for _ in range(E)])
    kvs = np.zeros((E, context_size), dtype=np.int64)
    kvs[:, 0::2] = keys
    kvs[:, 1::2] = values

    space = (L - context_size) // 2
    p = config.power_a * np.arange(1, space + 1) ** (config.power_a - 1)
    p = p / p.sum()
    gap_range = np.arange(space)
    gaps = np.stack([rng.choice(gap_range, size=N, replace=False, p=p) for _ in range(E)])

    queries = np.zeros((E, L - context_size + 1), dtype=np.int64)
    np.put_along_axis(queries, gaps * 2, keys, axis=1)
    examples = np.concatenate([kvs, queries], axis=1)
    labels = np.full((E, L + 1), IGNORE_INDEX, dtype=np.int64)
    # the value is the next token after the query key, so after the shift below the label sits
    # at the query key's own position
    np.put_along_axis(labels, gaps * 2 + context_size + 1, values, axis=1)

    inputs = torch.from_numpy(examples[:, :-1].copy())
    targets = torch.from_numpy(labels[:, 1:].copy())
    if config.random_non_queries:
        gen = torch.Generator().manual_seed(seed)
        filler = torch.randint(V, inputs.shape, generator=gen)
        empty = inputs == 0
        inputs[empty] = filler[empty]
    return inputs, targets


def recall_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Exact-match accuracy over query positions only (labels != -100). ``logits: [B, L, V]``."""
    mask = labels != IGNORE_INDEX
    if not mask.any():
        raise ValueError("labels: no query positions (all -100)")
    pred = logits.argmax(-1)
    return (pred[mask] == labels[mask]).float().mean()
