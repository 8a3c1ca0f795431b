"""Recipe ``lmc-landscape``: when are children of one parent linearly connected, and does curvature say so?

Singh et al. (2024), "Landscaping Linear Mode Connectivity". An MLP is trained on ``sklearn``'s
digits with plain SGD at a constant step (through ``linearlab.train.train``). At each spawn step
``k`` two children copy the parent and train on, with different data orders, for ``child_steps``
(the step decayed to 1 % by a cosine, so they end near a minimum).
For each ``k``, on the straight line between the two children (21 points):

- the measured barrier of the training loss (maximum and at the midpoint) and of the test error;
- the quadratic prediction ``-1/8 delta^T H delta`` with ``H`` at the midpoint (Hessian-vector
  products through :func:`torch.func`), ``delta`` the difference of the children;
- the same per layer, moving only that layer's block (the others stay at child A's).

Expected (the paper): barriers vanish for late spawns; predicted and measured barriers agree
(Spearman rank correlation across spawn steps and layers).

    linearlab run lmc-landscape [--smoke] [--set spawn_steps=0,10,50,200,1000]
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.analysis.mode_connectivity import interpolation_barrier, layer_blocks, spawn_children
from linearlab.config import require_at_least_one
from linearlab.io import atomic_save_safetensors, atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.papers import ANALYSIS, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.digits import digits_split
from linearlab.tasks.tensor_batches import ShuffledBatches
from linearlab.train import TrainConfig, train

NAME = "lmc-landscape"


@dataclass
class Config:
    """Everything ``linearlab run lmc-landscape`` does; override fields with ``--set name=value``."""

    # narrow layers, a large step and small batches: wide nets at small steps stay in a near-convex
    # (lazy) basin where even children spawned at step 0 are linearly connected
    hidden: list[int] = field(default_factory=lambda: [16, 16])
    spawn_steps: list[int] = field(default_factory=lambda: [0, 10, 50, 200, 1000])
    child_steps: int = 3000
    batch_size: int = 8
    lr: float = 0.3
    alphas: int = 21
    test_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive layer widths, got {self.hidden}")
        if (
            not self.spawn_steps
            or any(k < 0 for k in self.spawn_steps)
            or len(set(self.spawn_steps)) != len(self.spawn_steps)
        ):
            raise ValueError(f"spawn_steps: expected distinct steps >= 0, got {self.spawn_steps}")
        require_at_least_one(self, "child_steps", "batch_size")
        if self.alphas < 3 or self.alphas % 2 == 0:
            raise ValueError(f"alphas: expected an odd count >= 3 (so 1/2 is a point), got {self.alphas}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


def _smoke() -> Config:
    return Config(spawn_steps=[0, 300], child_steps=300, alphas=5)


def mlp(sizes: list[int], seed: int) -> nn.Sequential:
    """``Linear - ReLU - ... - Linear`` with ``sizes = [in, hidden..., out]``."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    return F.cross_entropy(model(x), y), {}


def _sgd(steps: int, cfg: Config, decay: bool) -> TrainConfig:
    # the parent: plain SGD at a constant step, so a child spawned at k starts from the parent's
    # dynamics; the children decay the step (cosine to 1 %) so both end near a minimum rather
    # than at a noisy iterate of a large-step, small-batch run
    return TrainConfig(
        steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, optimizer="sgd", momentum=0.0, weight_decay=0.0,
        schedule="cosine" if decay else "constant", min_lr_ratio=0.01, warmup_steps=0, grad_clip=0.0,
        log_every=100, checkpoint_every=500, seed=cfg.seed, progress=sys.stderr.isatty(),
    )  # fmt: skip


def _parent_snapshots(cfg: Config, run_dir: RunDir, data: tuple) -> dict[int, dict[str, torch.Tensor]]:
    """The parent's state at every spawn step, saved as ``parent/step<k>.safetensors``."""
    from safetensors.torch import load_file

    xtr, ytr = data[0], data[1]
    folder = RunDir.create(NAME, run_dir.path / "parent")
    paths = {k: folder.file(f"step{k}.safetensors") for k in cfg.spawn_steps}
    parent = mlp([64, *cfg.hidden, 10], cfg.seed)
    if not all(p.exists() for p in paths.values()):
        if 0 in paths:
            atomic_save_safetensors(paths[0], parent.state_dict())

        def snapshot(done: int, model: nn.Module) -> None:
            if done in paths:
                atomic_save_safetensors(
                    paths[done], {k: v.detach().clone() for k, v in model.state_dict().items()}
                )

        last = max(cfg.spawn_steps)
        if last > 0:
            train(parent, ShuffledBatches(xtr, ytr, cfg.batch_size, cfg.seed), _ce, _sgd(last, cfg, decay=False), run_dir=folder,
                  resume=True, on_step=snapshot, desc="parent")  # fmt: skip
    return {k: load_file(str(p)) for k, p in paths.items()}


