"""The Constrained Random Character (CRC) task: validity and diversity of one sampled character.

The proxy of Selective Layer Restoration (Zhang, Wang, Soh, arXiv 2602.06665): a prompt lists an
allowed set ``S`` of characters and asks for a random one of them. A good sampler answers inside
``S`` (validity) and spreads its answers over ``S`` (diversity); a post-trained model typically keeps
validity and loses diversity (it always says the same character).

Byte-level format (token id = byte value), one episode per row::

    "<" + S (sorted, distinct) + ">=" + answer          e.g. "<bdkm>=k"

Training rows (:func:`crc_batch`) are labelled only at the answer position. The *base* language
answers uniformly inside ``S`` except for a ``malformed`` fraction answered uniformly outside it
(weak instruction following); the *collapsed* language always answers ``min(S)`` (a post-trained
model with perfect format and no diversity). The metric (:func:`crc_metric`) samples answers from a
model's next-token distribution after the prompt. The paper's exact diversity measure is not
public; ours is stated in :func:`crc_metric`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.tasks.mqar import IGNORE_INDEX

ALPHABET = "abcdefghijklmnop"
KINDS = ("base", "collapsed")


def crc_prompt(chars: str) -> str:
    """The prompt asking for one character of ``chars``: ``"<" + chars + ">="``."""
    return f"<{chars}>="


def _check(set_size: int, alphabet: str) -> None:
    if len(set(alphabet)) != len(alphabet) or not alphabet or any(ord(c) > 255 for c in alphabet):
        raise ValueError(f"alphabet: expected distinct byte characters, got {alphabet!r}")
    if not isinstance(set_size, int) or not 2 <= set_size < len(alphabet):
        raise ValueError(
            f"set_size: expected an int in [2, {len(alphabet) - 1}] for this alphabet, got {set_size!r}"
        )


def sample_sets(n: int, set_size: int, alphabet: str = ALPHABET, seed: int = 0) -> list[str]:
    """``n`` allowed sets: ``set_size`` distinct characters of ``alphabet`` each, sorted."""
    _check(set_size, alphabet)
    g = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(n):
        idx = torch.randperm(len(alphabet), generator=g)[:set_size].sort().values
        sets.append("".join(alphabet[int(i)] for i in idx))
    return sets


def crc_batch(
    n: int,
    kind: str = "base",
    set_size: int = 4,
    malformed: float = 0.2,
    alphabet: str = ALPHABET,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training episodes: input ids ``[n, set_size + 4]`` and targets (only the answer labelled).

    ``kind="base"``: answer uniform in ``S`` with probability ``1 - malformed``, else uniform in
    ``alphabet \\ S``; ``kind="collapsed"``: answer ``min(S)``.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if not 0 <= malformed < 1:
        raise ValueError(f"malformed: expected a fraction in [0, 1), got {malformed!r}")
    sets = sample_sets(n, set_size, alphabet, seed)
    g = torch.Generator().manual_seed(seed + 1)
    rows = []
    for chars in sets:
        if kind == "collapsed":
            answer = chars[0]
        elif float(torch.rand((), generator=g)) < malformed:
            outside = [c for c in alphabet if c not in chars]
            answer = outside[int(torch.randint(len(outside), (), generator=g))]
        else:
            answer = chars[int(torch.randint(len(chars), (), generator=g))]
        rows.append(list((crc_prompt(chars) + answer).encode("latin-1")))
    x = torch.tensor(rows, dtype=torch.long)
    inputs = x[:, :-1]
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, -1] = x[:, -1]  # the answer follows the last prompt token
    return inputs, targets


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = model(ids)
    return out.logits if hasattr(out, "logits") else out


@torch.no_grad()
def answer_distribution(model: nn.Module, sets: list[str]) -> torch.Tensor:
    """The model's next-token probabilities after each prompt: ``[len(sets), vocab]`` (float64)."""
    lengths = {len(s) for s in sets}
    if len(lengths) != 1:
        raise ValueError(f"sets: expected sets of one size (one prompt length), got sizes {sorted(lengths)}")
    ids = torch.tensor([list(crc_prompt(s).encode("latin-1")) for s in sets], dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        logits = _logits(model, ids)[:, -1].double()
    finally:
        model.train(was_training)
    return F.softmax(logits, -1)


@torch.no_grad()
def crc_metric(
    model: nn.Module,
    sets: list[str],
    n_samples: int = 200,
    temperature: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """Validity and diversity of ``n_samples`` sampled answers per prompt, averaged over the prompts.

    Returns:
        ``validity``: fraction of samples inside the allowed set ``S``;
        ``diversity``: entropy of the valid samples' empirical distribution over ``S`` divided by
        ``log |S|`` (1 = uniform over ``S``, 0 = always the same character; 0 without valid samples);
        ``distinct``: distinct valid answers / ``|S|``;
        ``p_valid``: the exact probability mass the model puts on ``S`` (no sampling noise).
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected an int >= 1, got {n_samples!r}")
    if not temperature > 0:
        raise ValueError(f"temperature: must be > 0, got {temperature!r}")
    probs = answer_distribution(model, sets)
    if temperature != 1.0:
        probs = F.softmax(probs.clamp_min(1e-300).log() / temperature, -1)
    g = torch.Generator().manual_seed(seed)
    samples = torch.multinomial(probs, n_samples, replacement=True, generator=g)  # [P, n]
    validity, diversity, distinct, p_valid = [], [], [], []
    for chars, row, p in zip(sets, samples, probs):
        allowed = torch.tensor(list(chars.encode("latin-1")))
        valid = torch.isin(row, allowed)
        validity.append(float(valid.double().mean()))
        p_valid.append(float(p[allowed].sum()))
        counts = torch.stack([(row == a).sum() for a in allowed]).double()
        total = counts.sum()
        if total > 0:
            q = counts[counts > 0] / total
            diversity.append(float(-(q * q.log()).sum()) / math.log(len(chars)))
        else:
            diversity.append(0.0)
        distinct.append(float((counts > 0).double().mean()))
    n = len(sets)
    return {
        "validity": sum(validity) / n,
        "diversity": sum(diversity) / n,
        "distinct": sum(distinct) / n,
        "p_valid": sum(p_valid) / n,
    }
