"""The Constrained Random Character proxy (``tasks/random_character.py``): data and metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.tasks.random_character import ALPHABET, crc_batch, crc_metric, crc_prompt, sample_sets


class _FixedAnswer(nn.Module):
    """A 'model' whose next token after a CRC prompt is drawn from a chosen rule over the allowed set."""

    def __init__(self, rule: str) -> None:
        super().__init__()
        self.rule = rule

    def forward(self, ids):
        logits = torch.full((*ids.shape, 256), -1e9)
        for i, row in enumerate(ids):
            chars = bytes(row[1:-2].tolist()).decode("latin-1")
            if self.rule == "uniform":
                allowed = list(chars)
            elif self.rule == "first":
                allowed = [chars[0]]
            else:
                allowed = [c for c in ALPHABET if c not in chars]
            logits[i, -1, [ord(c) for c in allowed]] = 0.0
        return logits


def test_batches_follow_the_base_and_collapsed_languages():
    ids, targets = crc_batch(3000, kind="base", set_size=4, malformed=0.2, seed=0)
    assert ids.shape == (3000, 7) and (targets[:, :-1] == -100).all()
    sets = [bytes(r[1:5].tolist()).decode() for r in ids]
    assert all(crc_prompt(s) == bytes(r.tolist()).decode() for s, r in zip(sets, ids))
    valid = [chr(int(t)) in s for s, t in zip(sets, targets[:, -1])]
    assert sum(valid) / len(valid) == pytest.approx(0.8, abs=0.03)
    assert all(chr(int(t)) in ALPHABET for t in targets[:, -1])
    ids_c, targets_c = crc_batch(50, kind="collapsed", seed=1)
    assert all(chr(int(t)) == bytes(r[1:2].tolist()).decode() for r, t in zip(ids_c, targets_c[:, -1]))
    s = sample_sets(20, 5, seed=2)
    assert all(len(set(x)) == 5 and list(x) == sorted(x) for x in s)


def test_metric_on_models_with_known_answer_distributions():
    sets = sample_sets(6, 4, seed=0)
    uniform = crc_metric(_FixedAnswer("uniform"), sets, n_samples=2000)
    assert uniform["validity"] == 1.0 and uniform["p_valid"] == pytest.approx(1.0)
    assert uniform["diversity"] == pytest.approx(1.0, abs=0.01) and uniform["distinct"] == 1.0
    first = crc_metric(_FixedAnswer("first"), sets, n_samples=200)
    assert first["validity"] == 1.0 and first["diversity"] == 0.0 and first["distinct"] == 0.25
    outside = crc_metric(_FixedAnswer("outside"), sets, n_samples=200)
    assert (
        outside["validity"] == 0.0
        and outside["p_valid"] == pytest.approx(0.0)
        and outside["diversity"] == 0.0
    )


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="kind: expected one of"):
        crc_batch(2, kind="sft")
    with pytest.raises(ValueError, match=r"set_size: expected an int in \[2, 15\]"):
        sample_sets(2, 16)
    with pytest.raises(ValueError, match="malformed: expected a fraction"):
        crc_batch(2, malformed=1.0)
    with pytest.raises(ValueError, match="sets: expected sets of one size"):
        crc_metric(_FixedAnswer("uniform"), ["abc", "abcd"])
    with pytest.raises(ValueError, match="n_samples: expected an int >= 1"):
        crc_metric(_FixedAnswer("uniform"), ["abcd"], n_samples=0)
