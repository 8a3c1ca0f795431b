"""Recipe ``response-selection``: pick the response style to fine-tune on, before fine-tuning (Ren et al.).

A small byte-level target model is pretrained on addition problems over small numbers answered in one
style (:mod:`linearlab.tasks.addition_styles`, ``direct``). Each candidate strategy writes equally
correct answers in its own style. For each strategy:

1. score ``score_n`` of its responses with the target: mean NLL per token (perplexity, the baseline)
   and the expected edit-similarity alignment with the target's own sampled answers;
2. fine-tune a copy of the target on ``finetune_n`` problems over larger numbers in that style (the
   same number of steps for all), then measure greedy-decoding accuracy on held-out problems.

The Spearman correlation over strategies of each score with the fine-tuned accuracy says which score
predicts the result better (the paper: alignment beats perplexity).

    linearlab run response-selection [--smoke]
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.response_selection import response_nll, select_response_method, spearman
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
    pretrain_max: int = 49
    task_max: int = 99
    batch_size: int = 64
    lr: float = 3e-3
    finetune_n: int = 2000
    finetune_steps: int = 150
    finetune_lr: float = 1e-3
    score_n: int = 50
    samples: int = 4
    eval_n: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or len(self.strategies) < 3:
            raise ValueError(
                f"strategies: expected at least 3 names from {list(STRATEGIES)}, got {self.strategies}"
            )
        for name in ("pretrain_steps", "finetune_n", "finetune_steps", "score_n", "samples", "eval_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pretrain_max <= self.task_max <= 999:
            raise ValueError(
                f"pretrain_max, task_max: expected 0 <= pretrain_max <= task_max <= 999, got {self.pretrain_max}, {self.task_max}"
            )


def _smoke() -> Config:
    return Config(strategies=["direct", "restate", "verbose"], d_model=32, pretrain_steps=30, finetune_n=200,
                  finetune_steps=10, score_n=6, samples=2, eval_n=20)  # fmt: skip


def _batch(pairs: list[tuple[int, int]], strategy: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ``[B, SEQ]`` inputs and targets; only response tokens are scored."""
    ids = torch.zeros(len(pairs), SEQ + 1, dtype=torch.long)
    tgt = torch.full((len(pairs), SEQ + 1), -100, dtype=torch.long)
    for i, (a, b) in enumerate(pairs):
        p, r = encode(prompt(a, b)), encode(response(strategy, a, b))
        row = p + r
        ids[i, : len(row)] = torch.tensor(row)
        tgt[i, len(p) : len(row)] = torch.tensor(r)
    return ids[:, :-1], tgt[:, 1:]


def _fit(model: MixerLM, strategy: str, max_value: int, n_pool: int | None, steps: int, lr: float, cfg: Config,
         folder: RunDir, seed: int) -> MixerLM:  # fmt: skip
    pool = problems(n_pool, max_value, seed) if n_pool else None

    def batch_fn(step: int):
        if pool is None:
            pairs = problems(cfg.batch_size, max_value, seed * 1_000_003 + step)
        else:
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            pairs = [pool[i] for i in torch.randint(0, len(pool), (cfg.batch_size,), generator=g).tolist()]
        return _batch(pairs, strategy)

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
    model = MixerLM(ModelConfig(vocab_size=256, d_model=cfg.d_model, n_layers=cfg.n_layers, mixer="softmax",
                                mixer_kwargs={"num_heads": cfg.num_heads}, max_seq_len=SEQ + 16))  # fmt: skip
    target = _fit(model, "direct", cfg.pretrain_max, None, cfg.pretrain_steps, cfg.lr, cfg,
                  RunDir.create(NAME, run_dir.path / "pretrain"), cfg.seed)  # fmt: skip
    eval_pairs = problems(cfg.eval_n, cfg.task_max, seed=10**9 + cfg.seed)
    score_pairs = problems(cfg.score_n, cfg.task_max, seed=2 * 10**9 + cfg.seed)
    rows = {}
    for strategy in cfg.strategies:
        path = run_dir.file(f"strategy_{strategy}.json")
        if path.exists():
            rows[strategy] = json.loads(path.read_text())
            continue
        prompts = [encode(prompt(a, b)) for a, b in score_pairs]
        responses = [encode(response(strategy, a, b)) for a, b in score_pairs]
        sel = select_response_method(target, prompts, {strategy: responses}, samples=cfg.samples,
                                     max_new_tokens=SEQ - max(map(len, prompts)), stop_token=STOP, seed=cfg.seed)  # fmt: skip
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
        "selected_by_alignment": max(names, key=lambda n: rows[n]["alignment"]),
        "selected_by_perplexity": min(names, key=lambda n: rows[n]["nll"]),
        "best_by_accuracy": max(names, key=lambda n: rows[n]["accuracy"]),
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "alignment", "alignment score"),
        (axes[1], "nll", "NLL per token (log perplexity)"),
    ):
        for name, r in s["strategies"].items():
            ax.plot(r[key], r["accuracy"], "o")
            ax.annotate(name, (r[key], r["accuracy"]), fontsize=8)
        ax.set(xlabel=label, ylabel="accuracy after fine-tuning")
    axes[0].set_title(f"Spearman {s['spearman_alignment']:+.2f}")
    axes[1].set_title(f"Spearman(-NLL, acc) {s['spearman_neg_nll']:+.2f}")
    run_dir.save_figure("response_selection.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [[n, r["nll"], r["alignment"], r["accuracy"]] for n, r in s["strategies"].items()]
    table = format_table(["strategy", "NLL/token", "alignment", "acc after fine-tuning"], rows)
    verdict = format_table(
        ["measure", "measured", "paper"],
        [
            ["Spearman(alignment, accuracy)", fmt(s["spearman_alignment"], 3), "higher than perplexity's"],
            ["Spearman(-NLL, accuracy)", fmt(s["spearman_neg_nll"], 3), "lower"],
            [
                "selected by alignment / by perplexity / best",
                f"{s['selected_by_alignment']} / {s['selected_by_perplexity']} / {s['best_by_accuracy']}",
                "alignment picks near the best",
            ],
        ],
    )
    return f"response-selection: target accuracy before fine-tuning {s['target_accuracy_before']:.3f}\n{table}\n{verdict}"


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Rank correlations of the two scores with the fine-tuned accuracy, and the picks' accuracies."""
    st = summary["strategies"]
    return {
        "spearman alignment": summary["spearman_alignment"],
        "spearman -NLL": summary["spearman_neg_nll"],
        "acc of alignment pick": st[summary["selected_by_alignment"]]["accuracy"],
        "acc of perplexity pick": st[summary["selected_by_perplexity"]]["accuracy"],
        "best acc": st[summary["best_by_accuracy"]]["accuracy"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="response-strategy selection: alignment score vs perplexity against fine-tuned accuracy (synthetic)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
