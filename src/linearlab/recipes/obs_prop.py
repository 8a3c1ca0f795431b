"""Recipe ``obs-prop``: Observable Propagation's feature vectors against autograd (Dunefsky & Cohan).

1. Exactness: a 2-layer attention-only softmax transformer with LayerNorm, trained here on repeated
   random tokens (it grows induction heads). For every head, the data-free feature vector of an
   observable ``n = e_a - e_b`` against the autograd gradient of ``n . logits`` with all attention
   patterns frozen (:func:`frozen_pattern_gradient`): cosine 1.000 with the norms removed, close to
   1 with them.
2. LayerNorm's effect against width: randomly initialised LayerNorm models of widths ``widths``;
   ``1 - cos(gradient with the norms' exact Jacobians, gain-folded vector)`` per head, which the
   paper's theorem says vanishes in high dimension.
3. Coupling: for pairs of observables and every head, the coupling coefficient ``C(y1, y2)`` against
   the regression slope of ``y2 . x`` on ``y1 . x`` over isotropic Gaussian ``x`` and over the
   model's real residual-stream activations.

    linearlab run obs-prop [--smoke]
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.hooks import run_with_cache
from linearlab.analysis.observable_propagation import (
    cosine,
    coupling_coefficient,
    frozen_pattern_gradient,
    logit_difference,
    observable_feature_vectors,
    strip_norms_,
)
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt, format_table
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.induction import repeated_tokens, second_half_accuracy
from linearlab.train import TrainConfig, train

NAME = "obs-prop"


@dataclass
class Config:
    """``linearlab run obs-prop``; override with ``--set name=value``."""

    vocab_size: int = 32
    half_len: int = 12
    d_model: int = 64
    num_heads: int = 4
    steps: int = 800
    batch_size: int = 32
    lr: float = 3e-3
    eval_sequences: int = 16
    widths: list[int] = field(default_factory=lambda: [32, 128, 512])
    width_sequences: int = 4
    gaussian_samples: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "vocab_size", "half_len", "steps", "batch_size", "eval_sequences", "width_sequences"
        )
        if self.vocab_size < 6:
            raise ValueError(f"vocab_size: the observables use tokens 1..5; need >= 6, got {self.vocab_size}")
        for d in [self.d_model, *self.widths]:
            if d % self.num_heads or (d // self.num_heads) % 2:
                raise ValueError(
                    f"widths/d_model: each width must split into num_heads={self.num_heads} even head dims, got {d}"
                )
        if not self.widths:
            raise ValueError("widths: expected at least one width, got []")
        if self.gaussian_samples < 100:
            raise ValueError(f"gaussian_samples: expected >= 100, got {self.gaussian_samples}")


def _smoke() -> Config:
    return Config(steps=30, widths=[16, 64], eval_sequences=4, width_sequences=2, gaussian_samples=2000)


def _model(cfg: Config, d_model: int) -> MixerLM:
    return MixerLM(
        ModelConfig(
            vocab_size=cfg.vocab_size,
            d_model=d_model,
            n_layers=2,
            mixer="softmax",
            mixer_kwargs={"num_heads": cfg.num_heads},
            mlp="none",
            norm="layernorm",
            max_seq_len=2 * cfg.half_len,
        )
    )


def _train(cfg: Config, run_dir: RunDir) -> tuple[MixerLM, float]:
    torch.manual_seed(cfg.seed)
    model = _model(cfg, cfg.d_model)

    def batch_fn(step: int) -> torch.Tensor:
        return repeated_tokens(cfg.batch_size, cfg.half_len, cfg.vocab_size, cfg.seed * 1_000_003 + step)

    def loss_fn(m: MixerLM, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return m.loss(ids[:, :-1], ids[:, 1:]), {}

    tcfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(50, cfg.steps // 10),
        weight_decay=0.0,
        checkpoint_every=max(1, cfg.steps // 4),
        log_every=max(1, cfg.steps // 20),
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )
    folder = RunDir.create(NAME, run_dir.path / "train")
    train(model, batch_fn, loss_fn, tcfg, run_dir=folder, resume=True, desc="induction model")
    model.eval()
    ids = repeated_tokens(64, cfg.half_len, cfg.vocab_size, seed=10**9 + cfg.seed)
    with torch.no_grad():
        acc = second_half_accuracy(model(ids).logits, ids)
    return model, acc


def _head_cosines(model: MixerLM, ids: torch.Tensor, n: torch.Tensor) -> dict[str, dict[str, float]]:
    """Per head: mean and min cos(gradient row, folded vector) over sources with a gradient."""
    vecs = observable_feature_vectors(model, n)
    out = {}
    for name, y in vecs.items():
        layer, head = int(name.split(".")[1]), int(name.split("head")[1])
        grad = frozen_pattern_gradient(model, ids, n, layer, head, position=-1).flatten(0, 1)
        rows = grad[grad.norm(dim=-1) > 1e-12 * grad.norm(dim=-1).max()]
        cos = torch.tensor([cosine(r, y) for r in rows])
        out[name] = {"mean": float(cos.mean()), "min": float(cos.min())}
    return out


def _slope(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a @ a))


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    # tiny matrices: extra intra-op threads only spin-wait on a shared machine
    torch.set_num_threads(1)
    model, acc = _train(cfg, run_dir)
    model = model.double()
    n1 = logit_difference(cfg.vocab_size, [1], [2])
    ids = repeated_tokens(cfg.eval_sequences, cfg.half_len, cfg.vocab_size, seed=2 * 10**9 + cfg.seed)

    def exactness() -> dict:
        with_ln = _head_cosines(model, ids, n1)
        no_ln = _head_cosines(strip_norms_(copy.deepcopy(model)), ids, n1)
        return {"with_ln": with_ln, "no_ln": no_ln}

    exact = run_dir.cached_json("exactness", exactness)

    def widths() -> list[dict]:
        rows = []
        for d in cfg.widths:
            torch.manual_seed(cfg.seed + d)
            m = _model(cfg, d).double().eval()
            x = repeated_tokens(cfg.width_sequences, cfg.half_len, cfg.vocab_size, seed=3 * 10**9 + d)
            cos = _head_cosines(m, x, n1)
            mean = sum(c["mean"] for c in cos.values()) / len(cos)
            rows.append(
                {"d_model": d, "mean_cos": mean, "one_minus_cos": 1 - mean, "d_times_gap": d * (1 - mean)}
            )
        return rows

    width_rows = run_dir.cached_json("widths", widths)

    def coupling() -> list[dict]:
        obs = {
            "1-2": n1,
            "1-3": logit_difference(cfg.vocab_size, [1], [3]),
            "4-5": logit_difference(cfg.vocab_size, [4], [5]),
        }
        vecs = {k: observable_feature_vectors(model, v) for k, v in obs.items()}
        _, cache = run_with_cache(model, ids, names=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"])
        g = torch.Generator().manual_seed(cfg.seed)
        gauss = torch.randn(cfg.gaussian_samples, cfg.d_model, generator=g, dtype=torch.float64)
        rows = []
        for name in vecs["1-2"]:
            real = cache[f"blocks.{name.split('.')[1]}.hook_resid_pre"].flatten(0, 1).double()
            for a, b in (("1-2", "1-3"), ("1-2", "4-5"), ("1-3", "4-5")):
                y1, y2 = vecs[a][name], vecs[b][name]
                rows.append(
                    {
                        "head": name,
                        "pair": f"{a} -> {b}",
                        "C": coupling_coefficient(y1, y2),
                        "slope_gaussian": _slope(gauss @ y1, gauss @ y2),
                        "slope_real": _slope(real @ y1, real @ y2),
                    }
                )
        return rows

    coup = run_dir.cached_json("coupling", coupling)
    cs = torch.tensor([r["C"] for r in coup])
    summary = {
        "induction_accuracy": acc,
        "exactness": exact,
        "min_cos_no_ln": min(v["min"] for v in exact["no_ln"].values()),
        "mean_cos_with_ln": sum(v["mean"] for v in exact["with_ln"].values()) / len(exact["with_ln"]),
        "min_cos_with_ln": min(v["min"] for v in exact["with_ln"].values()),
        "widths": width_rows,
        "coupling": coup,
        "coupling_max_abs_err_gaussian": max(abs(r["slope_gaussian"] - r["C"]) for r in coup),
        "coupling_corr_real": float(
            torch.corrcoef(torch.stack([cs, torch.tensor([r["slope_real"] for r in coup])]))[0, 1]
        ),
        "coupling_median_abs_err_real": float(
            torch.tensor([abs(r["slope_real"] - r["C"]) for r in coup]).median()
        ),
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    names = list(s["exactness"]["with_ln"])
    xs = range(len(names))
    axes[0].bar(
        [x - 0.2 for x in xs], [s["exactness"]["no_ln"][n]["min"] for n in names], 0.4, label="no norms (min)"
    )
    axes[0].bar(
        [x + 0.2 for x in xs],
        [s["exactness"]["with_ln"][n]["mean"] for n in names],
        0.4,
        label="LayerNorm (mean)",
    )
    axes[0].set_xticks(list(xs), [n.replace("blocks.", "L").replace(".attn.head", "H") for n in names])
    axes[0].set(
        title="cos(feature vector, frozen-pattern gradient)",
        ylim=(min(0.9, s["min_cos_with_ln"] - 0.02), 1.005),
    )
    axes[0].legend(fontsize=8)
    w = s["widths"]
    axes[1].loglog([r["d_model"] for r in w], [max(r["one_minus_cos"], 1e-12) for r in w], "o-")
    axes[1].set(title="LayerNorm's effect: 1 - cos(grad, folded) vs width", xlabel="d_model")
    c = [r["C"] for r in s["coupling"]]
    axes[2].plot(c, [r["slope_gaussian"] for r in s["coupling"]], "o", label="isotropic Gaussian x")
    axes[2].plot(c, [r["slope_real"] for r in s["coupling"]], "x", label="real activations")
    lo, hi = min(c), max(c)
    axes[2].plot([lo, hi], [lo, hi], "k:", lw=1)
    axes[2].set(title="regression slope vs coupling coefficient", xlabel="C(y1, y2)", ylabel="slope")
    axes[2].legend(fontsize=8)
    run_dir.save_figure("obs_prop.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        ["cos(ObsProp, frozen-pattern grad), no norms, min over heads", f"{s['min_cos_no_ln']:.6f}", "1.000"],
        ["  same with LayerNorm, mean over heads", f"{s['mean_cos_with_ln']:.4f}", "~1"],
    ]
    for r in s["widths"]:
        rows.append(
            [f"  LN effect 1 - cos at d={r['d_model']}", fmt(r["one_minus_cos"], 3), "-> 0 as d grows"]
        )
    rows += [
        [
            "coupling: max |slope - C|, isotropic Gaussian x",
            fmt(s["coupling_max_abs_err_gaussian"], 3),
            "0 (exact in expectation)",
        ],
        ["coupling: corr(C, slope) on real activations", fmt(s["coupling_corr_real"], 3), "approximate"],
        [
            "coupling: median |slope - C| on real activations",
            fmt(s["coupling_median_abs_err_real"], 3),
            "approximate",
        ],
    ]
    return (
        f"obs-prop: 2-layer attention-only model, induction accuracy {s['induction_accuracy']:.3f}\n"
        + format_table(["measure", "measured", "paper"], rows)
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Cosine with the gradient (no norms / LayerNorm), LN effect per width, coupling errors."""
    out = {
        "min cos no norms": summary["min_cos_no_ln"],
        "mean cos LayerNorm": summary["mean_cos_with_ln"],
        "coupling max err gaussian": summary["coupling_max_abs_err_gaussian"],
        "coupling corr real": summary["coupling_corr_real"],
    }
    for r in summary["widths"]:
        out[f"LN 1-cos d={r['d_model']}"] = r["one_minus_cos"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="Observable Propagation: feature vectors = frozen-pattern gradients, LN effect vs width, coupling",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
