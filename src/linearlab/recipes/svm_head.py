"""Recipe ``svm-head``: a GRU classifier with a softmax + cross-entropy head vs an L2-SVM head.

Agarap (arXiv 1709.03082) replaces the softmax output layer of a GRU by a linear SVM trained with
the squared hinge loss (:class:`~linearlab.layers.heads.svm.SVMHead`) and reports higher accuracy and
faster training on the Kyoto 2013 intrusion data. That data set is not available offline; this
recipe uses scikit-learn's bundled handwritten digits (1797 8x8 images, 10 classes), each read as a
sequence of 8 rows of 8 pixels, so the GRU sees a length-8 sequence.

Two comparisons, each over ``seeds`` seeds, training through :func:`linearlab.train.train`:

1. *paper settings*: Adam at lr 1e-5, batch 256, 10 epochs, the SVM loss summed over the batch
   with ``C = 0.5`` (the paper's), cross-entropy averaged;
2. *tuned*: each head's Adam learning rate chosen from ``lrs`` by validation accuracy (a fifth of
   the training split), then test accuracy at that rate. The SVM objective is the paper's divided by
   the batch size (same minimiser, step sizes comparable with cross-entropy).

Reported: test accuracy (mean and std over seeds), training seconds per run and the test-set
inference time. Each run's result is one line of ``runs.jsonl``, so ``--resume`` skips finished runs.

    linearlab run svm-head [--smoke] [--set lrs=0.001,0.003,0.01 --set seeds=3]
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt, format_table
from linearlab.layers.heads.svm import SVMHead
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train.loop import TrainConfig, train

NAME = "svm-head"
HEADS = ("softmax", "svm")


@dataclass
class Config:
    """``linearlab run svm-head``; override with ``--set name=value``."""

    hidden: int = 128
    epochs: int = 30
    batch_size: int = 64
    lrs: list[float] = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])
    seeds: int = 3
    C: float = 0.5
    paper_lr: float = 1e-5
    paper_epochs: int = 10
    paper_batch_size: int = 256
    test_fraction: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "hidden", "epochs", "batch_size", "seeds", "paper_epochs", "paper_batch_size"
        )
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs: expected positive learning rates, got {self.lrs}")
        if not self.C > 0 or not self.paper_lr > 0:
            raise ValueError(f"C and paper_lr: must be > 0, got C={self.C}, paper_lr={self.paper_lr}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: expected a fraction in (0, 1), got {self.test_fraction}")


def _smoke() -> Config:
    return Config(hidden=32, epochs=3, lrs=[3e-3], seeds=1, paper_epochs=2)


class GRUClassifier(nn.Module):
    """GRU over ``x: [B, T, F]``, its last hidden state to a head: ``[B, C]`` scores."""

    def __init__(self, n_features: int, hidden: int, n_classes: int, head: str) -> None:
        super().__init__()
        self.gru = nn.GRU(n_features, hidden, batch_first=True)
        self.head = SVMHead(hidden, n_classes) if head == "svm" else nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.head(h[-1])


def digits_sequences(test_fraction: float, seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's digits as ``[N, 8, 8]`` row sequences in [0, 1]: train / val / test splits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    n_val = (len(y) - n_test) // 5
    test, val, tr = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return {
        "train": (x[tr], y[tr]),
        "val": (x[val], y[val]),
        "test": (x[test], y[test]),
        "train+val": (x[perm[n_test:]], y[perm[n_test:]]),
    }


def _epoch_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int):
    """``step -> batch``: a fresh permutation per epoch (a pure function of the step)."""
    n = len(y)
    per_epoch = max(1, -(-n // batch_size))

    def batch_fn(step: int):
        epoch, i = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        idx = perm[i * batch_size : (i + 1) * batch_size]
        return x[idx], y[idx]

    return batch_fn, per_epoch


def train_one(
    head: str, data: dict, split: str, lr: float, epochs: int, batch_size: int, C: float, summed: bool,
    hidden: int, seed: int,
) -> dict[str, Any]:  # fmt: skip
    """Train one GRU classifier on ``data[split]``; accuracy on val and test, seconds."""
    torch.manual_seed(seed)
    x, y = data[split]
    model = GRUClassifier(x.shape[-1], hidden, 10, head)
    batch_fn, per_epoch = _epoch_batches(x, y, batch_size, seed)

    def loss_fn(m: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        bx, by = batch
        scores = m(bx)
        if head == "softmax":
            return F.cross_entropy(scores, by), {}
        loss = m.head.loss(scores, by, C=C, reduction="sum")
        return (loss if summed else loss / len(by)), {}

    cfg = TrainConfig(
        steps=epochs * per_epoch, batch_size=batch_size, lr=lr, weight_decay=0.0, betas=(0.9, 0.999),
        warmup_steps=0, schedule="constant", grad_clip=0.0, log_every=0, checkpoint_every=0,
        progress=False, seed=seed,
    )  # fmt: skip
    result = train(model, batch_fn, loss_fn, cfg, desc=f"{head} lr={lr:g}")
    model.eval()
    out = {"train_seconds": result.train_seconds, "final_loss": result.final_loss}
    with torch.no_grad():
        for name in ("val", "test"):
            bx, by = data[name]
            t0 = time.perf_counter()
            pred = model(bx).argmax(-1)
            out[f"{name}_seconds"] = time.perf_counter() - t0
            out[f"{name}_acc"] = float((pred == by).float().mean())
    return out


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(1)
    data = digits_sequences(cfg.test_fraction, cfg.seed)
    done = {r["key"]: r for r in run_dir.read_metrics("runs.jsonl")}

    def job(key: str, **kw) -> dict[str, Any]:
        if key not in done:
            done[key] = {"key": key, **train_one(data=data, hidden=cfg.hidden, C=cfg.C, **kw)}
            run_dir.log_metrics(done[key], "runs.jsonl")
        return done[key]

    summary: dict[str, Any] = {"data": "sklearn digits, 8 rows x 8 pixels", "n_test": len(data["test"][1])}
    paper = {}
    for head in HEADS:
        runs = [
            job(f"paper/{head}/{s}", head=head, split="train+val", lr=cfg.paper_lr, epochs=cfg.paper_epochs,
                batch_size=cfg.paper_batch_size, summed=True, seed=cfg.seed + s)
            for s in range(cfg.seeds)
        ]  # fmt: skip
        paper[head] = _stats(runs)
    summary["paper_settings"] = paper
    tuned = {}
    for head in HEADS:
        by_lr = {}
        for lr in cfg.lrs:
            runs = [
                job(f"val/{head}/{lr:g}/{s}", head=head, split="train", lr=lr, epochs=cfg.epochs,
                    batch_size=cfg.batch_size, summed=False, seed=cfg.seed + s)
                for s in range(cfg.seeds)
            ]  # fmt: skip
            by_lr[lr] = statistics.mean(r["val_acc"] for r in runs)
        best = max(cfg.lrs, key=lambda lr: by_lr[lr])
        runs = [
            job(f"test/{head}/{best:g}/{s}", head=head, split="train+val", lr=best, epochs=cfg.epochs,
                batch_size=cfg.batch_size, summed=False, seed=cfg.seed + s)
            for s in range(cfg.seeds)
        ]  # fmt: skip
        tuned[head] = {"lr": best, "val_acc_by_lr": {f"{k:g}": v for k, v in by_lr.items()}, **_stats(runs)}
    summary["tuned"] = tuned
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _stats(runs: list[dict]) -> dict[str, float]:
    accs = [r["test_acc"] for r in runs]
    return {
        "test_acc": statistics.mean(accs),
        "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "train_seconds": statistics.mean(r["train_seconds"] for r in runs),
        "test_seconds": statistics.mean(r["test_seconds"] for r in runs),
    }


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, head in enumerate(HEADS):
        for j, arm in enumerate(("paper_settings", "tuned")):
            r = s[arm][head]
            axes[0].bar(i * 3 + j, r["test_acc"], yerr=r["test_acc_std"], color=f"C{j}",
                        label=arm.replace("_", " ") if i == 0 else None)  # fmt: skip
            axes[1].bar(i * 3 + j, r["train_seconds"], color=f"C{j}")
    for ax, title in zip(axes, ("test accuracy (digits as row sequences)", "training seconds per run")):
        ax.set_xticks([0.5, 3.5], ["GRU-softmax", "GRU-SVM"])
        ax.set_title(title)
    axes[0].legend()
    run_dir.save_figure("svm_head.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = []
    paper_acc = {"softmax": "70.75% (Kyoto test)", "svm": "84.15% (Kyoto test)"}
    for arm in ("paper_settings", "tuned"):
        for head in HEADS:
            r = s[arm][head]
            lr = f" lr={r['lr']:g}" if "lr" in r else ""
            rows.append([
                f"GRU-{head} ({arm.replace('_', ' ')}{lr})",
                f"{100 * r['test_acc']:.2f} +- {100 * r['test_acc_std']:.2f}%",
                fmt(r["train_seconds"], 3), fmt(1000 * r["test_seconds"], 3), paper_acc[head],
            ])  # fmt: skip
    return "\n".join([
        f"svm-head: {s['data']}, {s['n_test']} test sequences; measured vs paper",
        format_table(["model", "test acc", "train s", "test ms", "paper"], rows),
    ])  # fmt: skip


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Test accuracies of both heads in both arms."""
    return {
        f"{arm} {head} test acc": summary[arm][head]["test_acc"]
        for arm in ("paper_settings", "tuned")
        for head in HEADS
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="GRU classifier: softmax + cross-entropy vs L2-SVM head (Agarap), paper settings and tuned",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
