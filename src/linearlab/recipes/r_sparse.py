"""Recipe ``r-sparse``: rank-aware activation sparsity vs plain thresholding at equal FLOPs (arXiv 2504.19449).

R-Sparse's claim: replacing every linear layer by "exact product on the large input channels + a
low-rank SVD product on the rest" keeps a model's quality at 50% model-level sparsity, where plain
activation sparsity (TEAL-style: drop the smallest ``|x|``) degrades. This recipe takes the shared
byte-level test-bed LM (:func:`linearlab.lab.testbed.pretrained_lm`, trained once and cached),
calibrates on ONE training sequence (the paper uses one 512-token sample), and measures validation
bits per byte of every linear layer of the blocks converted at each sparsity ``s``:

- ``teal``: activation sparsity, channels scored by ``|x|`` (threshold = the ``s`` quantile);
- ``sparse_only``: R-Sparse with ``alpha = 1`` (scored by ``|x| ||W[:, i]||``, no low-rank path);
- ``r_sparse``: the uniform split ``alpha = sparse_ratio`` (0.75 by default);
- ``low_rank``: ``alpha = 0``, a rank-``r`` SVD of each weight only;
- ``r_sparse_search``: per-layer ``(s, alpha)`` from the paper's evolutionary search, fitness = loss on
  the calibration sequence, model-level budget fixed at ``s``.

Every arm at a given ``s`` costs the same multiply-adds per token (``(1 - s)`` of dense, counted as the
paper counts them; rank rounding can only save a little more). Sparsity is applied to every token
(the paper keeps the prefill dense and sparsifies decoding); there is no sparse kernel here, so the
comparison is quality at equal FLOPs, not CPU wall clock.

    linearlab run r-sparse [--smoke] [--set sparsities=0.4,0.5,0.6]
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from linearlab.config import require_at_least_one
from linearlab.convert.linear_swap import linear_layers
from linearlab.convert.sparsify import collect_linear_inputs
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.lab.testbed import TestbedFields, bits_per_byte, pretrained_lm, val_windows
from linearlab.layers.linear.r_sparse import LayerFactors, model_sparsity, search_budgets
from linearlab.recipes import Recipe
from linearlab.runs import RunDir

NAME = "r-sparse"
ARMS = ("teal", "sparse_only", "r_sparse", "low_rank", "r_sparse_search")


@dataclass
class Config(TestbedFields):
    """What ``linearlab run r-sparse`` measures; ``bed_*`` fields choose the shared test-bed LM."""

    sparsities: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    sparse_ratio: float = 0.75
    calib_len: int = 256
    eval_windows: int = 32
    search_generations: int = 20
    search_population: int = 16
    search_mutation: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sparsities or any(not 0 <= s < 1 for s in self.sparsities):
            raise ValueError(f"sparsities: expected values in [0, 1), got {self.sparsities}")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms: expected names from {list(ARMS)}, got {self.arms}")
        if not 0 <= self.sparse_ratio <= 1:
            raise ValueError(f"sparse_ratio: expected a number in [0, 1], got {self.sparse_ratio}")
        require_at_least_one(self, "calib_len", "eval_windows", "search_generations", "search_population")


def _smoke() -> Config:
    return Config(
        sparsities=[0.5],
        calib_len=64,
        eval_windows=4,
        search_generations=2,
        search_population=4,
        bed_d_model=32,
        bed_n_layers=2,
        bed_num_heads=2,
        bed_seq_len=64,
        bed_batch_size=4,
        bed_steps=20,
        bed_max_bytes=200_000,
    )


def swap_layers(model: torch.nn.Module, layers: dict[str, torch.nn.Module]) -> dict[str, torch.nn.Module]:
    """Put ``layers`` (by fqn) into ``model``; returns the modules they replaced."""
    old = {}
    for fqn, layer in layers.items():
        parent, _, child = fqn.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        old[fqn] = getattr(owner, child)
        setattr(owner, child, layer)
    return old


def _arm_budget(arm: str, s: float, sparse_ratio: float) -> tuple[str, float]:
    """(channel score, alpha) of a uniform arm."""
    return {
        "teal": ("magnitude", 1.0),
        "sparse_only": ("weight_norm", 1.0),
        "r_sparse": ("weight_norm", sparse_ratio),
        "low_rank": ("weight_norm", 0.0),
        "r_sparse_search": ("weight_norm", sparse_ratio),
    }[arm]


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    bed = pretrained_lm(cfg.bed())
    model = bed.model.eval()
    windows = val_windows(bed.data, cfg.bed_seq_len, cfg.eval_windows)
    # one calibration sequence from the training split, chosen by the seed
    gen = torch.Generator().manual_seed(cfg.seed)
    start = int(torch.randint(0, bed.data.train.numel() - cfg.calib_len - 1, (1,), generator=gen))
    calib = bed.data.train[start : start + cfg.calib_len + 1].unsqueeze(0)
    names = [n for n in linear_layers(model) if "lm_head" not in n]
    inputs = collect_linear_inputs(model, calib[:, :-1], lambda m, f: f in names)
    factors = {
        score: {n: LayerFactors.from_linear(model.get_submodule(n), inputs[n], score) for n in names}
        for score in ("weight_norm", "magnitude")
    }
    shapes = {n: factors["weight_norm"][n].shape for n in names}
    dense_bpb = bits_per_byte(model, windows, bed.data.bytes_per_token)
    jobs = run_dir.path / "jobs"
    jobs.mkdir(exist_ok=True)
    rows = []
    for s in cfg.sparsities:
        for arm in cfg.arms:
            done = jobs / f"{arm}_s{s:g}.json"
            if done.is_file():
                rows.append(json.loads(done.read_text()))
                continue
            score, alpha = _arm_budget(arm, s, cfg.sparse_ratio)
            per_layer = {n: (s, alpha) for n in names}
            search: dict[str, Any] = {}
            if arm == "r_sparse_search":
                work = copy.deepcopy(model)

                def evaluate(layers: dict[str, torch.nn.Module], work=work) -> float:
                    old = swap_layers(work, layers)
                    loss = float(work.loss(calib[:, :-1], calib[:, 1:]))
                    swap_layers(work, old)
                    return loss

                result = search_budgets(
                    factors[score],
                    evaluate,
                    s,
                    alpha,
                    generations=cfg.search_generations,
                    population=cfg.search_population,
                    mutation=cfg.search_mutation,
                    seed=cfg.seed,
                )
                per_layer = result.per_layer
                search = {
                    "calib_loss_uniform": result.uniform_loss,
                    "calib_loss_best": result.best_loss,
                    "history": result.history,
                    "per_layer": {n: list(v) for n, v in per_layer.items()},
                }
            converted = copy.deepcopy(model)
            swap_layers(converted, {n: factors[score][n].build(*per_layer[n]) for n in names})
            bpb = bits_per_byte(converted, windows, bed.data.bytes_per_token)
            row = {
                "arm": arm,
                "sparsity": s,
                "effective_sparsity": model_sparsity(per_layer, shapes),
                "bpb": bpb,
                "delta_bpb": bpb - dense_bpb,
                **search,
            }
            atomic_write_json(done, row)
            run_dir.log_metrics({k: v for k, v in row.items() if k not in ("history", "per_layer")})
            print(f"  {arm:16s} s={s:g}: bpb {bpb:.4f} ({bpb - dense_bpb:+.4f})", file=sys.stderr)
            rows.append(row)
    summary = {
        "dense_bpb": dense_bpb,
        "testbed_val_bpb": bed.val_bpb,
        "testbed": asdict(bed.config),
        "calib_tokens": cfg.calib_len,
        "eval_tokens": int(windows[:, 1:].numel()),
        "layers": len(names),
        "rows": rows,
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _at(summary: dict[str, Any], arm: str, s: float) -> float:
    for r in summary["rows"]:
        if r["arm"] == arm and abs(r["sparsity"] - s) < 1e-9:
            return r["bpb"]
    return math.nan


def _plot(run_dir: RunDir, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for arm in ARMS:
        pts = sorted((r["effective_sparsity"], r["bpb"]) for r in summary["rows"] if r["arm"] == arm)
        if pts:
            ax.plot(*zip(*pts), "o-", label=arm)
    ax.axhline(summary["dense_bpb"], color="k", ls=":", label="dense")
    ax.set(xlabel="model-level sparsity (multiply-adds saved)", ylabel="validation bits/byte",
           title="R-Sparse vs activation sparsity at equal FLOPs")  # fmt: skip
    ax.legend(fontsize=8)
    run_dir.save_figure("r_sparse.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    sparsities = sorted({r["sparsity"] for r in s["rows"]})
    arms = [a for a in ARMS if any(r["arm"] == a for r in s["rows"])]
    rows = [[arm] + [fmt(_at(s, arm, sp), 4) for sp in sparsities] for arm in arms]
    lines = [
        f"r-sparse: validation bits/byte of the test-bed LM (dense {s['dense_bpb']:.4f}), "
        f"{s['layers']} linear layers converted, calibrated on {s['calib_tokens']} tokens",
        format_table(["arm \\ sparsity"] + [f"{sp:g}" for sp in sparsities], rows),
    ]
    if 0.5 in sparsities:
        d = s["dense_bpb"]
        best = (
            min((_at(s, a, 0.5), a) for a in ("r_sparse", "r_sparse_search") if a in arms) if arms else None
        )
        teal = _at(s, "teal", 0.5)
        lines.append("")
        lines.append(
            format_table(
                ["at 50% sparsity", "measured", "paper"],
                [
                    [
                        "R-Sparse: bpb increase over dense",
                        fmt(best[0] - d, 3) if best else "n/a",
                        "'comparable performance' (avg. of 10 tasks)",
                    ],
                    ["TEAL-like: bpb increase over dense", fmt(teal - d, 3), "worse than R-Sparse"],
                    [
                        "R-Sparse gap / TEAL gap",
                        fmt((best[0] - d) / (teal - d), 3) if best and teal > d else "n/a",
                        "< 1",
                    ],
                ],
            )  # fmt: skip
        )
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    out = {"dense bpb": summary["dense_bpb"]}
    for r in summary["rows"]:
        if abs(r["sparsity"] - 0.5) < 1e-9:
            out[f"{r['arm']} bpb at 50%"] = r["bpb"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="R-Sparse (sparse channels + low-rank SVD) vs TEAL-like activation sparsity at equal FLOPs",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