def _one_spawn(cfg: Config, k: int, state: dict, run_dir: RunDir, data: tuple) -> dict[str, Any]:
    xtr, ytr, xte, yte = data
    folder = RunDir.create(NAME, run_dir.path / f"spawn{k}")
    done = folder.file("barrier.json")
    if done.exists():
        return json.loads(done.read_text())
    parent = mlp([64, *cfg.hidden, 10], cfg.seed)
    parent.load_state_dict(state)
    orders = [ShuffledBatches(xtr, ytr, cfg.batch_size, cfg.seed + 1000 * (i + 1) + k) for i in range(2)]
    dirs = [RunDir.create(NAME, folder.path / f"child{i}") for i in range(2)]
    a, b = spawn_children(
        parent, orders, _ce, _sgd(cfg.child_steps, cfg, decay=True), run_dirs=dirs, desc=f"child k={k}"
    )

    def train_loss(m: nn.Module) -> torch.Tensor:
        return F.cross_entropy(m(xtr), ytr)

    def test_error(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(xte).argmax(1) != yte).float().mean())

    alphas = torch.linspace(0, 1, cfg.alphas, dtype=torch.float64).tolist()
    res = interpolation_barrier(a, b, train_loss, alphas, layers=layer_blocks(a), metric_fn=test_error)
    out = {"k": k, **{key: v for key, v in asdict(res).items() if key != "layers"}}
    out["layers"] = {name: asdict(scan) for name, scan in res.layers.items()}
    out["distance"] = float(
        sum(((pa - pb) ** 2).sum() for pa, pb in zip(a.parameters(), b.parameters())).sqrt().detach()
    )
    atomic_write_json(done, out)
    return out


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    from scipy.stats import spearmanr

    torch.set_num_threads(1)  # a small MLP: extra threads only spin on a shared machine
    data = digits_split(cfg.test_fraction, cfg.seed)
    snaps = _parent_snapshots(cfg, run_dir, data)
    rows = [_one_spawn(cfg, k, snaps[k], run_dir, data) for k in sorted(cfg.spawn_steps)]
    whole_m = [r["midpoint_barrier"] for r in rows]
    whole_p = [r["predicted_midpoint"] for r in rows]
    all_m = whole_m + [s["midpoint_barrier"] for r in rows for s in r["layers"].values()]
    all_p = whole_p + [s["predicted_midpoint"] for r in rows for s in r["layers"].values()]

    def rho(x: list[float], y: list[float]) -> float:
        return float(spearmanr(x, y).statistic) if len(x) > 2 else math.nan

    summary: dict[str, Any] = {
        "spawns": [
            {
                "k": r["k"],
                "max_barrier": r["max_barrier"],
                "midpoint_barrier": r["midpoint_barrier"],
                "predicted_midpoint": r["predicted_midpoint"],
                "max_error_barrier": r["max_error_barrier"],
                "endpoint_losses": [r["losses"][0], r["losses"][-1]],
                "endpoint_errors": [r["errors"][0], r["errors"][-1]],
                "distance": r["distance"],
                "layers": {
                    n: {
                        key: s[key]
                        for key in (
                            "max_barrier",
                            "midpoint_barrier",
                            "predicted_midpoint",
                            "max_error_barrier",
                        )
                    }  # fmt: skip
                    for n, s in r["layers"].items()
                },
            }
            for r in rows
        ],
        "spearman_whole": rho(whole_m, whole_p),
        "spearman_all": rho(all_m, all_p),
        "barrier_first_over_last": rows[0]["max_barrier"] / rows[-1]["max_barrier"]
        if rows[-1]["max_barrier"] > 0
        else math.inf,
    }
    _plot(run_dir, rows)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in rows:
        axes[0].plot(r["alphas"], r["losses"], "-o", ms=3, label=f"k={r['k']}")
    axes[0].set(title="train loss between the two children", xlabel="alpha", ylabel="loss")
    axes[0].legend(fontsize=7)
    markers = {"whole": "o"}
    for r in rows:
        axes[1].scatter(r["predicted_midpoint"], r["midpoint_barrier"], marker="o", c="k", s=20)
        for i, (n, s) in enumerate(r["layers"].items()):
            m = markers.setdefault(n, "s^vD<>"[i % 6])
            axes[1].scatter(s["predicted_midpoint"], s["midpoint_barrier"], marker=m, s=16, c=f"C{i}")
    lim = [
        min(axes[1].get_xlim()[0], axes[1].get_ylim()[0]),
        max(axes[1].get_xlim()[1], axes[1].get_ylim()[1]),
    ]
    axes[1].plot(lim, lim, "k:", lw=1)
    axes[1].set(title="midpoint barrier: measured vs -1/8 d^T H d (o: whole, others: layers)",
                xlabel="predicted", ylabel="measured")  # fmt: skip
    axes[1].title.set_fontsize(8)
    ks = [max(r["k"], 0.5) for r in rows]
    axes[2].plot(ks, [r["max_barrier"] for r in rows], "k-o", label="whole (loss)")
    for n in rows[0]["layers"]:
        axes[2].plot(ks, [r["layers"][n]["max_barrier"] for r in rows], "--o", ms=3, label=f"layer {n}")
    axes[2].plot(ks, [r["max_error_barrier"] for r in rows], "r-s", label="whole (test error)")
    axes[2].set(xscale="log", title="max barrier vs spawn step k (k=0 at 0.5)", xlabel="k")
    axes[2].legend(fontsize=7)
    run_dir.save_figure("lmc_landscape.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    layer_names = list(s["spawns"][0]["layers"])
    rows = []
    for r in s["spawns"]:
        rows.append(
            [r["k"], fmt(r["max_barrier"], 3), fmt(r["midpoint_barrier"], 3), fmt(r["predicted_midpoint"], 3),
             fmt(r["max_error_barrier"], 3)]
            + [f"{fmt(r['layers'][n]['midpoint_barrier'], 2)} / {fmt(r['layers'][n]['predicted_midpoint'], 2)}"
               for n in layer_names]
        )  # fmt: skip
    head = ["k", "max B (loss)", "B(1/2)", "-dHd/8", "max B (err)"] + [
        f"layer {n}: B(1/2)/pred" for n in layer_names
    ]
    lines = [
        "lmc-landscape: MLP on sklearn digits; barrier between two children spawned at step k",
        format_table(head, rows),
        format_table(
            ["quantity", "measured", "paper"],
            [
                [
                    "Spearman(B(1/2), -dHd/8), whole model over k",
                    fmt(s["spearman_whole"], 3),
                    "high (correlate)",
                ],
                ["Spearman, whole + layer-wise", fmt(s["spearman_all"], 3), "high (correlate)"],
                [
                    f"max barrier k={s['spawns'][0]['k']} -> k={s['spawns'][-1]['k']}",
                    f"{fmt(s['spawns'][0]['max_barrier'], 3)} -> {fmt(s['spawns'][-1]['max_barrier'], 3)}",
                    "> 0 -> ~0 (vanish late)",
                ],  # fmt: skip
            ],
        ),
    ]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The barrier of the earliest and latest spawn, and the rank correlations with the prediction."""
    first, last = summary["spawns"][0], summary["spawns"][-1]
    return {
        f"max barrier k={first['k']}": first["max_barrier"],
        f"max barrier k={last['k']}": last["max_barrier"],
        "spearman whole": summary["spearman_whole"],
        "spearman whole+layers": summary["spearman_all"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="children spawned at step k: loss barriers whole-model and per layer vs -1/8 d^T H d (Singh et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)


declare_paper(
    arxiv="2406.16300",
    short="Landscaping LMC",
    title="Landscaping Linear Mode Connectivity",
    authors="Singh, Adilova, Kamp, Fischer, Schölkopf, Hofmann",
    venue="ICML 2024 HiLD workshop",
    area=ANALYSIS,
    status="implemented",
    objects=(
        "linearlab.analysis.mode_connectivity.interpolation_barrier",
        "linearlab.analysis.mode_connectivity.quadratic_form",
        "linearlab.analysis.mode_connectivity.spawn_children",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.analysis.mode_connectivity import interpolation_barrier\n"
        "res = interpolation_barrier(torch.nn.Linear(64, 2), torch.nn.Linear(64, 2), lambda m: m(x).pow(2).mean())"
    ),
    claim=(
        "A mountainside-and-ridge model of the loss landscape explains when children of a common parent "
        "are linearly connected: early spawns cross a ridge (a barrier, negative curvature along the "
        "line), late spawns descend one mountainside; it predicts layer-wise connectivity (abstract)."
    ),
)
