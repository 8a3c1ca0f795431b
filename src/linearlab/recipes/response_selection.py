"""Recipe ``response-selection``: pick the response style to fine-tune on, before fine-tuning (Ren et al.).

A small byte-level target model is pretrained on addition problems over small numbers answered in one
style (:mod:`linearlab.tasks.addition_styles`, ``direct``), ``pack`` problems to a row as a text
stream, so that a context of several solved problems is familiar to it. Each candidate strategy
writes equally correct answers in its own style. For each strategy:

1. score ``score_n`` of its responses with the target: mean NLL per token (perplexity, the baseline),
   the expected edit-similarity alignment with the target's own sampled answers (v1), and the
   self-aligned perplexity (v2): the NLL after ``shots`` of the target's own correct greedy answers
   to other problems in the context;
2. fine-tune a copy of the target on ``finetune_n`` problems over larger numbers in that style (the
   same number of steps for all), then measure greedy-decoding accuracy on held-out problems.

The Spearman correlation over strategies of each score with the fine-tuned accuracy says which score
predicts the result better (the paper: alignment and self-aligned perplexity beat perplexity).

    linearlab run response-selection [--smoke]
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.response_selection import (
    own_responses,
    response_nll,
    select_response_method,
    spearman,
)
from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.addition_styles import STRATEGIES, encode, parse_answer, problems, prompt, response
from linearlab.train import TrainConfig, train

NAME = "response-selection"
SEQ = 32  # longest prompt + response in bytes, padded
STOP = ord(";")


@dataclass
class Config:
    """``linearlab run response-selection``; override with ``--set name=value``."""

    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    d_model: int = 64
    n_layers: int = 2
    num_heads: int = 4
    pretrain_steps: int = 800
    pack: int = 6
    pretrain_max: int = 49
    task_max: int = 99
    batch_size: int = 64
    lr: float = 3e-3
    finetune_n: int = 2000
    finetune_steps: int = 150
    finetune_lr: float = 1e-3
    score_n: int = 50
    samples: int = 4
    demo_n: int = 64
    shots: int = 3
    eval_n: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or len(self.strategies) < 3:
            raise ValueError(
                f"strategies: expected at least 3 names from {list(STRATEGIES)}, got {self.strategies}"
            )
        require_at_least_one(
            self,
            "pretrain_steps",
            "pack",
            "finetune_n",
            "finetune_steps",
            "score_n",
            "samples",
            "demo_n",
            "shots",
            "eval_n",
        )
        if not 0 <= self.pretrain_max <= self.task_max <= 999:
            raise ValueError(
                f"pretrain_max, task_max: expected 0 <= pretrain_max <= task_max <= 999, got {self.pretrain_max}, {self.task_max}"
            )


def _smoke() -> Config:
    return Config(strategies=["direct", "restate", "verbose"], d_model=32, pretrain_steps=30, finetune_n=200,
                  finetune_steps=10, score_n=6, samples=2, eval_n=20)  # fmt: skip


def _batch(pairs: list[tuple[int, int]], strategy: str, pack: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded inputs and targets, ``pack`` problems to a row (``[B, SEQ]`` for one, else as long as the
    longest row); only response tokens are scored."""
    rows, scored = [], []
    for k in range(0, len(pairs) - pack + 1, pack):
        row, mask = [], []
        for a, b in pairs[k : k + pack]:
            p, r = encode(prompt(a, b)), encode(response(strategy, a, b))
            row += p + r
            mask += [False] * len(p) + [True] * len(r)
        rows.append(row)
        scored.append(mask)
    width = SEQ + 1 if pack == 1 else max(map(len, rows)) + 1
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    tgt = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, scored)):
        ids[i, : len(row)] = torch.tensor(row)
        tgt[i, : len(row)] = torch.where(torch.tensor(mask), torch.tensor(row), -100)
    return ids[:, :-1], tgt[:, 1:]


