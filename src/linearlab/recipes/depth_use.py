"""Recipe ``depth-use``: do small LMs use their depth efficiently? (Csordás, Manning, Potts).

Two byte-level test-bed LMs (:func:`linearlab.lab.testbed.pretrained_lm`) of the same width, a
shallow (``shallow_layers``) and a deep one (``deep_layers``), trained the same way on the standard
library. On held-out text:

1. per layer: relative contribution ``|a_l + m_l| / |h_l|`` and ``cos(a_l + m_l, h_l)``;
2. skipping each layer: the largest relative change it causes in a later layer's contribution, and
   the output KL;
3. the ``shallow x deep`` matrix of held-out R^2 of ridge maps between their residual streams, read
   both ways: the best deep layer for each shallow layer, and the best shallow layer for each deep
   layer (the paper: equal relative depth, ``j ~ i * L_deep / L_shallow``). The second reading
   compares sources on one target, so it is not pulled towards whichever deep layer is easiest to
   predict; the first one is (every shallow layer predicts the first deep layers best).

The two LMs train side by side in worker processes (one core each) and are cached like the shared
test bed, so a second run only measures.

    linearlab run depth-use [--smoke]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from linearlab.analysis.depth_usage import (
    depth_alignment,
    layer_contributions,
    residual_streams,
    skip_effects,
)
from linearlab.config import require_at_least_one
from linearlab.lab.parallel import default_workers, run_jobs, step_done
from linearlab.lab.tables import fmt, format_table
from linearlab.lab.testbed import TestbedConfig, pretrained_lm, val_windows
from linearlab.recipes import Recipe
from linearlab.runs import RunDir

NAME = "depth-use"


@dataclass
class Config:
    """``linearlab run depth-use``; override with ``--set name=value``."""

    # narrower and shorter-context than the shared test bed, so that a fresh run (both LMs trained
    # side by side, one core each: the 8-layer one takes about 400 CPU-s) stays within 10 minutes
    d_model: int = 96
    shallow_layers: int = 4
    deep_layers: int = 8
    steps: int = 600
    seq_len: int = 128
    batch_size: int = 16
    max_bytes: int = 8_000_000
    eval_windows: int = 16
    eval_len: int = 128
    ridge_lam: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "d_model", "shallow_layers", "steps", "seq_len", "eval_windows", "eval_len"
        )
        if self.deep_layers <= self.shallow_layers:
            raise ValueError(
                f"deep_layers: expected more layers than shallow_layers={self.shallow_layers}, got {self.deep_layers}"
            )


def _smoke() -> Config:
    return Config(d_model=32, shallow_layers=2, deep_layers=4, steps=5, seq_len=64, batch_size=4,
                  max_bytes=300_000, eval_windows=4, eval_len=64)  # fmt: skip


def _bed_config(cfg: Config, layers: int) -> TestbedConfig:
    return TestbedConfig(
        d_model=cfg.d_model,
        n_layers=layers,
        steps=cfg.steps,
        seq_len=cfg.seq_len,
        batch_size=cfg.batch_size,
        max_bytes=cfg.max_bytes,
        seed=cfg.seed,
    )


def _bed(cfg: Config, layers: int):
    return pretrained_lm(_bed_config(cfg, layers))


def _train_bed(cfg: Config, layers: int) -> dict[str, Any]:
    """One job of :func:`run_jobs`: train (or find cached) the ``layers``-layer test bed."""
    bed = pretrained_lm(_bed_config(cfg, layers), on_step=step_done)
    return {"layers": layers, "val_bpb": bed.val_bpb}


def _model_part(cfg: Config, layers: int) -> dict[str, Any]:
    bed = _bed(cfg, layers)
    ids = val_windows(bed.data, cfg.eval_len, cfg.eval_windows)[:, :-1]
    return {
        "layers": layers,
        "val_bpb": bed.val_bpb,
        **layer_contributions(bed.model, ids),
        **skip_effects(bed.model, ids),
    }


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    # both LMs train side by side, one core each (cached ones load instantly)
    layers = [cfg.shallow_layers, cfg.deep_layers]
    run_jobs(_train_bed, [(cfg, n) for n in layers], workers=default_workers(), desc="depth-use LMs",
             costs=[float(n) for n in layers], steps=[cfg.steps] * 2)  # fmt: skip
    shallow = run_dir.cached_json("shallow", lambda: _model_part(cfg, cfg.shallow_layers))
    deep = run_dir.cached_json("deep", lambda: _model_part(cfg, cfg.deep_layers))

    def align() -> dict:
        a, b = _bed(cfg, cfg.shallow_layers), _bed(cfg, cfg.deep_layers)
        ids = val_windows(a.data, cfg.eval_len, cfg.eval_windows)[:, :-1]
        r2 = depth_alignment(
            residual_streams(a.model, ids), residual_streams(b.model, ids), lam=cfg.ridge_lam, seed=cfg.seed
        )
        return {
            "r2": r2.tolist(),
            "argmax": [int(j) for j in r2.argmax(1)],  # best deep layer for each shallow layer
            "argmax_shallow": [int(i) for i in r2.argmax(0)],  # best shallow layer for each deep layer
        }

    alignment = run_dir.cached_json("alignment", align)
    ratio = cfg.deep_layers / cfg.shallow_layers
    # layer i (0-based) ends at relative depth (i + 1) / L: the deep layer ending there
    expected = [round((i + 1) * ratio) - 1 for i in range(cfg.shallow_layers)]
    # comparing R^2 across deep layers (argmax over j) favours whichever deep layer is easiest to
    # predict from anything; comparing shallow sources for one deep target (argmax over i) does not
    expected_shallow = [max(0, round((j + 1) / ratio) - 1) for j in range(cfg.deep_layers)]
    summary = {
        "shallow": shallow,
        "deep": deep,
        "alignment": alignment,
        "expected_argmax": expected,
        "argmax_mean_abs_offset": sum(abs(a - e) for a, e in zip(alignment["argmax"], expected))
        / len(expected),
        "expected_argmax_shallow": expected_shallow,
        "argmax_shallow_mean_abs_offset": sum(
            abs(a - e) for a, e in zip(alignment["argmax_shallow"], expected_shallow)
        )
        / len(expected_shallow),
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for part, marker in (("shallow", "o-"), ("deep", "s-")):
        p = s[part]
        depth = [(i + 1) / p["layers"] for i in range(p["layers"])]
        axes[0].plot(depth, p["relative"], marker, label=f"{p['layers']} layers |a+m|/|h|")
        axes[0].plot(depth, p["cos"], marker, alpha=0.5, label=f"{p['layers']} layers cos")
        axes[1].plot(depth, p["max_future"], marker, label=f"{p['layers']} layers max later change")
        axes[1].plot(depth, p["kl"], marker, alpha=0.5, label=f"{p['layers']} layers output KL")
    axes[0].set(title="contribution per layer", xlabel="relative depth")
    axes[1].set(title="effect of skipping a layer", xlabel="relative depth", yscale="log")
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    r2 = torch.tensor(s["alignment"]["r2"])
    im = axes[2].imshow(r2.numpy(), aspect="auto", cmap="viridis")
    axes[2].plot(s["alignment"]["argmax"], range(len(r2)), "r+", ms=12, label="best deep layer")
    axes[2].plot(s["expected_argmax"], range(len(r2)), "wx", ms=8, label="equal relative depth")
    axes[2].plot(range(r2.shape[1]), s["alignment"]["argmax_shallow"], "co", ms=5, mfc="none",
                 label="best shallow layer")  # fmt: skip
    axes[2].set(
        title="R^2 of ridge map shallow layer -> deep layer", xlabel="deep layer", ylabel="shallow layer"
    )
    axes[2].legend(fontsize=7)
    fig.colorbar(im, ax=axes[2])
    run_dir.save_figure("depth_use.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    lines = []
    for part in ("shallow", "deep"):
        p = s[part]
        rows = [
            [f"layer {i}", p["relative"][i], p["cos"][i], p["max_future"][i], p["kl"][i]]
            for i in range(p["layers"])
        ]
        lines.append(f"{p['layers']}-layer LM (val {p['val_bpb']:.3f} bits/byte)")
        lines.append(
            format_table(
                ["layer", "|a+m|/|h|", "cos(a+m, h)", "max later change if skipped", "output KL if skipped"],
                rows,
            )
        )
    a = s["alignment"]
    rows = [
        [f"shallow layer {i}", a["argmax"][i], s["expected_argmax"][i], fmt(max(a["r2"][i]), 3)]
        for i in range(len(a["argmax"]))
    ]
    lines.append("best linear map shallow -> deep (paper: equal relative depth)")
    lines.append(format_table(["", "best deep layer", "equal relative depth", "R^2"], rows))
    rows = [
        [
            f"deep layer {j}",
            a["argmax_shallow"][j],
            s["expected_argmax_shallow"][j],
            fmt(max(r[j] for r in a["r2"]), 3),
        ]  # fmt: skip
        for j in range(len(a["argmax_shallow"]))
    ]
    lines.append("the same maps read per deep layer: which shallow layer predicts it best")
    lines.append(format_table(["", "best shallow layer", "equal relative depth", "R^2"], rows))
    lines.append(
        f"mean |best - equal-depth| = {s['argmax_mean_abs_offset']:.2f} deep layers per shallow layer, "
        f"{s['argmax_shallow_mean_abs_offset']:.2f} shallow layers per deep layer; paper (Llama/Qwen): second-half "
        "layers contribute much less and their skip effects are small"
    )
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Alignment offset, first/second-half contribution and KL ratios of the deep model."""
    deep = summary["deep"]
    half = deep["layers"] // 2
    first = sum(deep["relative"][:half]) / half
    second = sum(deep["relative"][half:]) / (deep["layers"] - half)
    kl_first = sum(deep["kl"][:half]) / half
    kl_second = sum(deep["kl"][half:]) / (deep["layers"] - half)
    return {
        "alignment mean |argmax - equal depth|": summary["argmax_mean_abs_offset"],
        "alignment per deep layer mean |argmax - equal depth|": summary["argmax_shallow_mean_abs_offset"],
        "deep contribution 2nd/1st half": second / first,
        "deep skip KL 2nd/1st half": kl_second / kl_first if kl_first else float("nan"),
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="depth use: per-layer contributions, layer-skip effects, shallow->deep alignment of two byte LMs",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
