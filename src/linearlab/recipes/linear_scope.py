"""Recipe ``linear-scope``: a small CNN on ``sklearn``'s digits seen through its linear interpreter.

Navarrete Michelini et al. (ICCV 2019): with every ReLU mask and max-pool selection frozen at the
input ``x0``, a classifier is the affine map ``f(x0) = A(x0) x0 + b(x0)``. A conv / batch-norm / ReLU /
max-pool CNN is trained on the 8x8 digits (through ``linearlab.train.train``), then on the test set:

1. the reconstruction error ``max |f(x0) - (A(x0) x0 + b(x0))|`` with ``A`` from the interpreter;
2. the largest difference between ``A(x0)`` and the autograd Jacobian;
3. the bias share ``|b_c(x0)| / (|A_c(x0) x0| + |b_c(x0)|)`` of the predicted class ``c`` (the paper:
   classifiers rely heavily on the bias);
4. the figure: one test digit per class, its class row ``A_c`` as an 8x8 template and the pixel-wise
   votes ``A_c * x0`` that sum (with ``b_c``) to the class score.

    linearlab run linear-scope [--smoke]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.analysis.linear_scope import LinearScope
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt, format_table
from linearlab.papers import ANALYSIS, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.digits import digits_split
from linearlab.tasks.tensor_batches import ShuffledBatches
from linearlab.train import TrainConfig, train

NAME = "linear-scope"


@dataclass
class Config:
    """Everything ``linearlab run linear-scope`` does; override fields with ``--set name=value``."""

    channels: list[int] = field(default_factory=lambda: [8, 16])
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    test_fraction: float = 0.2
    jacobian_samples: int = 64  # test images whose autograd Jacobian is compared with A
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.channels) != 2 or any(c < 1 for c in self.channels):
            raise ValueError(f"channels: expected two positive channel counts, got {self.channels}")
        require_at_least_one(self, "steps", "batch_size", "jacobian_samples")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction: expected a value in (0, 1), got {self.test_fraction}")


def _smoke() -> Config:
    return Config(steps=60, jacobian_samples=8)


def digits_cnn(channels: list[int], seed: int) -> nn.Sequential:
    """conv3x3 - BN - ReLU - maxpool2 - conv3x3 - ReLU - maxpool2 - flatten - linear: ``[B, 1, 8, 8] -> [B, 10]``."""
    torch.manual_seed(seed)
    c1, c2 = channels
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1),
        nn.BatchNorm2d(c1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 4, 10),
    )


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    logits = model(x.reshape(-1, 1, 8, 8))
    return F.cross_entropy(logits, y), {}


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(1)  # a tiny CNN: extra threads only spin on a shared machine
    xtr, ytr, xte, yte = digits_split(cfg.test_fraction, cfg.seed)
    model = digits_cnn(cfg.channels, cfg.seed)
    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_steps=0,
        log_every=50,
        checkpoint_every=500,
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )
    folder = RunDir.create(NAME, run_dir.path / "train")
    train(model, ShuffledBatches(xtr, ytr, cfg.batch_size, cfg.seed), _ce, tcfg, run_dir=folder, resume=True,
          desc="digits cnn")  # fmt: skip
    model.eval()
    x0 = xte.reshape(-1, 1, 8, 8)
    scope = LinearScope(model)
    with torch.no_grad():
        f = model(x0)
    A = scope.matrix(x0)  # [M, 10, 64]
    b = scope.bias(x0)
    lin = torch.einsum("moi,mi->mo", A, xte)
    recon_err = float((f - (lin + b)).abs().max())
    n_jac = min(cfg.jacobian_samples, len(xte))
    jac = torch.stack(
        [
            torch.func.jacrev(lambda x: model(x.unsqueeze(0)).squeeze(0))(x0[i]).reshape(10, 64)
            for i in range(n_jac)
        ]
    ).detach()
    jac_err = float((A[:n_jac] - jac).abs().max())
    pred = f.argmax(1)
    rows = torch.arange(len(pred))
    bc, lc = b[rows, pred], lin[rows, pred]
    share = bc.abs() / (bc.abs() + lc.abs())
    summary: dict[str, Any] = {
        "test_accuracy": float((pred == yte).float().mean()),
        "n_test": len(yte),
        "max_abs_output": float(f.abs().max()),
        "reconstruction_max_abs_err": recon_err,
        "jacobian_max_abs_err": jac_err,
        "jacobian_samples": n_jac,
        "bias_share_mean": float(share.mean()),
        "bias_share_median": float(share.median()),
        "bias_ratio_mean": float((bc.abs() / f[rows, pred].abs()).mean()),
        "bias_dominates_fraction": float((bc.abs() > lc.abs()).float().mean()),
        "bias_positive_fraction": float((bc > 0).float().mean()),
    }
    # one correctly classified test digit per class for the vote figure
    votes = []
    for c in range(10):
        hits = torch.nonzero((pred == c) & (yte == c)).flatten()
        if len(hits):
            i = int(hits[0])
            votes.append({"class": c, "index": i, "b": float(b[i, c]), "Ax": float(lin[i, c])})
    summary["vote_examples"] = votes
    _plot(run_dir, xte, A, votes)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, x: torch.Tensor, A: torch.Tensor, votes: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(votes))
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j, v in enumerate(votes):
        i, c = v["index"], v["class"]
        row = A[i, c]
        lim = float(row.abs().max()) or 1.0
        axes[0, j].imshow(x[i].reshape(8, 8).numpy(), cmap="gray_r")
        axes[0, j].set_title(f"class {c}", fontsize=8)
        axes[1, j].imshow(row.reshape(8, 8).numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        vote = row * x[i]
        vl = float(vote.abs().max()) or 1.0
        axes[2, j].imshow(vote.reshape(8, 8).numpy(), cmap="RdBu_r", vmin=-vl, vmax=vl)
        axes[2, j].set_title(f"Ax={v['Ax']:.1f} b={v['b']:.1f}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input x0", fontsize=8)
    axes[1, 0].set_ylabel("A_c(x0)", fontsize=8)
    axes[2, 0].set_ylabel("votes A_c*x0", fontsize=8)
    fig.suptitle("LinearScope on digits: the predicted class's row of A and its pixel votes", fontsize=9)
    run_dir.save_figure("linear_scope.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        ["test accuracy", fmt(s["test_accuracy"], 4), "-"],
        ["max |f - (A x0 + b)| (fp32)", fmt(s["reconstruction_max_abs_err"], 3), "exact (~1e-6 in fp32)"],
        ["  ... relative to max |f|", fmt(s["reconstruction_max_abs_err"] / s["max_abs_output"], 3), "-"],
        [f"max |A - autograd J| ({s['jacobian_samples']} imgs)", fmt(s["jacobian_max_abs_err"], 3),
         "A is the Jacobian (~1e-6)"],
        ["bias share |b_c|/(|A_c x|+|b_c|), mean", fmt(s["bias_share_mean"], 3), "large (qualitative)"],
        ["bias share, median", fmt(s["bias_share_median"], 3), "-"],
        ["fraction with |b_c| > |A_c x|", fmt(s["bias_dominates_fraction"], 3), "-"],
        ["mean |b_c| / |f_c|", fmt(s["bias_ratio_mean"], 3), "-"],
    ]  # fmt: skip
    head = f"linear-scope: CNN on sklearn digits ({s['n_test']} test images), predicted class c; |f| <= {fmt(s['max_abs_output'], 3)}"
    return head + "\n" + format_table(["quantity", "measured", "paper"], rows)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Exactness of the affine view, and how much of the class score the bias carries."""
    return {
        "reconstruction max abs err": summary["reconstruction_max_abs_err"],
        "jacobian max abs err": summary["jacobian_max_abs_err"],
        "bias share (mean)": summary["bias_share_mean"],
        "test accuracy": summary["test_accuracy"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="a digits CNN as its input-dependent affine map f(x)=A(x)x+b(x): exactness, bias share, votes",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)


declare_paper(
    arxiv="1908.05168",
    short="LinearScope",
    title="A Tour of Convolutional Networks Guided by Linear Interpreters",
    authors="Navarrete Michelini, Liu, Lu, Jiang",
    venue="ICCV 2019",
    area=ANALYSIS,
    status="partial",
    objects=("linearlab.analysis.linear_scope.LinearScope",),
    recipes=(NAME,),
    usage=(
        "from linearlab.analysis.linear_scope import LinearScope\n"
        "A = LinearScope(torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))).matrix(x[:, 0])"
    ),
    claim=(
        "Freezing every non-linearity's decision turns a CNN into an input-dependent affine map "
        "y = A(x) x + b(x), computed alongside the network without storing activations; classifiers "
        "vote pixel-wise per class and rely heavily on the bias (qualitative, abstract)."
    ),
    note=(
        "The classifier part only: ReLU / leaky-ReLU / max-pool / eval batch-norm networks in an "
        "nn.Sequential. Not done: sigmoid gains, instance norm with batch-0 statistics, the "
        "super-resolution / image-to-image and CycleGAN analyses, SVDs of A."
    ),
)