def _fit(model: MixerLM, strategy: str, max_value: int, n_pool: int | None, steps: int, lr: float, cfg: Config,
         folder: RunDir, seed: int, pack: int = 1) -> MixerLM:  # fmt: skip
    pool = problems(n_pool, max_value, seed) if n_pool else None

    def batch_fn(step: int):
        if pool is None:
            pairs = problems(cfg.batch_size * pack, max_value, seed * 1_000_003 + step)
        else:
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            pairs = [pool[i] for i in torch.randint(0, len(pool), (cfg.batch_size,), generator=g).tolist()]
        return _batch(pairs, strategy, pack)

    tcfg = TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=lr, warmup_steps=min(50, steps // 10),
                       weight_decay=0.0, checkpoint_every=max(1, steps // 2), log_every=max(1, steps // 10),
                       seed=seed, progress=sys.stderr.isatty())  # fmt: skip
    train(
        model, batch_fn, lambda m, b: (m.loss(*b), {}), tcfg, run_dir=folder, resume=True, desc=f"{strategy}"
    )
    return model.eval()


@torch.no_grad()
def _accuracy(model: MixerLM, pairs: list[tuple[int, int]]) -> float:
    by_len: dict[int, list[tuple[int, int]]] = {}
    for a, b in pairs:
        by_len.setdefault(len(prompt(a, b)), []).append((a, b))
    right = 0
    for length, group in by_len.items():
        ids = torch.tensor([encode(prompt(a, b)) for a, b in group])
        out = model.generate(ids, max_new_tokens=SEQ - length)[:, length:]
        for (a, b), row in zip(group, out.tolist()):
            text = bytes(t for t in row if t < 128).decode("ascii", "replace")
            right += parse_answer(text) == a + b
    return right / len(pairs)


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    longest = SEQ * (max(cfg.pack, cfg.shots + 1) + 1)  # a packed row, or shots + prompt + response
    model = MixerLM(ModelConfig(vocab_size=256, d_model=cfg.d_model, n_layers=cfg.n_layers, mixer="softmax",
                                mixer_kwargs={"num_heads": cfg.num_heads}, max_seq_len=longest))  # fmt: skip
    target = _fit(model, "direct", cfg.pretrain_max, None, cfg.pretrain_steps, cfg.lr, cfg,
                  RunDir.create(NAME, run_dir.path / "pretrain"), cfg.seed, pack=cfg.pack)  # fmt: skip
    eval_pairs = problems(cfg.eval_n, cfg.task_max, seed=10**9 + cfg.seed)
    score_pairs = problems(cfg.score_n, cfg.task_max, seed=2 * 10**9 + cfg.seed)
    shown = _demonstrations(target, cfg, run_dir)
    demos = [(p, r) for p, r in shown["pairs"]]
    rows = {}
    for strategy in cfg.strategies:
        path = run_dir.file(f"strategy_{strategy}.json")
        if path.exists():
            rows[strategy] = json.loads(path.read_text())
            continue
        prompts = [encode(prompt(a, b)) for a, b in score_pairs]
        responses = [encode(response(strategy, a, b)) for a, b in score_pairs]
        sel = select_response_method(target, prompts, {strategy: responses}, samples=cfg.samples,
                                     max_new_tokens=SEQ - max(map(len, prompts)), stop_token=STOP, seed=cfg.seed,
                                     demos=demos, shots=cfg.shots)  # fmt: skip
        tuned = _fit(copy.deepcopy(target), strategy, cfg.task_max, cfg.finetune_n, cfg.finetune_steps,
                     cfg.finetune_lr, cfg, RunDir.create(NAME, run_dir.path / "finetune" / strategy), cfg.seed + 1)  # fmt: skip
        rows[strategy] = {
            **sel["strategies"][strategy],
            "accuracy": _accuracy(tuned, eval_pairs),
            "nll_after": float(response_nll(tuned, prompts, responses).mean()),
        }
        atomic_write_json(path, rows[strategy])
    names = list(rows)
    acc = [rows[n]["accuracy"] for n in names]
    summary = {
        "strategies": rows,
        "target_accuracy_before": _accuracy(target, eval_pairs),
        "spearman_alignment": spearman([rows[n]["alignment"] for n in names], acc),
        "spearman_neg_nll": spearman([-rows[n]["nll"] for n in names], acc),
        "spearman_neg_self_aligned": spearman([-rows[n]["self_aligned_nll"] for n in names], acc),
        "selected_by_alignment": max(names, key=lambda n: rows[n]["alignment"]),
        "selected_by_perplexity": min(names, key=lambda n: rows[n]["nll"]),
        "selected_by_self_aligned": min(names, key=lambda n: rows[n]["self_aligned_nll"]),
        "demonstrations": len(demos),
        "demonstrations_correct": shown["correct"],
        "best_by_accuracy": max(names, key=lambda n: rows[n]["accuracy"]),
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _demonstrations(target: MixerLM, cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    """The target's own correct greedy answers to ``demo_n`` fresh problems (cached in the run).

    A target too little trained to answer any correctly (the smoke preset) shows its greedy answers
    as they are; the summary records which it was.
    """
    path = run_dir.file("demonstrations.json")
    if path.exists():
        return json.loads(path.read_text())
    pairs = problems(cfg.demo_n, cfg.task_max, seed=3 * 10**9 + cfg.seed)
    prompts = [encode(prompt(a, b)) for a, b in pairs]

    def correct(i: int, r: list[int]) -> bool:
        return parse_answer(bytes(t for t in r if t < 128).decode("ascii", "replace")) == sum(pairs[i])

    budget = SEQ - max(map(len, prompts))
    demos = own_responses(target, prompts, budget, STOP, accept=correct)
    out = {"pairs": demos, "correct": bool(demos)}
    if not demos:
        out["pairs"] = own_responses(target, prompts, budget, STOP)
    atomic_write_json(path, out)
    return out


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for ax, key, label in (
        (axes[0], "alignment", "alignment score (v1)"),
        (axes[1], "nll", "NLL per token (log perplexity)"),
        (axes[2], "self_aligned_nll", "self-aligned NLL per token (v2)"),
    ):
        for name, r in s["strategies"].items():
            ax.plot(r[key], r["accuracy"], "o")
            ax.annotate(name, (r[key], r["accuracy"]), fontsize=8)
        ax.set(xlabel=label, ylabel="accuracy after fine-tuning")
    axes[0].set_title(f"Spearman {s['spearman_alignment']:+.2f}")
    axes[1].set_title(f"Spearman(-NLL, acc) {s['spearman_neg_nll']:+.2f}")
    axes[2].set_title(f"Spearman(-self-aligned NLL, acc) {s['spearman_neg_self_aligned']:+.2f}")
    run_dir.save_figure("response_selection.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        [n, r["nll"], r["alignment"], r["self_aligned_nll"], r["accuracy"]]
        for n, r in s["strategies"].items()
    ]
    table = format_table(
        ["strategy", "NLL/token", "alignment", "self-aligned NLL", "acc after fine-tuning"], rows
    )
    verdict = format_table(
        ["measure", "measured", "paper"],
        [
            ["Spearman(alignment, accuracy)", fmt(s["spearman_alignment"], 3), "higher than perplexity's"],
            [
                "Spearman(-self-aligned NLL, accuracy)",
                fmt(s["spearman_neg_self_aligned"], 3),
                "higher than perplexity's",
            ],
            ["Spearman(-NLL, accuracy)", fmt(s["spearman_neg_nll"], 3), "lower"],
            [
                "selected by alignment / self-aligned ppl / perplexity / best",
                f"{s['selected_by_alignment']} / {s['selected_by_self_aligned']} / {s['selected_by_perplexity']} / "
                f"{s['best_by_accuracy']}",
                "the new scores pick near the best",
            ],
        ],
    )
    head = f"response-selection: target accuracy before fine-tuning {s['target_accuracy_before']:.3f}; " + (
        f"{s['demonstrations']} of its own correct answers shown as demonstrations"
        if s["demonstrations_correct"]
        else f"it answered none correctly, so its {s['demonstrations']} greedy answers are shown instead"
    )
    return f"{head}\n{table}\n{verdict}"


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Rank correlations of the two scores with the fine-tuned accuracy, and the picks' accuracies."""
    st = summary["strategies"]
    return {
        "spearman alignment": summary["spearman_alignment"],
        "spearman -NLL": summary["spearman_neg_nll"],
        "spearman -self-aligned NLL": summary["spearman_neg_self_aligned"],
        "acc of alignment pick": st[summary["selected_by_alignment"]]["accuracy"],
        "acc of self-aligned pick": st[summary["selected_by_self_aligned"]]["accuracy"],
        "acc of perplexity pick": st[summary["selected_by_perplexity"]]["accuracy"],
        "best acc": st[summary["best_by_accuracy"]]["accuracy"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="response-strategy selection: alignment and self-aligned perplexity vs perplexity against fine-tuned accuracy",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
