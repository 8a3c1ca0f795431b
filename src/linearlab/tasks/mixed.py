"""Joint byte-level language modelling + MQAR batches in one 256-token vocabulary.

Used by the ``hybrid-ratio`` recipe (a hybrid model is trained on both tasks at once, as in
"A Systematic Analysis of Hybrid Linear Attention", arXiv 2507.06457).

How MQAR shares the byte vocabulary: token ids *are* bytes (0..255). An MQAR row of ``L`` tokens is
the NUL byte (``MQAR_MARKER = 0``), then one Zoology MQAR example of ``L - 2`` tokens drawn by
:func:`linearlab.tasks.mqar.multiquery_ar` with ``vocab_size=256`` (keys are ids 1..127, values
128..255, filler any id), then one random filler byte. NUL never occurs in text sources, so the first
token tells the model which task a row is. The example is ``L - 2`` long because ``multiquery_ar``
needs an even length below the vocabulary size (so ``L <= 256``). Text rows are plain byte windows
with next-byte targets; MQAR rows are labelled at their query positions only (-100 elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from linearlab.tasks.mqar import IGNORE_INDEX, MQARConfig, multiquery_ar
from linearlab.tasks.text import sample_windows

MQAR_MARKER = 0  # the NUL byte opens every MQAR row
_SEED_STRIDE = 2**24  # training steps before two (seed, kv setting) MQAR draws could meet
_MAX_KV_SETTINGS = 16


def mqar_bytes(
    seq_len: int, num_kv_pairs: int, num_examples: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """MQAR examples as byte rows ``[E, seq_len]`` opened by ``MQAR_MARKER``, and their labels.

    Example:
        >>> x, y = mqar_bytes(seq_len=256, num_kv_pairs=32, num_examples=4, seed=0)
        >>> bool((x[:, 0] == MQAR_MARKER).all()), int((y != -100).sum(1)[0])
        (True, 32)
    """
    x, y = multiquery_ar(mqar_config(seq_len, num_kv_pairs, num_examples), seed=seed)
    marker = torch.full((num_examples, 1), MQAR_MARKER, dtype=x.dtype)
    tail = torch.randint(256, (num_examples, 1), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    no_label = torch.full((num_examples, 1), IGNORE_INDEX, dtype=y.dtype)
    return torch.cat([marker, x, tail], 1), torch.cat([no_label, y, no_label], 1)


def mqar_config(seq_len: int, num_kv_pairs: int, num_examples: int = 1) -> MQARConfig:
    """The MQAR setting inside a byte row of ``seq_len`` tokens; ValueError naming the field if impossible."""
    if not isinstance(seq_len, int) or seq_len % 2 or not 4 <= seq_len <= 256:
        raise ValueError(f"seq_len: an MQAR byte row needs an even length in [4, 256], got {seq_len!r}")
    if not isinstance(num_kv_pairs, int) or not 1 <= num_kv_pairs <= (seq_len - 2) // 4:
        raise ValueError(
            f"num_kv_pairs: must be in [1, (seq_len - 2) // 4 = {(seq_len - 2) // 4}] for seq_len={seq_len}, "
            f"got {num_kv_pairs!r}"
        )
    cfg = MQARConfig(
        vocab_size=256, seq_len=seq_len - 2, num_kv_pairs=num_kv_pairs, num_examples=num_examples
    )
    cfg.validate()
    return cfg


@dataclass
class MixedBatches:
    """``step -> (inputs [B, L], targets [B, L], is_mqar [B])``: ``lm_rows`` text rows then ``mqar_rows``
    MQAR rows, a pure function of ``(seed, step)`` so a resumed run sees the same batches.

    Text windows come from ``train_bytes`` (a uint8 stream). MQAR examples are drawn fresh every
    step, from seeds that never meet :meth:`test_seed`'s; with several ``kv_pairs`` the MQAR rows
    cycle through them (row ``i`` has ``kv_pairs[i % len(kv_pairs)]`` pairs).
    """

    train_bytes: torch.Tensor
    seq_len: int
    kv_pairs: Sequence[int]
    lm_rows: int
    mqar_rows: int
    seed: int = 0

    def __post_init__(self) -> None:
        self.kv_pairs = tuple(self.kv_pairs)
        if self.lm_rows < 0 or self.mqar_rows < 0 or self.lm_rows + self.mqar_rows < 1:
            raise ValueError(
                f"lm_rows, mqar_rows: need >= 0 each and at least one row, got {self.lm_rows}, {self.mqar_rows}"
            )
        if not 1 <= len(self.kv_pairs) <= _MAX_KV_SETTINGS:
            raise ValueError(f"kv_pairs: give 1 to {_MAX_KV_SETTINGS} pair counts, got {list(self.kv_pairs)}")
        for n in self.kv_pairs:
            mqar_config(self.seq_len, n)

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= step < _SEED_STRIDE:
            raise ValueError(f"step: must be in [0, {_SEED_STRIDE}), got {step}")
        xs, ys = [], []
        if self.lm_rows:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
            x, y = sample_windows(self.train_bytes, self.lm_rows, self.seq_len, gen)
            xs.append(x)
            ys.append(y)
        mqar_x = torch.empty(self.mqar_rows, self.seq_len, dtype=torch.long)
        mqar_y = torch.empty(self.mqar_rows, self.seq_len, dtype=torch.long)
        for j, n in enumerate(self.kv_pairs):
            rows = torch.arange(j, self.mqar_rows, len(self.kv_pairs))
            if len(rows):
                # distinct seeds per (seed, kv setting, step), all below 2**32 - 2**24 (see test_seed)
                data_seed = ((self.seed % 15) * _MAX_KV_SETTINGS + j) * _SEED_STRIDE + step
                mqar_x[rows], mqar_y[rows] = mqar_bytes(self.seq_len, n, len(rows), data_seed)
        is_mqar = torch.arange(self.lm_rows + self.mqar_rows) >= self.lm_rows
        return torch.cat([*xs, mqar_x]), torch.cat([*ys, mqar_y]), is_mqar

    def test_seed(self) -> int:
        """Seed of held-out MQAR examples: above every training seed."""
        return 2**32 - 1 - (self.seed % 2**20)


def mixed_loss(
    logits: torch.Tensor, targets: torch.Tensor, is_mqar: torch.Tensor, mqar_weight: float = 0.5
) -> tuple[torch.Tensor, dict[str, float]]:
    """``(1 - w) * text CE + w * MQAR CE``, each the mean over its own labelled positions.

    A plain mean over all labelled tokens would weight MQAR by its few query positions (e.g. 32 of
    256 per row); averaging per task keeps the two objectives at the chosen weight. A batch without
    one of the tasks uses the other alone. Returns the loss and the two cross entropies (nats).
    """
    parts: dict[str, torch.Tensor] = {}
    for name, rows in (("lm_ce", ~is_mqar), ("mqar_ce", is_mqar)):
        if rows.any():
            parts[name] = F.cross_entropy(
                logits[rows].float().flatten(0, 1), targets[rows].flatten(), ignore_index=IGNORE_INDEX
            )
    if len(parts) == 2:
        loss = (1 - mqar_weight) * parts["lm_ce"] + mqar_weight * parts["mqar_ce"]
    else:
        (loss,) = parts.values()
    return loss, {k: float(v.detach()) for k, v in parts.items()}
