"""Recipe ``sae-dark-matter``: how much of a TopK SAE's error is linear in its input (Engels et al.).

1. Synthetic activations (:mod:`linearlab.tasks.sparse_features`): ``n_features`` sparse true
   features plus a dense low-rank part, more features than any SAE's width. TopK SAEs of each
   width in ``widths``; for each, the vector R^2 of the error predicted linearly from ``x``, the
   norm R^2 (with a bias column) of x, SAE(x), the error and its linear / nonlinear parts, and the
   correlation of per-token error norms across widths.
2. The same on a real LM: the residual stream (``lm_hook``) of the shared byte-level test-bed LM
   (:func:`linearlab.lab.testbed.pretrained_lm`) on validation text.

The paper reports, on LLM residual streams, vector R^2 about 0.5 and error-norm R^2 above 0.9.

    linearlab run sae-dark-matter [--smoke]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.hooks import run_with_cache
from linearlab.analysis.sae import train_sae
from linearlab.analysis.sae_dark_matter import error_norm_correlation, sae_dark_matter
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt, format_table
from linearlab.lab.testbed import TestbedConfig, pretrained_lm, val_windows
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.sparse_features import sparse_feature_activations

NAME = "sae-dark-matter"


@dataclass
class Config:
    """``linearlab run sae-dark-matter``; override with ``--set name=value``."""

    # synthetic activations
    d: int = 64
    n_features: int = 512
    p: float = 0.02
    dense_rank: int = 4
    dense_scale: float = 1.0
    n_samples: int = 20000
    widths: list[int] = field(default_factory=lambda: [64, 128, 256])
    k: int = 8
    # the real LM: the shared test bed and where its activations are read
    lm_d_model: int = 128
    lm_layers: int = 4
    lm_steps: int = 600
    lm_seq_len: int = 256
    lm_batch_size: int = 16
    lm_max_bytes: int = 8_000_000
    lm_hook: str = "blocks.2.hook_resid_pre"
    lm_windows: int = 64
    lm_widths: list[int] = field(default_factory=lambda: [256, 512, 1024])
    lm_k: int = 16
    # SAE training
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self, "d", "n_features", "n_samples", "k", "lm_k", "steps", "batch_size", "lm_windows"
        )
        for name, k in (("widths", self.k), ("lm_widths", self.lm_k)):
            widths = getattr(self, name)
            if len(widths) < 2 or any(w < k for w in widths):
                raise ValueError(f"{name}: expected at least 2 SAE widths, each >= k={k}, got {widths}")
        if not 0 < self.p <= 1:
            raise ValueError(f"p: expected a probability in (0, 1], got {self.p}")


def _smoke() -> Config:
    return Config(
        n_samples=3000,
        widths=[32, 64],
        lm_d_model=32,
        lm_layers=2,
        lm_steps=5,
        lm_seq_len=64,
        lm_batch_size=4,
        lm_max_bytes=300_000,
        lm_hook="blocks.1.hook_resid_pre",
        lm_windows=16,
        lm_widths=[64, 128],
        steps=100,
    )


def _study(cfg: Config, acts: torch.Tensor, widths: list[int], k: int, run_dir: RunDir, part: str) -> dict:
    rows, errors = [], []
    for w in widths:
        sae = train_sae(
            acts,
            width=w,
            k=k,
            steps=cfg.steps,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            run_dir=RunDir.create(NAME, run_dir.path / part / f"w{w}"),
            progress=sys.stderr.isatty(),
        )
        with torch.no_grad():
            x_hat = sae(acts.float())[0].double()
        dm = sae_dark_matter(acts, x_hat, seed=cfg.seed)
        rows.append({"width": w, "k": k, **dm.to_dict()})
        errors.append(acts.double() - x_hat)
    corr = error_norm_correlation(errors)
    pairs = [float(corr[i, i + 1]) for i in range(len(widths) - 1)]
    return {"rows": rows, "error_norm_corr": corr.tolist(), "adjacent_corr_mean": sum(pairs) / len(pairs)}


def _lm_acts(cfg: Config) -> tuple[torch.Tensor, float]:
    bed = pretrained_lm(
        TestbedConfig(
            d_model=cfg.lm_d_model,
            n_layers=cfg.lm_layers,
            steps=cfg.lm_steps,
            seq_len=cfg.lm_seq_len,
            batch_size=cfg.lm_batch_size,
            max_bytes=cfg.lm_max_bytes,
            seed=cfg.seed,
        )
    )
    windows = val_windows(bed.data, cfg.lm_seq_len, cfg.lm_windows)[:, :-1]
    chunks = []
    with torch.no_grad():
        for part in windows.split(8):
            _, cache = run_with_cache(bed.model, part, names=[cfg.lm_hook])
            chunks.append(cache[cfg.lm_hook].flatten(0, 1))
    return torch.cat(chunks), bed.val_bpb


def _check(cfg: Config) -> None:
    from linearlab.analysis.hooks import hook_names
    from linearlab.models import MixerLM, ModelConfig

    probe = MixerLM(
        ModelConfig(d_model=8, n_layers=cfg.lm_layers, mixer="softmax", mixer_kwargs={"num_heads": 2})
    )
    names = hook_names(probe)
    if cfg.lm_hook not in names:
        raise ValueError(
            f"lm_hook: {cfg.lm_hook!r} is not a hook of a {cfg.lm_layers}-layer LM; valid: {', '.join(names)}"
        )


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(1)
    data = sparse_feature_activations(
        cfg.n_samples, cfg.d, cfg.n_features, cfg.p, cfg.dense_rank, cfg.dense_scale, seed=cfg.seed
    )
    synthetic = run_dir.cached_json(
        "synthetic", lambda: _study(cfg, data.x, cfg.widths, cfg.k, run_dir, "synthetic")
    )

    def lm() -> dict:
        acts, bpb = _lm_acts(cfg)
        return {
            "val_bpb": bpb,
            "n_tokens": acts.shape[0],
            **_study(cfg, acts, cfg.lm_widths, cfg.lm_k, run_dir, "lm"),
        }

    real = run_dir.cached_json("lm", lm)
    summary = {"synthetic": synthetic, "lm": real, "lm_hook": cfg.lm_hook}
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["vector", "x", "sae", "error", "linear_error", "nonlinear_error"]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5), sharey=True)
    for ax, part, title in (
        (axes[0], "synthetic", "synthetic sparse features"),
        (axes[1], "lm", f"test-bed LM, {s['lm_hook']}"),
    ):
        rows = s[part]["rows"]
        width = 0.8 / len(rows)
        for j, r in enumerate(rows):
            vals = [r["vector_r2"]] + [r["norm_r2"][k] for k in keys[1:]]
            ax.bar([i + j * width for i in range(len(keys))], vals, width, label=f"width {r['width']}")
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(keys))],
            ["vector R2"] + [f"|{k}|^2 R2" for k in keys[1:]],
            rotation=20,
            fontsize=8,
        )
        ax.axhline(0.5, color="gray", ls=":", lw=1)
        ax.axhline(0.9, color="gray", ls="--", lw=1)
        ax.set(title=title, ylim=(min(0, *(r["vector_r2"] for r in rows)), 1.02))
        ax.legend(fontsize=8)
    run_dir.save_figure("sae_dark_matter.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    lines = []
    for part, label in (("synthetic", "synthetic sparse features"), ("lm", f"test-bed LM ({s['lm_hook']})")):
        p = s[part]
        rows = []
        for r in p["rows"]:
            n = r["norm_r2"]
            rows.append(
                [
                    f"width {r['width']} k={r['k']}",
                    r["fvu"],
                    r["vector_r2"],
                    r["linear_share"],
                    n["x"],
                    n["sae"],
                    n["error"],
                    n["linear_error"],
                    n["nonlinear_error"],
                ]
            )
        rows.append(["paper (LLM residual)", "", "~0.5", "", "", "", ">0.9", "", "lower"])
        extra = f", val {p['val_bpb']:.3f} bits/byte, {p['n_tokens']} tokens" if "val_bpb" in p else ""
        lines.append(f"{label}{extra}")
        lines.append(
            format_table(
                [
                    "SAE",
                    "FVU",
                    "vector R2",
                    "linear share",
                    "|x|2 R2",
                    "|sae|2 R2",
                    "|err|2 R2",
                    "|lin|2 R2",
                    "|nonlin|2 R2",
                ],
                rows,
            )
        )
        lines.append(
            f"per-token |error| correlation between adjacent widths: {fmt(p['adjacent_corr_mean'], 3)} (paper: high)"
        )
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Vector and error-norm R^2 of the widest SAE, synthetic and LM, and the cross-width correlation."""
    out = {}
    for part in ("synthetic", "lm"):
        r = summary[part]["rows"][-1]
        out[f"{part} vector R2 (w={r['width']})"] = r["vector_r2"]
        out[f"{part} error-norm R2 (w={r['width']})"] = r["norm_r2"]["error"]
        out[f"{part} width corr"] = summary[part]["adjacent_corr_mean"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="SAE dark matter: linear prediction of TopK-SAE errors, synthetic features and a byte LM",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    check=_check,
)
