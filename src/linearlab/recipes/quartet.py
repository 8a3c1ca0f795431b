"""Recipe ``quartet``: train a small byte-level LM from scratch in emulated MXFP4 (Quartet, arXiv 2505.14669).

Four arms, same data, seed and schedule, every linear layer of the blocks replaced through
``convert_`` (the embedding / tied head stays in float32, as in the paper):

- ``fp32``: plain ``nn.Linear``;
- ``quartet``: QuEST forward (Hadamard + RMS scale) and the unbiased stochastic-rounding backward with
  fresh random signs;
- ``rtn``: round-to-nearest with the OCP absmax scale forward *and* backward (biased gradients);
- ``quartet_no_hadamard``: Quartet without any rotation.

Expected (the paper's ablations): Quartet tracks fp32 with a small gap; the other two are clearly worse.
Each arm trains in its own folder through the shared loop (``--resume`` continues it) and stores its
result in ``<arm>/result.json``.

    linearlab run quartet [--smoke] [--set steps=300 --set arms=fp32,quartet]
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.config import require_at_least_one
from linearlab.convert.linear_swap import convert_
from linearlab.io import atomic_write_json
from linearlab.lab.tables import format_table
from linearlab.lab.testbed import TestbedConfig, bits_per_byte, load_tokens, val_windows
from linearlab.layers.linear.quartet import QuartetConfig
from linearlab.models import MixerLM, ModelConfig
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.text import window_batches
from linearlab.train import TrainConfig, train

NAME = "quartet"
ARMS: dict[str, QuartetConfig | None] = {
    "fp32": None,
    "quartet": QuartetConfig(),
    "rtn": QuartetConfig(forward="rtn", backward="rtn"),
    "quartet_no_hadamard": QuartetConfig(hadamard=False),
}


@dataclass
class Config:
    """``linearlab run quartet``; override with ``--set name=value``."""

    arms: list[str] = field(default_factory=lambda: list(ARMS))
    d_model: int = 64
    n_layers: int = 2
    num_heads: int = 2
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 200
    lr: float = 3e-3
    eval_windows: int = 32
    max_bytes: int = 2_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms: expected names from {list(ARMS)}, got {self.arms}")
        require_at_least_one(
            self, "d_model", "n_layers", "num_heads", "seq_len", "batch_size", "steps", "eval_windows"
        )
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


def _smoke() -> Config:
    return Config(
        d_model=32, n_layers=1, seq_len=32, batch_size=4, steps=6, eval_windows=2, max_bytes=200_000
    )


def _train_arm(cfg: Config, arm: str, data, windows: torch.Tensor, run_dir: RunDir) -> dict[str, Any]:
    folder = RunDir.create(NAME, run_dir.path / arm)
    done = folder.file("result.json")
    if done.is_file():
        return json.loads(done.read_text())
    torch.manual_seed(cfg.seed)
    model = MixerLM(
        ModelConfig(
            vocab_size=data.vocab_size,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            mixer="softmax",
            mixer_kwargs={"num_heads": cfg.num_heads},
            max_seq_len=max(256, cfg.seq_len),
        )
    )
    if ARMS[arm] is not None:
        convert_(model, ARMS[arm], filter_fn=lambda m, fqn: fqn.startswith("blocks."))

    batch_fn = window_batches(data.train, cfg.batch_size, cfg.seq_len, cfg.seed)

    train_cfg = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        warmup_steps=min(25, max(1, cfg.steps // 10)),
        checkpoint_every=50,
        log_every=5,
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )
    result = train(
        model,
        batch_fn,
        lambda m, b: (m.loss(*b), {}),
        train_cfg,
        run_dir=folder,
        resume=True,
        desc=f"quartet {arm}",
        tokens_per_batch=cfg.batch_size * cfg.seq_len,
    )
    model.eval()
    curve = [(r["step"], r["loss"]) for r in folder.read_metrics() if "loss" in r and "step" in r]
    out = {
        "arm": arm,
        "val_bpb": bits_per_byte(model, windows, data.bytes_per_token),
        "final_train_loss": result.final_loss,
        "curve": curve,
    }
    atomic_write_json(done, out)
    return out


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    data = load_tokens(TestbedConfig(tokenizer="byte", max_bytes=cfg.max_bytes))
    windows = val_windows(data, cfg.seq_len, cfg.eval_windows)
    arms = {arm: _train_arm(cfg, arm, data, windows, run_dir) for arm in cfg.arms}
    summary: dict[str, Any] = {
        "arms": {a: {k: v for k, v in r.items() if k != "curve"} for a, r in arms.items()}
    }
    if "fp32" in arms:
        for r in summary["arms"].values():
            r["gap_to_fp32"] = r["val_bpb"] - arms["fp32"]["val_bpb"]
    _plot(run_dir, arms)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, arms: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, r in arms.items():
        steps, losses = zip(*r["curve"]) if r["curve"] else ((), ())
        axes[0].plot(steps, losses, label=arm)
    axes[0].set(title="training loss (nats/byte)", xlabel="step")
    axes[0].legend()
    names = list(arms)
    axes[1].bar(names, [arms[a]["val_bpb"] for a in names])
    axes[1].set(title="validation bits per byte", ylabel="bpb")
    axes[1].tick_params(axis="x", labelrotation=20)
    run_dir.save_figure("quartet.png", fig)


PAPER = {
    "fp32": "baseline (BF16 in the paper)",
    "quartet": "small gap to BF16; competitive with FP8",
    "rtn": "clearly worse (biased RTN backward)",
    "quartet_no_hadamard": "worse (no rotation: outliers clip)",
}


def format_summary(s: dict[str, Any]) -> str:
    rows = [
        [arm, r["val_bpb"], r.get("gap_to_fp32", float("nan")), r["final_train_loss"], PAPER[arm]]
        for arm, r in s["arms"].items()
    ]
    header = ["arm", "val bpb", "gap to fp32", "final train loss", "paper (qualitative)"]
    return "quartet: training from scratch in emulated MXFP4 (measured vs paper)\n" + format_table(
        header, rows
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Validation bits per byte of each arm and its gap to fp32."""
    out: dict[str, float] = {}
    for arm, r in summary["arms"].items():
        out[f"{arm} val bpb"] = r["val_bpb"]
        if "gap_to_fp32" in r and arm != "fp32":
            out[f"{arm} gap to fp32"] = r["gap_to_fp32"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="Quartet FP4 training from scratch vs fp32, RTN (biased) and no-Hadamard ablations",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
