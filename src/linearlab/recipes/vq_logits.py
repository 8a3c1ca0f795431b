"""Recipe ``vq-logits``: a K-entry codebook head vs the full 16k-token head (arXiv 2505.10202).

VQ-Logits replaces the ``V x d`` output matrix by ``K`` code vectors and a token-to-code map, claiming
up to 99% fewer output-layer parameters, 6x faster logits and only +4% perplexity. The head only
matters with a large vocabulary, so this recipe uses a byte-level BPE test bed (16384 tokens trained
with ``tokenizers`` on the standard-library corpus, :func:`linearlab.lab.testbed.pretrained_lm` with
``tokenizer="bpe"``, cached): a small MixerLM whose tied embedding is the trained full head.

For each ``K`` the head is replaced by :class:`~linearlab.layers.heads.vq_logits.VQLogitsHead`,
initialised by k-means of the trained head's rows, measured as is ("k-means only") and after
``ft_steps`` of fine-tuning the whole model with the O(K) loss (:meth:`VQLogitsHead.nll`). The full head
is fine-tuned for the same steps as the fair baseline. It reports validation bits per token (and per
byte), output-layer parameters and bytes, logit activation bytes per token, and the measured CPU time
of the output layer + loss on a batch of hidden states: full head, VQ with the V logits formed (the
paper's "scatter"), and VQ's O(K) loss.

    linearlab run vq-logits [--smoke] [--set codes=64,256 --set ft_steps=200]
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.lab.testbed import TestbedConfig, pretrained_lm, testbed_from, val_windows
from linearlab.layers.heads.vq_logits import VQLogitsHead
from linearlab.models import MixerLM
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

NAME = "vq-logits"


@dataclass
class Config:
    """What ``linearlab run vq-logits`` measures; ``bed_*`` fields choose the BPE test-bed LM."""

    codes: list[int] = field(default_factory=lambda: [64, 256, 1024])
    bias_codes: list[int] = field(default_factory=lambda: [256])  # extra arms with a per-token bias
    ft_steps: int = 50
    ft_lr: float = 1e-3
    ft_batch_size: int = 8
    kmeans_iter: int = 30
    eval_windows: int = 32
    timing_tokens: int = 2048
    timing_repeats: int = 5
    seed: int = 0
    bed_vocab: int = 16384
    bed_d_model: int = 128
    bed_n_layers: int = 2
    bed_num_heads: int = 4
    bed_seq_len: int = 64
    bed_batch_size: int = 8
    bed_steps: int = 200
    bed_max_bytes: int = 8_000_000

    def __post_init__(self) -> None:
        if not self.codes or any(k < 1 or k > self.bed_vocab for k in self.codes + self.bias_codes):
            raise ValueError(
                f"codes: expected codebook sizes in [1, bed_vocab={self.bed_vocab}], got {self.codes} / {self.bias_codes}"
            )
        require_at_least_one(
            self, "ft_batch_size", "kmeans_iter", "eval_windows", "timing_tokens", "timing_repeats"
        )
        if self.ft_steps < 0:
            raise ValueError(f"ft_steps: must be >= 0, got {self.ft_steps}")

    def bed(self) -> TestbedConfig:
        return testbed_from(self, tokenizer="bpe", vocab_size=self.bed_vocab)


def _smoke() -> Config:
    return Config(
        codes=[16],
        bias_codes=[16],
        ft_steps=3,
        kmeans_iter=5,
        eval_windows=2,
        timing_tokens=64,
        timing_repeats=1,
        bed_vocab=512,
        bed_d_model=32,
        bed_n_layers=1,
        bed_num_heads=2,
        bed_seq_len=32,
        bed_batch_size=4,
        bed_steps=10,
        bed_max_bytes=100_000,
    )


def final_hidden(model: MixerLM, ids: torch.Tensor) -> torch.Tensor:
    """The normalised last hidden state ``[B, T, d]`` that the head reads (embed -> blocks -> norm)."""
    x = model.embed(ids)
    for block in model.blocks:
        x, _ = block(x)
    return model.norm(x)


def head_nll(model: MixerLM, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token NLL in nats ``[B, T]``: VQ's O(K) form when the head is a VQ head, else the full softmax."""
    head = model.lm_head
    if isinstance(head, VQLogitsHead):
        return head.nll(final_hidden(model, ids), targets)
    logits = model(ids).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(targets)


@torch.no_grad()
def bits_per_token(model: MixerLM, windows: torch.Tensor) -> float:
    """Mean validation NLL of ``windows: [W, L + 1]`` in bits per token."""
    model.eval()
    total, count = 0.0, 0
    for part in windows.split(8):
        total += float(head_nll(model, part[:, :-1], part[:, 1:]).sum())
        count += part[:, 1:].numel()
    return total / count / math.log(2)


