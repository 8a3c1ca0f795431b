"""Choosing a response-generation strategy before fine-tuning (Ren, Chen, Liu, arXiv 2502.11779).

For each candidate strategy, a small sample of (prompt, response) pairs is scored against the
*target* model, the one to be fine-tuned:

- :func:`response_nll`: the target's mean negative log-likelihood per response token (log
  perplexity; the baseline the paper improves on);
- :func:`alignment_score`: the paper's (v1) expected alignment between a candidate response and
  responses sampled from the target for the same prompt, ``E_{y ~ target}[sim(candidate, y)]``,
  with ``sim`` = 1 - normalised edit distance;
- :func:`self_aligned_nll`: the v2 paper's self-aligned perplexity (log of it): the target's NLL of
  the candidate when the context first shows ``shots`` of the target's *own* correct answers to
  other prompts (:func:`own_responses`), so the target scores the candidate while primed with its
  own style. The paper gives no formula in its abstract; this follows the pipeline of its released
  code (the target's initial predictions, the correct ones kept, then an in-context perplexity).

:func:`select_response_method` scores every strategy and picks one (lowest self-aligned perplexity
when demonstrations are given, else highest alignment); :func:`spearman` compares a score's ranking
of the strategies with their fine-tuned results.

Example:
    >>> demos = own_responses(model, other_prompts, max_new_tokens=8, accept=is_right)
    >>> scores = select_response_method(model, prompts, {"direct": resp_a, "verbose": resp_b}, demos=demos)
    >>> scores["best"], scores["strategies"]["direct"]["self_aligned_nll"]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.analysis.hooks import logits_of
from linearlab.papers import ANALYSIS, declare_paper

Tokens = Sequence[int]


def _check_pairs(prompts: Sequence[Tokens], responses: Sequence[Tokens]) -> None:
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(
            f"prompts, responses: expected equally many (>= 1), got {len(prompts)} and {len(responses)}"
        )
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if len(p) < 1 or len(r) < 1:
            raise ValueError(f"prompts[{i}], responses[{i}]: expected non-empty token lists")


@torch.no_grad()
def response_nll(model: nn.Module, prompts: Sequence[Tokens], responses: Sequence[Tokens]) -> torch.Tensor:
    """``[N]`` mean negative log-likelihood per response token of ``responses[i]`` given ``prompts[i]``."""
    _check_pairs(prompts, responses)
    out = []
    for p, r in zip(prompts, responses):
        ids = torch.tensor([list(p) + list(r)])
        logp = F.log_softmax(logits_of(model(ids[:, :-1])).double(), dim=-1)[0]
        targets = ids[0, 1:]
        start = len(p) - 1  # position predicting the first response token
        out.append(-logp[start:, :].gather(-1, targets[start:, None]).mean())
    return torch.stack(out)


def edit_similarity(a: Tokens, b: Tokens) -> float:
    """``1 - levenshtein(a, b) / max(len(a), len(b))`` (1 for two empty sequences)."""
    a, b = list(a), list(b)
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


@torch.no_grad()
def sample_responses(
    model: nn.Module,
    prompt: Tokens,
    n: int,
    max_new_tokens: int,
    stop_token: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """``n`` responses of ``model`` (a MixerLM) to ``prompt``, each cut after ``stop_token``."""
    ids = torch.tensor([list(prompt)] * n)
    out = model.generate(ids, max_new_tokens=max_new_tokens, temperature=temperature, generator=generator)
    samples = []
    for row in out[:, len(prompt) :].tolist():
        if stop_token is not None and stop_token in row:
            row = row[: row.index(stop_token) + 1]
        samples.append(row)
    return samples


def alignment_score(
    model: nn.Module,
    prompts: Sequence[Tokens],
    responses: Sequence[Tokens],
    samples: int = 4,
    max_new_tokens: int = 16,
    stop_token: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """``[N]`` mean edit similarity between each response and ``samples`` target responses."""
    _check_pairs(prompts, responses)
    g = torch.Generator().manual_seed(seed)
    out = []
    for p, r in zip(prompts, responses):
        ys = sample_responses(model, p, samples, max_new_tokens, stop_token, temperature, g)
        out.append(sum(edit_similarity(r, y) for y in ys) / len(ys))
    return torch.tensor(out, dtype=torch.float64)


@torch.no_grad()
def own_responses(
    model: nn.Module,
    prompts: Sequence[Tokens],
    max_new_tokens: int,
    stop_token: int | None = None,
    accept: Callable[[int, list[int]], bool] | None = None,
) -> list[tuple[list[int], list[int]]]:
    """The target's greedy ``(prompt, response)`` pairs, kept where ``accept(i, response)`` holds.

    The demonstrations of :func:`self_aligned_nll`: the paper keeps the target's correct answers, so
    ``accept`` is usually a correctness check of the response to ``prompts[i]``.
    """
    kept = []
    for i, p in enumerate(prompts):
        (r,) = sample_responses(model, p, 1, max_new_tokens, stop_token, temperature=0.0)
        if accept is None or accept(i, r):
            kept.append((list(p), r))
    return kept


def self_aligned_nll(
    model: nn.Module,
    prompts: Sequence[Tokens],
    responses: Sequence[Tokens],
    demos: Sequence[tuple[Tokens, Tokens]],
    shots: int = 3,
    seed: int = 0,
) -> torch.Tensor:
    """``[N]`` mean NLL per token of ``responses[i]`` after ``shots`` of the target's own answers.

    The context is ``shots`` demonstrations ``prompt_d + response_d`` drawn from ``demos`` (never one
    with the same prompt as item ``i``), then ``prompts[i]``; only the response tokens are scored.
    ``exp`` of the mean is the self-aligned perplexity.
    """
    _check_pairs(prompts, responses)
    if not demos:
        raise ValueError(
            "demos: expected at least one (prompt, response) pair of the target's own answers, got none"
        )
    if shots < 1:
        raise ValueError(f"shots: must be >= 1, got {shots}")
    g = torch.Generator().manual_seed(seed)
    contexts = []
    for p in prompts:
        pool = [d for d in demos if list(d[0]) != list(p)] or list(demos)
        picks = torch.randperm(len(pool), generator=g)[:shots].tolist()
        shown = [t for k in picks for t in [*pool[k][0], *pool[k][1]]]
        contexts.append(shown + list(p))
    return response_nll(model, contexts, responses)


def select_response_method(
    model: nn.Module,
    prompts: Sequence[Tokens],
    candidates: Mapping[str, Sequence[Tokens]],
    samples: int = 4,
    max_new_tokens: int = 16,
    stop_token: int | None = None,
    temperature: float = 1.0,
    seed: int = 0,
    demos: Sequence[tuple[Tokens, Tokens]] | None = None,
    shots: int = 3,
) -> dict:
    """Score every strategy's responses to the same ``prompts``.

    Returns ``{"strategies": {name: {"nll", "alignment"[, "self_aligned_nll"]}}, "best": name,
    "best_by": {score: name}}``. With ``demos`` (the target's own answers, :func:`own_responses`)
    ``best`` has the lowest self-aligned perplexity (the v2 paper's rule), otherwise the highest
    alignment (v1). Target responses for the alignment are sampled at ``temperature`` (0 = greedy).
    """
    if not candidates:
        raise ValueError("candidates: expected at least one strategy, got none")
    model.eval()
    table = {}
    for name, responses in candidates.items():
        table[name] = {
            "nll": float(response_nll(model, prompts, responses).mean()),
            "alignment": float(
                alignment_score(
                    model, prompts, responses, samples, max_new_tokens, stop_token, temperature, seed
                ).mean()
            ),
        }
        if demos is not None:
            table[name]["self_aligned_nll"] = float(
                self_aligned_nll(model, prompts, responses, demos, shots, seed).mean()
            )
    best_by = {
        "alignment": max(table, key=lambda k: table[k]["alignment"]),
        "perplexity": min(table, key=lambda k: table[k]["nll"]),
    }
    if demos is not None:
        best_by["self_aligned"] = min(table, key=lambda k: table[k]["self_aligned_nll"])
    best = best_by["self_aligned"] if demos is not None else best_by["alignment"]
    return {"strategies": table, "best": best, "best_by": best_by}


def _ranks(x: torch.Tensor) -> torch.Tensor:
    # average ranks for ties
    order = x.argsort()
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = torch.arange(len(x), dtype=torch.float64)
    for v in x.unique():
        mask = x == v
        ranks[mask] = ranks[mask].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of tie-averaged ranks)."""
    a, b = torch.tensor(list(x), dtype=torch.float64), torch.tensor(list(y), dtype=torch.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"x, y: expected two sequences of equal length >= 2, got {len(a)} and {len(b)}")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(ra.norm() * rb.norm())
    return float(ra @ rb) / denom if denom else float("nan")


declare_paper(
    arxiv="2502.11779",
    short="Response-strategy selection",
    title="Efficient Response Generation Method Selection for Fine-Tuning Large Language Models",
    authors="Ren, Chen, Liu",
    area=ANALYSIS,
    status="implemented",
    objects=(
        "linearlab.analysis.response_selection.select_response_method",
        "linearlab.analysis.response_selection.alignment_score",
        "linearlab.analysis.response_selection.self_aligned_nll",
        "linearlab.analysis.response_selection.own_responses",
        "linearlab.analysis.response_selection.response_nll",
        "linearlab.analysis.response_selection.spearman",
    ),
    recipes=("response-selection",),
    usage=(
        "from linearlab.analysis.response_selection import select_response_method\n"
        "best = select_response_method(model, [[1, 2, 3]], {'a': [[4, 5]], 'b': [[6]]}, samples=2, max_new_tokens=3)['best']"
    ),
    claim=(
        "Scoring a small sample from each response-generation strategy by its expected alignment with "
        "the target model's own outputs predicts fine-tuned performance better than perplexity, and "
        "selecting by it gives significant gains (abstract)."
    ),
    note="Both versions' scores: v1's expected edit-similarity with the target's samples and v2's "
    "self-aligned perplexity (in-context perplexity after the target's own correct answers, as the "
    "released code's pipeline computes it). The benchmark is synthetic (addition in six styles).",
)
