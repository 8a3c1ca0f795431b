"""Recipe ``output-signatures``: membership detection from a byte LM's output signatures (Bar-Shalom et al.).

The shared byte-level test-bed LM (:func:`linearlab.lab.testbed.pretrained_lm`) is fine-tuned for a
few epochs on ``n_texts`` windows of its training split ("members", as in data contamination);
as many disjoint windows of the same split are held out ("non-members"). Each text's output
signature (top-k sorted probabilities and the actual token's probability per position) under the
fine-tuned model feeds:

- the gray-box baselines: mean log-probability, Min-K% (K = 20%), mean entropy, zlib ratio;
- LOS-Net (a 2-layer transformer encoder over the signature), scored out of fold (``folds``-fold
  cross-validation).

All are compared by AUROC for "member".

    linearlab run output-signatures [--smoke]
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from typing import Any

import torch

from linearlab.analysis.output_signatures import auroc, output_signature, train_los_net, zlib_ratio
from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import format_table
from linearlab.lab.testbed import TestbedConfig, pretrained_lm
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

NAME = "output-signatures"


@dataclass
class Config:
    """``linearlab run output-signatures``; override with ``--set name=value``."""

    d_model: int = 128
    n_layers: int = 4
    lm_steps: int = 600
    lm_seq_len: int = 256
    lm_batch_size: int = 16
    max_bytes: int = 8_000_000
    n_texts: int = 256
    text_len: int = 128
    finetune_epochs: int = 2
    finetune_lr: float = 3e-4
    finetune_batch: int = 16
    top_k: int = 32
    folds: int = 5
    los_steps: int = 300
    los_d_model: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "n_texts", "text_len", "finetune_epochs", "finetune_batch", "top_k", "los_steps"
        )
        if not 2 <= self.folds <= self.n_texts:
            raise ValueError(f"folds: expected 2 <= folds <= n_texts={self.n_texts}, got {self.folds}")


def _smoke() -> Config:
    return Config(d_model=32, n_layers=2, lm_steps=5, lm_seq_len=64, lm_batch_size=4, max_bytes=300_000,
                  n_texts=32, text_len=48, finetune_epochs=1, top_k=8, folds=2, los_steps=20, los_d_model=16)  # fmt: skip


def _texts(train_tokens: torch.Tensor, cfg: Config) -> tuple[torch.Tensor, torch.Tensor]:
    """``2 n_texts`` disjoint windows of the training split: members first, then non-members."""
    chunks = train_tokens.numel() // cfg.text_len
    if chunks < 2 * cfg.n_texts:
        raise ValueError(
            f"n_texts: the training split holds {chunks} windows of {cfg.text_len} tokens, fewer than 2 x {cfg.n_texts}"
        )
    pick = torch.randperm(chunks, generator=torch.Generator().manual_seed(cfg.seed))[: 2 * cfg.n_texts]
    rows = torch.stack(
        [train_tokens[i * cfg.text_len : (i + 1) * cfg.text_len] for i in pick.tolist()]
    ).long()
    labels = torch.cat([torch.ones(cfg.n_texts), torch.zeros(cfg.n_texts)]).long()
    return rows, labels


def _finetune(model: torch.nn.Module, members: torch.Tensor, cfg: Config, run_dir: RunDir) -> torch.nn.Module:
    model = copy.deepcopy(model)
    per_epoch = max(1, len(members) // cfg.finetune_batch)

    def batch_fn(step: int) -> torch.Tensor:
        # a fresh permutation each epoch; a pure function of the step, so resuming is exact
        epoch, i = divmod(step, per_epoch)
        perm = torch.randperm(len(members), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        return members[perm[i * cfg.finetune_batch : (i + 1) * cfg.finetune_batch]]

    tcfg = TrainConfig(steps=cfg.finetune_epochs * per_epoch, batch_size=cfg.finetune_batch, lr=cfg.finetune_lr,
                       warmup_steps=0, schedule="constant", weight_decay=0.0, checkpoint_every=per_epoch,
                       log_every=max(1, per_epoch // 4), seed=cfg.seed, progress=sys.stderr.isatty())  # fmt: skip
    train(model, batch_fn, lambda m, x: (m.loss(x[:, :-1], x[:, 1:]), {}), tcfg,
          run_dir=RunDir.create(NAME, run_dir.path / "finetune"), resume=True, desc="fine-tune on members")  # fmt: skip
    return model.eval()


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    path = run_dir.file("scores.json")
    if path.exists():
        scores = json.loads(path.read_text())
    else:
        scores = _scores(cfg, run_dir)
        atomic_write_json(path, scores)
    labels = torch.tensor(scores["labels"])
    table = {name: auroc(torch.tensor(v), labels) for name, v in scores["scores"].items()}
    base = {k: v for k, v in table.items() if k != "LOS-Net"}
    best = max(base, key=base.get)
    summary = {
        "auroc": table,
        "best_baseline": best,
        "los_net_minus_best_baseline": table["LOS-Net"] - base[best],
        "val_bpb": scores["val_bpb"],
        "n_texts": cfg.n_texts,
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _scores(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    bed = pretrained_lm(TestbedConfig(d_model=cfg.d_model, n_layers=cfg.n_layers, steps=cfg.lm_steps,
                                      seq_len=cfg.lm_seq_len, batch_size=cfg.lm_batch_size,
                                      max_bytes=cfg.max_bytes, seed=cfg.seed))  # fmt: skip
    texts, labels = _texts(bed.data.train, cfg)
    model = _finetune(bed.model, texts[labels == 1], cfg, run_dir)
    sig = output_signature(model, texts, top_k=cfg.top_k)
    scores = {
        "mean log-prob": sig.mean_log_prob(),
        "Min-20%": sig.min_k_percent(0.2),
        "-mean entropy": -sig.mean_entropy(),
        "zlib ratio": zlib_ratio(texts, sig),
    }
    feats = sig.features()
    fold_of = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed + 1)) % cfg.folds
    los = torch.zeros(len(labels))
    for f in range(cfg.folds):
        tr, te = fold_of != f, fold_of == f
        net = train_los_net(feats[tr], labels[tr], steps=cfg.los_steps, d_model=cfg.los_d_model, seed=cfg.seed + f,
                            run_dir=RunDir.create(NAME, run_dir.path / "los_net" / f"fold{f}"))  # fmt: skip
        with torch.no_grad():
            los[te] = net(feats[te])
    scores["LOS-Net"] = los
    return {
        "labels": labels.tolist(),
        "scores": {k: v.tolist() for k, v in scores.items()},
        "val_bpb": bed.val_bpb,
    }


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(s["auroc"])
    ax.bar(names, [s["auroc"][n] for n in names], color=["C1" if n == "LOS-Net" else "C0" for n in names])
    ax.axhline(0.5, color="k", ls=":", lw=1)
    ax.set(
        title=f"membership detection AUROC ({s['n_texts']} members vs {s['n_texts']} held out)",
        ylim=(0.3, 1.0),
    )
    run_dir.save_figure("output_signatures.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        [name, value, "LOS-Net > baselines" if name == "LOS-Net" else "baseline"]
        for name, value in s["auroc"].items()
    ]
    return (
        f"output-signatures: membership AUROC on the fine-tuned test-bed LM (pretrained val {s['val_bpb']:.3f} bits/byte)\n"
        + format_table(["detector", "AUROC", "paper"], rows)
        + f"\nLOS-Net - best baseline ({s['best_baseline']}): {s['los_net_minus_best_baseline']:+.3f}"
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """AUROC of every detector and LOS-Net's margin over the best baseline."""
    return {
        **{f"AUROC {k}": v for k, v in summary["auroc"].items()},
        "LOS-Net - best baseline": summary["los_net_minus_best_baseline"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="LLM output signatures: LOS-Net vs perplexity / Min-K% / entropy / zlib for membership detection",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
