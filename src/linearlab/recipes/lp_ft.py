"""Recipe ``lp-ft``: fine-tuning (FT), linear probing (LP) and LP-then-FT, seen through the NTK.

Tomihari & Sato (NeurIPS 2024). A small MLP feature extractor ``phi: R^20 -> R^32`` is pretrained on
a synthetic source task (10 classes, ``argmax U x``, isotropic ``x``). The target task has 5
classes, ``argmax R U x``; its in-distribution (ID) inputs under-sample the last ``minor_dims``
directions (scale ``id_minor_scale``), the out-of-distribution (OOD) inputs are isotropic, so the
pretrained features already cover what OOD needs (Kumar et al.'s feature-distortion setting).
Everything trains through ``linearlab.train.train`` with cross-entropy:

- LP: the head only, from a random head; ``||V||_F`` after every step;
- FT: every parameter, from a random head; LP-FT: the same FT from the probed head;
- the NTK at the start of FT on ID inputs: head term and feature term (which scales with ``||V||^2``);
- feature change ``mean ||phi_after - phi_pretrained||`` (ID and OOD inputs), ID / OOD accuracy;
- ECE on ID test data before and after temperature scaling (fitted on an ID validation set).

    linearlab run lp-ft [--smoke]
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from linearlab.analysis.lp_ft import (
    ProbedModel,
    expected_calibration_error,
    feature_change,
    finetune,
    fit_temperature,
    head_norm,
    linear_probe,
    ntk_split,
)
from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.papers import ANALYSIS, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.tensor_batches import ShuffledBatches
from linearlab.train import TrainConfig

NAME = "lp-ft"


@dataclass
class Config:
    """Everything ``linearlab run lp-ft`` does; override fields with ``--set name=value``."""

    d_in: int = 20
    widths: list[int] = field(default_factory=lambda: [64, 32])
    source_classes: int = 10
    target_classes: int = 5
    minor_dims: int = 8
    id_minor_scale: float = 0.1
    n_source: int = 4000
    n_target: int = 500
    n_eval: int = 2000
    pretrain_steps: int = 2000
    lp_steps: int = 1000
    ft_steps: int = 500
    batch_size: int = 64
    pretrain_lr: float = 3e-3
    lp_lr: float = 1e-2
    ft_lr: float = 1e-3
    ntk_points: int = 24
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            "d_in",
            "source_classes",
            "target_classes",
            "n_source",
            "n_target",
            "n_eval",
            "pretrain_steps",
            "lp_steps",
            "ft_steps",
            "batch_size",
            "ntk_points",
        )
        if not 0 <= self.minor_dims < self.d_in:
            raise ValueError(
                f"minor_dims: expected 0 <= minor_dims < d_in={self.d_in}, got {self.minor_dims}"
            )
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths: expected positive hidden widths, got {self.widths}")
        for name in ("id_minor_scale", "pretrain_lr", "lp_lr", "ft_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.batch_size > min(self.n_source, self.n_target):
            raise ValueError(f"batch_size: expected <= n_source and n_target, got {self.batch_size}")


def _smoke() -> Config:
    return Config(
        n_source=1000, n_target=200, n_eval=400, pretrain_steps=150, lp_steps=100, ft_steps=60, ntk_points=6
    )


def _backbone(cfg: Config) -> nn.Sequential:
    layers: list[nn.Module] = []
    sizes = [cfg.d_in, *cfg.widths]
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers)


def make_tasks(cfg: Config) -> dict[str, torch.Tensor]:
    """Source data (isotropic), target train / val / ID test (minor directions scaled down) and OOD test."""
    g = torch.Generator().manual_seed(cfg.seed)
    U = torch.randn(cfg.source_classes, cfg.d_in, generator=g)
    R = torch.randn(cfg.target_classes, cfg.source_classes, generator=g)
    scale = torch.ones(cfg.d_in)
    scale[cfg.d_in - cfg.minor_dims :] = cfg.id_minor_scale

    def draw(n: int, s: torch.Tensor) -> torch.Tensor:
        return torch.randn(n, cfg.d_in, generator=g) * s

    def target(x: torch.Tensor) -> torch.Tensor:
        return (x @ (R @ U).T).argmax(1)

    xs = draw(cfg.n_source, torch.ones(cfg.d_in))
    out = {"xs": xs, "ys": (xs @ U.T).argmax(1)}
    for name, n, s in (("tr", cfg.n_target, scale), ("val", cfg.n_eval, scale), ("id", cfg.n_eval, scale),
                       ("ood", cfg.n_eval, torch.ones(cfg.d_in))):  # fmt: skip
        x = draw(n, s)
        out[f"x{name}"], out[f"y{name}"] = x, target(x)
    return out


def _tcfg(cfg: Config, steps: int, lr: float) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=cfg.batch_size, lr=lr, weight_decay=0.0, warmup_steps=0,
                       schedule="constant", grad_clip=0.0, log_every=50, checkpoint_every=500, seed=cfg.seed,
                       progress=sys.stderr.isatty())  # fmt: skip


def _stage(run_dir: RunDir, name: str, fit) -> list[float]:
    """Run ``fit(folder) -> head norms`` once; a resumed run restores the weights from the stage's
    checkpoint (through the loop) and reads the norms back from ``<name>/norms.json``."""
    folder = RunDir.create(NAME, run_dir.path / name)
    done = folder.file("norms.json")
    norms = fit(folder)
    if done.exists():
        return json.loads(done.read_text())
    atomic_write_json(done, norms)
    return norms


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(1)  # a small MLP: extra threads only spin on a shared machine
    d = make_tasks(cfg)
    torch.manual_seed(cfg.seed)
    backbone = _backbone(cfg)
    pre = ProbedModel(backbone, nn.Linear(cfg.widths[-1], cfg.source_classes))
    _stage(run_dir, "pretrain", lambda f: finetune(
        pre, ShuffledBatches(d["xs"], d["ys"], cfg.batch_size, cfg.seed), _tcfg(cfg, cfg.pretrain_steps, cfg.pretrain_lr), f))  # fmt: skip
    pretrained = copy.deepcopy(backbone).eval()
    src_acc = float((pre(d["xs"]).argmax(1) == d["ys"]).float().mean())
    batches = ShuffledBatches(d["xtr"], d["ytr"], cfg.batch_size, cfg.seed + 1)
    torch.manual_seed(cfg.seed + 2)
    head0 = nn.Linear(cfg.widths[-1], cfg.target_classes)
    models = {
        "FT": ProbedModel(copy.deepcopy(pretrained).train(), copy.deepcopy(head0)),
        "LP": ProbedModel(copy.deepcopy(pretrained).train(), copy.deepcopy(head0)),
    }
    lp_norms = _stage(
        run_dir, "lp", lambda f: linear_probe(models["LP"], batches, _tcfg(cfg, cfg.lp_steps, cfg.lp_lr), f)
    )
    models["LP-FT"] = copy.deepcopy(models["LP"])
    xn = d["xid"][: cfg.ntk_points]
    ntk = {}
    for name in ("FT", "LP-FT"):
        head_t, feat_t = ntk_split(models[name], xn)
        ntk[name] = {"head_norm": head_norm(models[name]), "head_term": float(head_t.norm()),
                     "feature_term": float(feat_t.norm())}  # fmt: skip
    ft_cfg = _tcfg(cfg, cfg.ft_steps, cfg.ft_lr)
    ft_norms = {
        name: _stage(run_dir, name.lower(), lambda f, m=models[name]: finetune(m, batches, ft_cfg, f))
        for name in ("FT", "LP-FT")
    }
    results = {}
    for name, m in models.items():
        m.eval()
        with torch.no_grad():
            lid, lval, lood = m(d["xid"]), m(d["xval"]), m(d["xood"])
        t = fit_temperature(lval, d["yval"])
        results[name] = {
            "id_acc": float((lid.argmax(1) == d["yid"]).float().mean()),
            "ood_acc": float((lood.argmax(1) == d["yood"]).float().mean()),
            "feature_change_id": feature_change(pretrained, m.backbone, d["xid"]),
            "feature_change_ood": feature_change(pretrained, m.backbone, d["xood"]),
            "head_norm": head_norm(m),
            "ece": expected_calibration_error(lid, d["yid"]),
            "temperature": t,
            "ece_ts": expected_calibration_error(lid / t, d["yid"]),
        }
    fc = results["FT"]["feature_change_id"] / max(results["LP-FT"]["feature_change_id"], 1e-12)
    summary: dict[str, Any] = {
        "source_accuracy": src_acc,
        "results": results,
        "ntk_at_ft_start": ntk,
        "lp_head_norm_first_last": [lp_norms[0], lp_norms[-1]],
        "lp_head_norm_monotone_fraction": sum(b >= a for a, b in zip(lp_norms, lp_norms[1:]))
        / max(1, len(lp_norms) - 1),
        "feature_change_ratio_ft_over_lpft": fc,
    }
    _plot(run_dir, lp_norms, ft_norms, results)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, lp_norms: list[float], ft_norms: dict[str, list[float]], results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(lp_norms, label="LP")
    n = len(lp_norms)
    for name, norms in ft_norms.items():
        start = n - 1 if name == "LP-FT" else 0
        axes[0].plot(range(start, start + len(norms)), norms, label=name)
    axes[0].set(title="head norm ||V||_F during training", xlabel="step")
    axes[0].legend()
    names = list(results)
    xs = range(len(names))
    axes[1].bar([x - 0.2 for x in xs], [results[k]["id_acc"] for k in names], 0.4, label="ID")
    axes[1].bar([x + 0.2 for x in xs], [results[k]["ood_acc"] for k in names], 0.4, label="OOD")
    axes[1].set(xticks=list(xs), xticklabels=names, title="accuracy", ylim=(0, 1))
    axes[1].legend()
    axes[2].bar(
        [x - 0.2 for x in xs],
        [results[k]["feature_change_id"] for k in names],
        0.4,
        label="feature change (ID)",
    )
    axes[2].bar([x + 0.2 for x in xs], [results[k]["ece"] for k in names], 0.4, label="ECE")
    axes[2].set(xticks=list(xs), xticklabels=names, title="feature change and ECE")
    axes[2].legend(fontsize=8)
    run_dir.save_figure("lp_ft.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    r = s["results"]
    rows = [
        [k, fmt(v["id_acc"], 4), fmt(v["ood_acc"], 4), fmt(v["feature_change_id"], 3), fmt(v["feature_change_ood"], 3),
         fmt(v["head_norm"], 3), fmt(v["ece"], 3), fmt(v["temperature"], 3), fmt(v["ece_ts"], 3)]
        for k, v in r.items()
    ]  # fmt: skip
    ntk = s["ntk_at_ft_start"]
    lines = [
        f"lp-ft: source accuracy of the pretrained extractor {fmt(s['source_accuracy'], 3)}",
        format_table(["method", "ID acc", "OOD acc", "feat chg ID", "feat chg OOD", "||V||", "ECE", "T", "ECE (TS)"], rows),
        "NTK at the start of fine-tuning (Frobenius norms on ID inputs):",
        format_table(
            ["start", "||V||", "head term", "feature term"],
            [[k, fmt(v["head_norm"], 3), fmt(v["head_term"], 4), fmt(v["feature_term"], 4)] for k, v in ntk.items()],
        ),
        format_table(
            ["quantity", "measured", "paper"],
            [
                ["||V|| during LP: first -> last", f"{fmt(s['lp_head_norm_first_last'][0], 3)} -> "
                 f"{fmt(s['lp_head_norm_first_last'][1], 3)}", "grows (CE)"],
                ["fraction of LP steps with ||V|| not falling", fmt(s["lp_head_norm_monotone_fraction"], 3), "~1"],
                ["feature change FT / LP-FT (ID)", fmt(s["feature_change_ratio_ft_over_lpft"], 3), "> 1 (several x)"],
                ["OOD acc LP-FT - FT", fmt(r["LP-FT"]["ood_acc"] - r["FT"]["ood_acc"], 3), ">= 0"],
                ["ECE LP-FT before -> after TS", f"{fmt(r['LP-FT']['ece'], 3)} -> {fmt(r['LP-FT']['ece_ts'], 3)}", "drops"],
            ],
        ),
    ]  # fmt: skip
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Feature change ratio, OOD accuracies, and the LP-FT calibration before / after TS."""
    r = summary["results"]
    return {
        "feature change FT / LP-FT": summary["feature_change_ratio_ft_over_lpft"],
        "OOD acc FT": r["FT"]["ood_acc"],
        "OOD acc LP-FT": r["LP-FT"]["ood_acc"],
        "ECE LP-FT": r["LP-FT"]["ece"],
        "ECE LP-FT after TS": r["LP-FT"]["ece_ts"],
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="FT vs LP vs LP-FT: head norm, NTK head/feature terms, feature change, OOD accuracy, ECE (Tomihari & Sato)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)


declare_paper(
    arxiv="2405.16747",
    short="LP-FT through the NTK",
    title="Understanding Linear Probing then Fine-tuning Language Models from NTK Perspective",
    authors="Tomihari, Sato",
    venue="NeurIPS 2024",
    area=ANALYSIS,
    status="partial",
    objects=(
        "linearlab.analysis.lp_ft.ProbedModel",
        "linearlab.analysis.lp_ft.linear_probe",
        "linearlab.analysis.lp_ft.finetune",
        "linearlab.analysis.lp_ft.lp_ft",
        "linearlab.analysis.lp_ft.ntk_split",
        "linearlab.analysis.lp_ft.feature_change",
        "linearlab.analysis.lp_ft.expected_calibration_error",
        "linearlab.analysis.lp_ft.fit_temperature",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.analysis.lp_ft import ProbedModel, ntk_split\n"
        "head_term, feature_term = ntk_split(ProbedModel(torch.nn.Linear(64, 8), torch.nn.Linear(8, 3)), x[:4, 0])"
    ),
    claim=(
        "The NTK of f = V phi(x; B) splits into a head term and a feature term scaling with ||V||^2; "
        "LP with cross-entropy grows ||V||, so LP-FT changes features less than FT (better OOD), "
        "while the large norm hurts calibration, which temperature scaling repairs (abstract; "
        "language-model tables not reproduced)."
    ),
    note=(
        "A small synthetic MLP stands in for the paper's language models; LoRA's NTK and the "
        "paper's RoBERTa / T5 numbers are not reproduced."
    ),
)