def vq_model(base: MixerLM, k: int, bias: bool, cfg: Config) -> MixerLM:
    """A copy of ``base`` whose (tied) head is a k-means VQ head of ``K = k`` codes."""
    model = copy.deepcopy(base)
    head_weight = model.embed.weight if model.lm_head is None else model.lm_head.weight
    # the VQ head replaces the tied head: the embedding stays the input table
    model.lm_head = VQLogitsHead.from_head(
        head_weight.detach(), k, per_token_bias=bias, seed=cfg.seed, max_iter=cfg.kmeans_iter
    )
    return model


def _fine_tune(model: MixerLM, data, cfg: Config, folder: RunDir, label: str) -> None:
    seq = cfg.bed_seq_len

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + 1_000_003 + step)
        starts = torch.randint(0, data.train.numel() - seq - 1, (cfg.ft_batch_size,), generator=gen)
        rows = torch.stack([data.train[s : s + seq + 1] for s in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    train_cfg = TrainConfig(
        steps=cfg.ft_steps,
        batch_size=cfg.ft_batch_size,
        lr=cfg.ft_lr,
        warmup_steps=min(10, max(1, cfg.ft_steps // 10)),
        checkpoint_every=50,
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )
    train(
        model,
        batch_fn,
        lambda m, b: (head_nll(m, *b).mean(), {}),
        train_cfg,
        run_dir=folder,
        resume=True,
        desc=f"fine-tune {label}",
        tokens_per_batch=cfg.ft_batch_size * seq,
    )


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def head_timings(
    full_weight: torch.Tensor, head: VQLogitsHead, n: int, repeats: int, seed: int
) -> dict[str, float]:
    """Best-of-``repeats`` CPU seconds of the output layer + loss on ``n`` hidden states."""
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, full_weight.shape[1], generator=gen)
    y = torch.randint(0, full_weight.shape[0], (n,), generator=gen)
    return {
        "full_logits": _time(lambda: F.linear(h, full_weight), repeats),
        "full_loss": _time(lambda: F.cross_entropy(F.linear(h, full_weight), y), repeats),
        "vq_code_logits": _time(lambda: head.code_logits(h), repeats),
        "vq_scatter_loss": _time(lambda: F.cross_entropy(head(h), y), repeats),
        "vq_ok_loss": _time(lambda: head.nll(h, y).mean(), repeats),
    }


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    bed = pretrained_lm(cfg.bed())
    base, data = bed.model.eval(), bed.data
    windows = val_windows(data, cfg.bed_seq_len, cfg.eval_windows)
    vocab, d = base.embed.weight.shape
    jobs = run_dir.path / "jobs"
    jobs.mkdir(exist_ok=True)
    arms = [("full", 0, False)] + [(f"vq{k}", k, False) for k in cfg.codes]
    arms += [(f"vq{k}+bias", k, True) for k in cfg.bias_codes]
    rows = []
    for label, k, bias in arms:
        done = jobs / f"{label}.json"
        if done.is_file():
            rows.append(json.loads(done.read_text()))
            continue
        model = copy.deepcopy(base) if k == 0 else vq_model(base, k, bias, cfg)
        before = bits_per_token(model, windows)
        if cfg.ft_steps:
            _fine_tune(model, data, cfg, RunDir.create(NAME, jobs / label), label)
        after = bits_per_token(model, windows)
        if k == 0:
            params, store = vocab * d, vocab * d * 4
        else:
            params = k * d + (vocab if bias else 0)
            # the map needs ceil(log2 K) bits per token; stored as int16 when K <= 32768
            store = params * 4 + vocab * (2 if k <= 32768 else 4)
        row = {
            "arm": label,
            "codes": k or vocab,
            "bias": bias,
            "bits_per_token_init": before,
            "bits_per_token": after,
            "bpb": after / data.bytes_per_token,
            "head_params": params,
            "head_bytes": store,
            "logit_floats_per_token": k or vocab,
        }
        atomic_write_json(done, row)
        run_dir.log_metrics(row)
        print(f"  {label:12s} bits/token {before:.3f} -> {after:.3f} after fine-tuning", file=sys.stderr)
        rows.append(row)
    # timing does not depend on which code each token has: a random map avoids another k-means
    timing_head = VQLogitsHead(d, vocab, max(cfg.codes))
    timing_head.set_mapping(
        torch.randint(0, max(cfg.codes), (vocab,), generator=torch.Generator().manual_seed(cfg.seed))
    )
    timings = head_timings(
        base.embed.weight.detach(), timing_head, cfg.timing_tokens, cfg.timing_repeats, cfg.seed
    )
    summary = {
        "vocab": vocab,
        "d_model": d,
        "bytes_per_token": data.bytes_per_token,
        "testbed": asdict(bed.config),
        "testbed_val_bpb": bed.val_bpb,
        "ft_steps": cfg.ft_steps,
        "rows": rows,
        "timing_codes": max(cfg.codes),
        "timing_tokens": cfg.timing_tokens,
        "timings": timings,
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _row(summary: dict[str, Any], arm: str) -> dict[str, Any]:
    return next(r for r in summary["rows"] if r["arm"] == arm)


def _plot(run_dir: RunDir, summary: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    full = _row(summary, "full")
    vq = sorted(
        (r for r in summary["rows"] if r["arm"].startswith("vq") and not r["bias"]), key=lambda r: r["codes"]
    )
    ks = [r["codes"] for r in vq]
    axes[0].plot(ks, [r["bits_per_token_init"] for r in vq], "o--", label="VQ, k-means only")
    axes[0].plot(ks, [r["bits_per_token"] for r in vq], "o-", label=f"VQ, +{summary['ft_steps']} steps")
    for r in summary["rows"]:
        if r["bias"]:
            axes[0].plot([r["codes"]], [r["bits_per_token"]], "s", label=f"VQ+bias K={r['codes']}")
    axes[0].axhline(full["bits_per_token"], color="k", ls=":", label="full head (fine-tuned)")
    axes[0].set(xscale="log", xlabel="codebook size K", ylabel="validation bits/token",
                title=f"vocab {summary['vocab']}: quality vs K")  # fmt: skip
    axes[0].legend(fontsize=8)
    t = summary["timings"]
    names = ["full_logits", "full_loss", "vq_code_logits", "vq_scatter_loss", "vq_ok_loss"]
    axes[1].bar(range(len(names)), [1e3 * t[n] for n in names])
    axes[1].set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    axes[1].set(
        ylabel="ms", title=f"output layer on {summary['timing_tokens']} tokens (K={summary['timing_codes']})"
    )
    run_dir.save_figure("vq_logits.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    full = _row(s, "full")
    rows = []
    for r in s["rows"]:
        ppl_ratio = 2 ** (r["bits_per_token"] - full["bits_per_token"])
        rows.append([
            r["arm"], r["codes"], fmt(r["bits_per_token_init"], 4), fmt(r["bits_per_token"], 4), fmt(r["bpb"], 4),
            f"{100 * (ppl_ratio - 1):+.1f}%", r["head_params"], f"{100 * (1 - r['head_params'] / full['head_params']):.1f}%",
            r["logit_floats_per_token"],
        ])  # fmt: skip
    t = s["timings"]
    lines = [
        f"vq-logits: BPE vocab {s['vocab']}, d={s['d_model']}, {s['bytes_per_token']:.2f} bytes/token; "
        f"every arm fine-tuned {s['ft_steps']} steps",
        format_table(
            [
                "arm",
                "K",
                "bits/tok k-means",
                "bits/tok",
                "bits/byte",
                "ppl vs full",
                "head params",
                "params saved",
                "logits/token",
            ],
            rows,
        ),  # fmt: skip
        "",
        f"output layer on {s['timing_tokens']} hidden states, K={s['timing_codes']} (best of repeats, CPU):",
        format_table(
            ["path", "ms", "vs full"],
            [
                [n, fmt(1e3 * t[n], 3), fmt(t[base] / t[n], 3) + "x"]
                for n, base in (
                    ("full_logits", "full_logits"),
                    ("vq_code_logits", "full_logits"),
                    ("full_loss", "full_loss"),
                    ("vq_scatter_loss", "full_loss"),
                    ("vq_ok_loss", "full_loss"),
                )
            ],
        ),  # fmt: skip
    ]
    best = min(
        (r for r in s["rows"] if r["arm"].startswith("vq") and not r["bias"]),
        key=lambda r: r["bits_per_token"],
    )
    lines += [
        "",
        format_table(
            ["claim", "measured", "paper"],
            [
                [
                    "output-layer params saved",
                    f"{100 * (1 - best['head_params'] / full['head_params']):.1f}% (K={best['codes']})",
                    "up to 99%",
                ],
                [
                    "logit speed-up",
                    f"{t['full_logits'] / t['vq_code_logits']:.1f}x (code logits), "
                    f"{t['full_loss'] / t['vq_ok_loss']:.1f}x (loss)",
                    "6x",
                ],
                [
                    "perplexity vs full",
                    f"{100 * (2 ** (best['bits_per_token'] - full['bits_per_token']) - 1):+.1f}% (K={best['codes']})",
                    "+4%",
                ],
            ],
        ),  # fmt: skip
    ]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    full = _row(summary, "full")
    out = {"full bits/token": full["bits_per_token"]}
    for r in summary["rows"]:
        if r["arm"] != "full":
            out[f"{r['arm']} bits/token"] = r["bits_per_token"]
    t = summary["timings"]
    out["logit speed-up (code logits)"] = t["full_logits"] / t["vq_code_logits"]
    out["loss speed-up (O(K) loss)"] = t["full_loss"] / t["vq_ok_loss"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="VQ-Logits codebook head vs the full 16k BPE head: bits/token, params, output-layer time",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
