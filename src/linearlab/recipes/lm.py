"""Recipe ``lm``: byte-level language modelling with every paper mixer on the same data.

The default corpus is this Python's standard-library sources (no download). For each mixer the
recipe trains one small MixerLM and reports validation bits per byte at the training length,
bits per byte at 4x the training length (length extrapolation: linear mixers carry a fixed-size
state, softmax with RoPE meets unseen positions), training tokens per second and the state size.

    linearlab run lm [--mixers softmax,gla,...] [--data a.txt,b.txt] [--set steps=800]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from linearlab.config import require_at_least_one, to_dict
from linearlab.io import atomic_write_json, check_input_path
from linearlab.lab.mixer_variants import COST_HINT, parse_variants, variant
from linearlab.lab.parallel import default_workers, run_jobs, step_done
from linearlab.lab.tables import format_table
from linearlab.recipes import Flag, Recipe
from linearlab.runs import RunDir

LM_MIXERS = "softmax,linear_elu1,hedgehog,retnet,gla,deltanet,gated_deltanet"


@dataclass
class LMExperiment:
    """Everything ``linearlab run lm`` does; override fields with ``--set name=value``."""

    mixers: str = LM_MIXERS
    data: str = ""  # comma-separated text files; empty: the standard library
    max_bytes: int = 4_000_000
    d_model: int = 128
    n_layers: int = 2
    num_heads: int = 2
    seq_len: int = 256
    extrapolation_factor: int = 4
    steps: int = 300
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 30
    eval_windows: int = 32
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            "max_bytes",
            "d_model",
            "n_layers",
            "num_heads",
            "seq_len",
            "extrapolation_factor",
            "steps",
            "batch_size",
            "eval_windows",
        )
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0 (0: min(2, cores)), got {self.workers}")


def _smoke() -> LMExperiment:
    return LMExperiment(
        mixers="softmax,gla",
        max_bytes=200_000,
        d_model=32,
        n_layers=1,
        seq_len=32,
        steps=8,
        batch_size=4,
        warmup_steps=2,
        eval_windows=4,
        checkpoint_every=4,
    )


def _bits_per_byte(model, windows: torch.Tensor) -> float:
    total, count = 0.0, 0
    for i in range(0, windows.shape[0], 8):
        w = windows[i : i + 8]
        logits = model(w[:, :-1]).logits.float()
        total += F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count / math.log(2)


def _train_one(job: dict[str, Any]) -> dict[str, Any]:
    from linearlab.models import MixerLM, ModelConfig
    from linearlab.tasks.text import ByteCorpus, eval_windows, sample_windows
    from linearlab.train import TrainConfig, train

    exp = LMExperiment(**job["experiment"])
    folder = RunDir.create("lm", job["folder"])
    done = folder.file("result.json")
    if done.exists():
        return json.loads(done.read_text())
    files = [f for f in exp.data.split(",") if f] or None
    corpus = ByteCorpus.from_files(files, max_bytes=exp.max_bytes)
    name, kwargs = variant(job["label"], exp.num_heads)
    long_len = exp.seq_len * exp.extrapolation_factor
    torch.manual_seed(exp.seed)
    model = MixerLM(
        ModelConfig(
            vocab_size=256,
            d_model=exp.d_model,
            n_layers=exp.n_layers,
            mixer=name,
            mixer_kwargs=kwargs,
            max_seq_len=long_len,
        )
    )

    def batch_fn(step: int):
        gen = torch.Generator().manual_seed(exp.seed * 100_003 + step)
        return sample_windows(corpus.train, exp.batch_size, exp.seq_len, gen)

    def loss_fn(m, batch):
        x, y = batch
        return m.loss(x, y), {}

    cfg = TrainConfig(
        steps=exp.steps,
        batch_size=exp.batch_size,
        lr=exp.lr,
        warmup_steps=exp.warmup_steps,
        checkpoint_every=exp.checkpoint_every,
        seed=exp.seed,
        progress=False,
    )
    result = train(
        model,
        batch_fn,
        loss_fn,
        cfg,
        run_dir=folder,
        resume=True,
        tokens_per_batch=exp.batch_size * exp.seq_len,
        on_step=step_done,
    )
    model.eval()
    # the same bytes scored in short and in long windows, so the two numbers are comparable
    n_long = max(1, exp.eval_windows // exp.extrapolation_factor)
    long_windows = eval_windows(corpus.val, long_len, n_long)
    short_windows = eval_windows(corpus.val, exp.seq_len, n_long * exp.extrapolation_factor)
    with torch.no_grad():
        bpb = _bits_per_byte(model, short_windows)
        bpb_long = _bits_per_byte(model, long_windows)
    record = {
        "label": job["label"],
        "mixer": name,
        "mixer_kwargs": kwargs,
        "params": model.num_params(),
        "state_size": model.state_size(exp.seq_len),
        "val_bpb": bpb,
        f"val_bpb_at_{exp.extrapolation_factor}x": bpb_long,
        "train_tokens_per_second": result.tokens_per_second,
        "train_seconds": round(result.train_seconds, 2),
        "final_train_loss": result.final_loss,
        "first_losses": result.losses[:5],
    }
    atomic_write_json(done, record)
    return record


def table(results: list[dict]) -> str:
    long_key = next((k for k in results[0] if k.startswith("val_bpb_at_")), None) if results else None
    header = [
        "mixer",
        "params",
        "state",
        "val bpb",
        f"bpb {long_key[11:] if long_key else ''}",
        "train tok/s",
    ]
    rows = [
        [r["label"], r["params"], r["state_size"], r["val_bpb"], r.get(long_key, float("nan")), round(r["train_tokens_per_second"])]
        for r in results
    ]  # fmt: skip
    return format_table(header, rows)


def plot(results: list[dict], run_dir: RunDir) -> None:
    import matplotlib.pyplot as plt

    if not results:
        return
    long_key = next(k for k in results[0] if k.startswith("val_bpb_at_"))
    labels = [r["label"] for r in results]
    xs = range(len(results))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(results)), 3.6))
    ax.bar([x - 0.2 for x in xs], [r["val_bpb"] for r in results], width=0.4, label="training length")
    ax.bar([x + 0.2 for x in xs], [r[long_key] for r in results], width=0.4, label=long_key[11:] + " length")
    ax.set_xticks(list(xs), labels, rotation=30, ha="right")
    ax.set_ylabel("validation bits per byte")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    run_dir.save_figure("lm_bits_per_byte.png", fig)


def check(exp: LMExperiment) -> None:
    """Unknown mixers and unreadable data files fail before any file is written."""
    parse_variants(exp.mixers)
    for f in [f for f in exp.data.split(",") if f]:
        check_input_path(f, "file", "--data")


def run(exp: LMExperiment, run_dir: RunDir) -> dict[str, Any]:
    labels = parse_variants(exp.mixers)
    jobs = [
        ({"experiment": to_dict(exp), "label": lab, "folder": str(run_dir.path / lab)},) for lab in labels
    ]
    workers = exp.workers or default_workers()
    t0 = time.perf_counter()
    costs = [COST_HINT.get(lab, 1.0) for lab in labels]
    results = run_jobs(_train_one, jobs, workers, desc="lm", costs=costs, steps=[exp.steps] * len(jobs))
    print(table(results))
    plot(results, run_dir)
    return {"results": results, "seconds": round(time.perf_counter() - t0, 1)}


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Validation bits per byte per mixer at the training length and at the extrapolated one."""
    out: dict[str, float] = {}
    for r in summary.get("results", []):
        out[f"{r['label']} bpb"] = r["val_bpb"]
        for key, value in r.items():
            if key.startswith("val_bpb_at_"):
                out[f"{r['label']} bpb at {key[len('val_bpb_at_') :]}"] = value
    return out


def report(run_dir: RunDir) -> str:
    summary = run_dir.read_summary()
    plot(summary["results"], run_dir)
    return table(summary["results"])


RECIPE = Recipe(
    name="lm",
    help="byte-level language modelling per mixer: bits per byte, length extrapolation, tokens/s",
    config=LMExperiment,
    presets={"default": LMExperiment, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    flags=(
        Flag("--mixers", "mixers", f"comma-separated mixer labels (default {LM_MIXERS})"),
        Flag("--data", "data", "comma-separated text files (default: Python's stdlib)"),
    ),
    check=check,
    resume_may_change=("workers",),
)
