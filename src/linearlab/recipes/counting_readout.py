"""Recipe ``counting-readout``: the model knows the count, its digit rows cannot read it (Garcia).

A small softmax transformer is trained on :mod:`linearlab.tasks.counting` (two lists of equal
length; predicting where the second one ends needs the count of the first), a task whose text never
contains a digit. At the separator, where the count of the first list is complete:

1. ridge-probe R^2 of the count from the residual stream after each layer;
2. ``|cos|`` between each layer's probe direction and the digit tokens' unembedding rows (final
   norm's gain folded in), against the random-direction baseline ``sqrt(2 / (pi d))``;
3. constrained accuracy (argmax over the 9 digit logits == the count) before and after refitting
   only those 9 rows by cross-entropy on the frozen final hidden states (held-out split).

    linearlab run counting-readout [--smoke]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

import torch

from linearlab.analysis.hooks import model_parts, run_with_cache
from linearlab.analysis.readout_geometry import constrained_accuracy, readout_geometry, refit_rows
from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.counting import DIGITS, VOCAB_SIZE, counting_batch, end_accuracy, seq_len
from linearlab.train import TrainConfig, train

NAME = "counting-readout"


@dataclass
class Config:
    """``linearlab run counting-readout``; override with ``--set name=value``."""

    d_model: int = 128
    n_layers: int = 4
    num_heads: int = 4
    steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    probe_sequences: int = 3000
    probe_lam: float = 1e-3
    refit_steps: int = 300
    refit_lr: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(self, "d_model", "n_layers", "num_heads", "steps", "batch_size", "refit_steps")
        if self.probe_sequences < 50:
            raise ValueError(f"probe_sequences: expected >= 50 (an 80/20 split), got {self.probe_sequences}")


def _smoke() -> Config:
    return Config(d_model=32, n_layers=2, steps=40, batch_size=32, probe_sequences=400, refit_steps=50)


def _train(cfg: Config, run_dir: RunDir) -> MixerLM:
    torch.manual_seed(cfg.seed)
    model = MixerLM(
        ModelConfig(
            vocab_size=VOCAB_SIZE,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            mixer="softmax",
            mixer_kwargs={"num_heads": cfg.num_heads},
            max_seq_len=seq_len(),
        )
    )

    def batch_fn(step: int):
        b = counting_batch(cfg.batch_size, cfg.seed * 1_000_003 + step)
        return b.tokens, b.targets

    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(100, cfg.steps // 10),
        checkpoint_every=max(1, cfg.steps // 4),
        log_every=max(1, cfg.steps // 20),
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )
    folder = RunDir.create(NAME, run_dir.path / "train")
    train(
        model, batch_fn, lambda m, b: (m.loss(*b), {}), tcfg, run_dir=folder, resume=True, desc="counting LM"
    )
    return model.eval()


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    model = _train(cfg, run_dir)
    path = run_dir.file("analysis.json")
    if path.exists():
        result = json.loads(path.read_text())
    else:
        result = _analyse(cfg, model, run_dir)
        atomic_write_json(path, result)
    summary = {**result, "d_model": cfg.d_model}
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _analyse(cfg: Config, model: MixerLM, run_dir: RunDir) -> dict[str, Any]:
    batch = counting_batch(cfg.probe_sequences, seed=2 * 10**9 + cfg.seed)
    names = (
        ["hook_embed"]
        + [f"blocks.{i}.hook_resid_post" for i in range(cfg.n_layers)]
        + ["ln_final.hook_normalized"]
    )
    with torch.no_grad():
        out, cache = run_with_cache(model, batch.tokens, names=names)
    rows_at = torch.arange(len(batch.counts))
    at_sep = {n: cache[n][rows_at, batch.sep_pos].double() for n in names}
    parts = model_parts(model)
    gain = parts.final_norm.weight.detach().double()
    digit_rows = parts.unembed.detach().double()[list(DIGITS)]
    effective = digit_rows * gain  # logits = (x / rms) . (gain * row)
    hidden = [at_sep[n] for n in names[:-1]]
    geo = readout_geometry(hidden, batch.counts.double(), effective, lam=cfg.probe_lam, seed=cfg.seed)
    # constrained readout at the final normed hidden state, on an 80/20 split
    h = at_sep["ln_final.hook_normalized"]
    labels = batch.counts - 1
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))
    cut = int(0.8 * len(labels))
    tr, te = perm[:cut], perm[cut:]
    before = constrained_accuracy(h[te], digit_rows, labels[te])
    new_rows = refit_rows(
        h[tr], labels[tr], digit_rows, steps=cfg.refit_steps, lr=cfg.refit_lr, seed=cfg.seed,
        run_dir=RunDir.create(NAME, run_dir.path / "refit"),
    )  # fmt: skip
    after = constrained_accuracy(h[te], new_rows, labels[te])
    return {
        "end_accuracy": end_accuracy(out.logits, batch),
        "layers": ["embed"] + [f"block {i}" for i in range(cfg.n_layers)],
        "probe_r2": geo.r2,
        "abs_cos_max": [float(c.max()) for c in geo.abs_cos],
        "abs_cos_mean": [float(c.mean()) for c in geo.abs_cos],
        "random_baseline": geo.random_baseline,
        "constrained_acc_before": before,
        "constrained_acc_after": after,
        "chance": 1 / len(DIGITS),
        "rows_refit": len(DIGITS) * cfg.d_model,
    }


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    x = range(len(s["layers"]))
    axes[0].plot(x, s["probe_r2"], "o-")
    axes[0].set_xticks(list(x), s["layers"])
    axes[0].set(title="count probe R^2 at the separator", ylim=(min(0, *s["probe_r2"]), 1.02))
    axes[1].plot(x, s["abs_cos_max"], "o-", label="max over digits")
    axes[1].plot(x, s["abs_cos_mean"], "s-", label="mean over digits")
    axes[1].axhline(s["random_baseline"], color="k", ls=":", label="random directions")
    axes[1].set_xticks(list(x), s["layers"])
    axes[1].set(title="|cos(probe direction, digit row)|")
    axes[1].legend(fontsize=8)
    axes[2].bar(["before", "after refit"], [s["constrained_acc_before"], s["constrained_acc_after"]])
    axes[2].axhline(s["chance"], color="k", ls=":", label="chance")
    axes[2].set(title="constrained digit accuracy (held out)", ylim=(0, 1.02))
    axes[2].legend(fontsize=8)
    run_dir.save_figure("counting_readout.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        [f"probe R^2, {name}", fmt(r2, 4), "> 0.99 from layer 2"]
        for name, r2 in zip(s["layers"], s["probe_r2"])
    ]
    rows += [
        ["|cos| probe vs digit rows, last layer, max", fmt(s["abs_cos_max"][-1], 3), "<= 0.032 (d >= 2048)"],
        ["  mean over digits", fmt(s["abs_cos_mean"][-1], 3), ""],
        [
            f"  random baseline sqrt(2/(pi d)), d={s['d_model']}",
            fmt(s["random_baseline"], 3),
            "~0.018 at d=2048",
        ],
        ["constrained accuracy before", fmt(s["constrained_acc_before"], 3), "near chance"],
        [
            f"constrained accuracy after refitting {s['rows_refit']} row weights",
            fmt(s["constrained_acc_after"], 3),
            "60.7-100%",
        ],
        ["chance", fmt(s["chance"], 3), ""],
    ]
    return f"counting-readout: END-token accuracy {s['end_accuracy']:.3f}\n" + format_table(
        ["measure", "measured", "paper"], rows
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Last-layer probe R^2 and |cos|, the random baseline, constrained accuracy before/after."""
    return {
        "probe R2 last layer": summary["probe_r2"][-1],
        "max |cos| last layer": summary["abs_cos_max"][-1],
        "random |cos|": summary["random_baseline"],
        "constrained acc before": summary["constrained_acc_before"],
        "constrained acc after": summary["constrained_acc_after"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="counting readout bottleneck: count probe R^2, |cos| with digit rows, 9-row head repair",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
