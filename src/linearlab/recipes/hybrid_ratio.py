"""Recipe ``hybrid-ratio``: how many softmax layers a linear-attention stack needs (arXiv 2507.06457).

"A Systematic Analysis of Hybrid Linear Attention" (Wang et al., 2025) trains hybrids of one linear
mixer and full softmax attention at several linear:full ratios and finds: language modelling stays
roughly flat across ratios, recall rises steeply once full attention is present, Gated DeltaNet (and
HGRN-2) need fewer full layers than GLA for the same recall, and 3:1 to 6:1 is the recommended range.

This recipe is the laptop-scale version. Each model stacks ``n_layers`` blocks (d_model 128); a ratio
``a:b`` repeats a group of ``a`` linear layers followed by ``b`` softmax layers, so 3:1 over 8 layers
is ``GGGAGGGA`` for GLA (the letters of :data:`linearlab.models.config.DEFAULT_PATTERN_MIXERS`).
Every model is trained on batches that mix byte-level text rows (the Python standard library) with
MQAR rows in the same 256-token vocabulary (see :mod:`linearlab.tasks.mixed`), loss = the mean of the
two tasks' cross entropies. It reports held-out bits per byte, MQAR recall on held-out examples,
KV-cache bytes per token (only softmax layers grow with the sequence) and parameters, one table and
one plot, and checks the paper's claims against the numbers.

Presets. ``full`` is the whole grid: GLA, DeltaNet, Gated DeltaNet and RetNet at all-linear, 7:1,
3:1, 1:1 plus one all-softmax model (17 runs of 3000 steps, about 15 CPU-hours). ``default`` fits
20 minutes on 2 cores by keeping the architecture and data but training only GLA and Gated DeltaNet
(9 runs) for 200 steps. That is too short for MQAR: measured here, neither all-softmax nor 3:1
stacks of this size rise above chance recall (1/128) within 500 steps, and even 2-layer models at
L=64 need over a thousand steps to pass 0.2. So the default measures bits per byte, KV cache and
parameters, and its recall verdicts say "not measurable" unless some model clears
``recall_margin``; use ``full`` (or ``--set steps=...``) for the recall claims.

    linearlab run hybrid-ratio [--preset default|smoke|full] [--mixers gla,gated_deltanet] [--set steps=600]
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.config import to_dict
from linearlab.io import atomic_write_json
from linearlab.lab.mixer_variants import COST_HINT, variant
from linearlab.lab.parallel import default_workers, run_jobs, step_done
from linearlab.lab.tables import format_table
from linearlab.recipes import Flag, Recipe
from linearlab.runs import RunDir

LINEAR_MIXERS = ("gla", "deltanet", "gated_deltanet", "retnet")
ALL_LINEAR, ALL_SOFTMAX = "linear", "softmax"
SOFTMAX = "softmax"  # the mixer label of the all-softmax model, trained once for every mixer


def parse_ratio(text: str) -> tuple[int, int]:
    """``"3:1"`` -> ``(3, 1)`` linear and softmax layers per group; ``"linear"`` -> (1, 0); ``"softmax"`` -> (0, 1)."""
    t = str(text).strip().lower()
    if t in (ALL_LINEAR, "all-linear"):
        return 1, 0
    if t in (ALL_SOFTMAX, "all-softmax"):
        return 0, 1
    m = re.fullmatch(r"(\d+):(\d+)", t)
    if not m or int(m[1]) + int(m[2]) < 1:
        raise ValueError(
            f"ratios: {text!r} is not a ratio; use 'linear', 'softmax' or 'a:b' (a linear then b softmax layers)"
        )
    a, b = int(m[1]), int(m[2])
    return (1, 0) if b == 0 else (0, 1) if a == 0 else (a, b)


def ratio_label(ratio: tuple[int, int]) -> str:
    """``(3, 1)`` -> ``"3:1"``; the pure stacks are ``"linear"`` and ``"softmax"``."""
    a, b = ratio
    return ALL_LINEAR if b == 0 else ALL_SOFTMAX if a == 0 else f"{a}:{b}"


def allowed_ratios(n_layers: int) -> list[str]:
    """The ratios ``a:1`` (plus the pure stacks) whose group of ``a + 1`` layers divides ``n_layers``."""
    return [ALL_LINEAR] + [f"{g - 1}:1" for g in range(n_layers, 1, -1) if n_layers % g == 0] + [ALL_SOFTMAX]


def block_pattern(ratio: tuple[int, int], n_layers: int, letter: str) -> str:
    """``(3, 1), 8, "G"`` -> ``"GGGAGGGA"``: groups of linear layers, each ended by its softmax layers."""
    a, b = ratio
    return (letter * a + "A" * b) * (n_layers // (a + b))


def mixer_letter(mixer_name: str) -> str:
    """The ``block_pattern`` letter of a registered linear mixer (``gla`` -> ``G``)."""
    from linearlab.models.config import DEFAULT_PATTERN_MIXERS

    return next(k for k, v in DEFAULT_PATTERN_MIXERS.items() if v == mixer_name and k != "A")


@dataclass
class HybridRatioExperiment:
    """Everything ``linearlab run hybrid-ratio`` does; override fields with ``--set name=value``."""

    mixers: str = "gla,gated_deltanet"  # the paper's contrast; the full preset adds deltanet and retnet
    ratios: list[str] = field(default_factory=lambda: ["linear", "7:1", "3:1", "1:1", "softmax"])
    n_layers: int = 8
    d_model: int = 128
    num_heads: int = 2
    seq_len: int = 256  # text windows and MQAR rows (an MQAR row holds an example of seq_len - 2)
    num_kv_pairs: int = 32  # held-out MQAR examples have this many pairs: the reported recall
    # pair counts of the training MQAR rows (the rows cycle through them); []: [num_kv_pairs]
    train_kv_pairs: list[int] = field(default_factory=list)
    lm_rows: int = 8  # text rows per batch
    mqar_rows: int = 8  # MQAR rows per batch
    mqar_weight: float = 0.5  # loss = (1 - w) * text CE + w * MQAR CE
    max_bytes: int = 4_000_000
    steps: int = 200
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup_steps: int = 30
    eval_every: int = 0  # 0: evaluate at the end only
    eval_windows: int = 64  # held-out text windows of seq_len bytes
    test_examples: int = 256  # held-out MQAR rows
    checkpoint_every: int = 50
    # how the paper's claims are judged from the numbers
    lm_flat_tolerance: float = 0.05  # bpb spread over ratios / mean bpb at most this: "flat"
    recall_margin: float = 0.1  # smaller recall gains count as none; a reference below it: "not learned"
    recall_target: float = 0.9  # "Transformer-level recall": this fraction of all-softmax recall
    seed: int = 0
    workers: int = 0  # 0: min(2, cores)

    def mixer_list(self) -> list[str]:
        return [m.strip() for m in self.mixers.split(",") if m.strip()]

    def ratio_list(self) -> list[tuple[int, int]]:
        return [parse_ratio(r) for r in self.ratios]

    def __post_init__(self) -> None:
        from linearlab.tasks.mixed import mqar_config

        positive = ("n_layers", "d_model", "num_heads", "steps", "eval_windows", "test_examples", "max_bytes")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an int >= 1, got {value!r}")
        for name in ("lm_rows", "mqar_rows"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name}: every batch needs rows of both tasks (>= 1), got {getattr(self, name)}"
                )
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "lm_flat_tolerance", "recall_margin"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not 0 < self.mqar_weight < 1:
            raise ValueError(f"mqar_weight: must be in (0, 1), got {self.mqar_weight}")
        if not 0 < self.recall_target <= 1:
            raise ValueError(f"recall_target: must be in (0, 1], got {self.recall_target}")
        mixers = self.mixer_list()
        bad = [m for m in mixers if m not in LINEAR_MIXERS]
        if not mixers or bad or len(set(mixers)) != len(mixers):
            what = f"unknown {bad}" if bad else "empty or repeated names"
            raise ValueError(f"mixers: {self.mixers!r} has {what}; allowed: {', '.join(LINEAR_MIXERS)}")
        if not self.ratios:
            raise ValueError(f"ratios: give at least one of {', '.join(allowed_ratios(self.n_layers))}")
        seen = set()
        for text, ratio in zip(self.ratios, self.ratio_list()):
            if self.n_layers % sum(ratio):
                raise ValueError(
                    f"ratios: {text!r} needs groups of {sum(ratio)} layers, which do not divide n_layers="
                    f"{self.n_layers}; allowed: {', '.join(allowed_ratios(self.n_layers))} (or a:b with a+b dividing it)"
                )
            if ratio in seen:
                raise ValueError(f"ratios: {text!r} appears twice in {self.ratios}")
            seen.add(ratio)
        for n in [self.num_kv_pairs, *self.train_kv_pairs]:
            mqar_config(self.seq_len, n)
        if len(self.train_kv_pairs) > 16:
            raise ValueError(f"train_kv_pairs: at most 16 pair counts, got {len(self.train_kv_pairs)}")

    def train_kv(self) -> list[int]:
        return list(self.train_kv_pairs) or [self.num_kv_pairs]


def _smoke() -> HybridRatioExperiment:
    return HybridRatioExperiment(
        mixers="gla,gated_deltanet",
        ratios=["linear", "1:1"],
        n_layers=2,
        d_model=32,
        seq_len=64,
        num_kv_pairs=4,
        lm_rows=4,
        mqar_rows=4,
        max_bytes=300_000,
        steps=30,
        lr=1e-2,
        warmup_steps=3,
        eval_windows=8,
        test_examples=32,
        checkpoint_every=10,
    )


def _full() -> HybridRatioExperiment:
    return HybridRatioExperiment(
        mixers=",".join(LINEAR_MIXERS), steps=3000, warmup_steps=100, eval_every=500, checkpoint_every=100
    )


def _job_cost(mixer: str, ratio: tuple[int, int]) -> float:
    linear = ratio[0] / sum(ratio)
    return 0.8 * (1 - linear) + COST_HINT.get(mixer, 1.0) * linear


def _jobs(exp: HybridRatioExperiment) -> list[tuple[str, tuple[int, int]]]:
    """``(mixer, ratio)`` per training run: all-softmax once, under the mixer label ``softmax``."""
    jobs = []
    for mixer in exp.mixer_list():
        jobs += [(mixer, r) for r in exp.ratio_list() if r[0] > 0]
    if any(r[0] == 0 for r in exp.ratio_list()):
        jobs.append((SOFTMAX, (0, 1)))
    return jobs


def build_model(exp: HybridRatioExperiment, mixer: str, ratio: tuple[int, int]):
    """The MixerLM of one ``(mixer, ratio)``; ``mixer`` is ignored for the all-softmax stack."""
    from linearlab.models import MixerLM, ModelConfig

    softmax_kwargs = variant(SOFTMAX, exp.num_heads)[1]
    if ratio[0] == 0:
        pattern_mixers, pattern_kwargs, letter = {"A": SOFTMAX}, {"A": softmax_kwargs}, "A"
    else:
        name, kwargs = variant(mixer, exp.num_heads)
        letter = mixer_letter(name)
        pattern_mixers = {letter: name, "A": SOFTMAX}
        pattern_kwargs = {letter: kwargs, "A": softmax_kwargs}
    return MixerLM(
        ModelConfig(
            vocab_size=256,
            d_model=exp.d_model,
            n_layers=exp.n_layers,
            block_pattern=block_pattern(ratio, exp.n_layers, letter),
            pattern_mixers=pattern_mixers,
            pattern_kwargs=pattern_kwargs,
            max_seq_len=exp.seq_len,
        )
    )


def cache_bytes(model, seq_len: int) -> tuple[int, int]:
    """``(KV-cache bytes added per token, fixed recurrent-state bytes)`` per sequence, from ``state_size``.

    Only softmax layers grow with the sequence; linear layers hold a fixed-size state. Bytes use the
    element size of the model's parameters (float32 here: 4).
    """
    per_element = next(model.parameters()).element_size()
    growth = model.state_size(seq_len + 1) - model.state_size(seq_len)
    fixed = model.state_size(seq_len) - growth * seq_len
    return growth * per_element, fixed * per_element


def _evaluate(model, windows: torch.Tensor, mqar_x: torch.Tensor, mqar_y: torch.Tensor) -> dict[str, float]:
    import torch.nn.functional as F

    from linearlab.tasks.mqar import IGNORE_INDEX

    nats, count = 0.0, 0
    for i in range(0, windows.shape[0], 16):
        w = windows[i : i + 16]
        logits = model(w[:, :-1]).logits.float()
        nats += F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    hits, queries = 0, 0
    for i in range(0, mqar_x.shape[0], 32):
        labels = mqar_y[i : i + 32]
        mask = labels != IGNORE_INDEX
        pred = model(mqar_x[i : i + 32]).logits.argmax(-1)
        hits += int((pred[mask] == labels[mask]).sum())
        queries += int(mask.sum())
    return {"val_bpb": nats / count / math.log(2), "mqar_recall": hits / queries}


@functools.lru_cache(maxsize=2)
def _corpus(max_bytes: int):
    """The standard-library byte corpus, read once per worker process (listing the stdlib takes seconds)."""
    from linearlab.tasks.text import ByteCorpus

    return ByteCorpus.from_files(None, max_bytes=max_bytes)


def _train_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one ``(mixer, ratio)`` hybrid on text + MQAR and evaluate it; resumable from its folder."""
    from linearlab.tasks.mixed import MixedBatches, mixed_loss, mqar_bytes
    from linearlab.tasks.text import eval_windows
    from linearlab.train import TrainConfig, train

    exp = HybridRatioExperiment(**job["experiment"])
    ratio = tuple(job["ratio"])
    folder = RunDir.create("hybrid-ratio", job["folder"])
    done = folder.file("result.json")
    if done.exists():
        return json.loads(done.read_text())
    cpu0 = time.process_time()
    corpus = _corpus(exp.max_bytes)
    torch.manual_seed(exp.seed)
    model = build_model(exp, job["mixer"], ratio)
    batches = MixedBatches(corpus.train, exp.seq_len, exp.train_kv(), exp.lm_rows, exp.mqar_rows, exp.seed)
    windows = eval_windows(corpus.val, exp.seq_len, exp.eval_windows)
    mqar_x, mqar_y = mqar_bytes(exp.seq_len, exp.num_kv_pairs, exp.test_examples, batches.test_seed())

    def loss_fn(m, batch):
        x, y, is_mqar = batch
        out = m(x)
        loss, parts = mixed_loss(out.logits, y, is_mqar, exp.mqar_weight)
        return loss + out.aux_loss, parts

    cfg = TrainConfig(
        steps=exp.steps,
        batch_size=exp.lm_rows + exp.mqar_rows,
        lr=exp.lr,
        weight_decay=exp.weight_decay,
        warmup_steps=min(exp.warmup_steps, exp.steps // 2),
        eval_every=exp.eval_every,
        checkpoint_every=exp.checkpoint_every,
        seed=exp.seed,
        progress=False,
    )
    result = train(
        model,
        batches,
        loss_fn,
        cfg,
        run_dir=folder,
        eval_fn=lambda m: _evaluate(m, windows, mqar_x, mqar_y),
        resume=True,
        desc=job["folder"],
        on_step=step_done,
        tokens_per_batch=cfg.batch_size * exp.seq_len,
    )
    kv_bytes, state_bytes = cache_bytes(model, exp.seq_len)
    pattern = model.config.block_pattern
    record = {
        "mixer": job["mixer"],
        "ratio": ratio_label(ratio),
        "pattern": pattern,
        "softmax_layers": pattern.count("A"),
        "params": model.num_params(),
        "kv_bytes_per_token": kv_bytes,
        "state_bytes": state_bytes,
        "val_bpb": result.eval["val_bpb"],
        "mqar_recall": result.eval["mqar_recall"],
        "final_loss": result.final_loss,
        "first_losses": result.losses[:5],
        "train_seconds": round(result.train_seconds, 2),
        "cpu_seconds": round(time.process_time() - cpu0, 1),  # this process only (this call's share)
        "steps": result.steps,
    }
    atomic_write_json(done, record)
    return record


def _order(results: list[dict]) -> list[dict]:
    mixers = [m for m in LINEAR_MIXERS if any(r["mixer"] == m for r in results)]
    rank = {m: i for i, m in enumerate([*mixers, SOFTMAX])}
    return sorted(results, key=lambda r: (rank.get(r["mixer"], 99), r["softmax_layers"]))


def table(results: list[dict]) -> str:
    header = [
        "mixer",
        "ratio",
        "pattern",
        "params",
        "KV B/token",
        "state B",
        "val bpb",
        "MQAR recall",
        "cpu s",
    ]
    rows = [
        [r["mixer"], r["ratio"], r["pattern"], r["params"], r["kv_bytes_per_token"], r["state_bytes"],
         r["val_bpb"], r["mqar_recall"], r["cpu_seconds"]]
        for r in _order(results)
    ]  # fmt: skip
    return format_table(header, rows)


def _curves(results: list[dict]) -> dict[str, list[dict]]:
    """Per mixer, its runs by increasing softmax layers, ending with the shared all-softmax run."""
    softmax = [r for r in results if r["mixer"] == SOFTMAX]
    out = {}
    for mixer in LINEAR_MIXERS:
        own = sorted((r for r in results if r["mixer"] == mixer), key=lambda r: r["softmax_layers"])
        if own:
            out[mixer] = own + softmax
    return out


PAPER_EXPECTS = [
    "language modelling roughly flat across linear:full ratios",
    "recall rises steeply once at least one softmax layer is present",
    "Gated DeltaNet hybrids need fewer softmax layers than GLA hybrids for the same recall",
    "recommended linear:full ratio 3:1 to 6:1 (Transformer-level recall, small KV cache)",
]


def expectations(results: list[dict], exp: HybridRatioExperiment) -> list[str]:
    """For each claim of the paper, what these numbers show (every verdict is computed from them)."""
    curves = _curves(results)
    softmax = next((r for r in results if r["mixer"] == SOFTMAX), None)
    reference = softmax["mqar_recall"] if softmax else max((r["mqar_recall"] for r in results), default=0.0)
    target = exp.recall_target * reference
    ref_name = "all-softmax" if softmax else "the best run (no all-softmax run)"
    lines = [f"1. {PAPER_EXPECTS[0]}: {_lm_flat(curves, exp)}"]
    if reference < exp.recall_margin:
        why = (
            f"not measurable: {ref_name} recalls {reference:.3f} < {exp.recall_margin} (chance 1/128 = 0.008), "
            "so no model learned MQAR; train longer (more steps or --preset full)"
        )
        return lines + [f"{i}. {claim}: {why}" for i, claim in enumerate(PAPER_EXPECTS[1:], start=2)]
    lines.append(f"2. {PAPER_EXPECTS[1]}: {_recall_steep(curves, exp)}")
    needed = {m: _layers_needed(runs, target) for m, runs in curves.items()}
    basis = (
        f"softmax layers needed for recall >= {target:.3f} ({exp.recall_target:g} x {ref_name}): "
        + "; ".join(f"{m} {'never' if n is None else n}" for m, n in needed.items())
    )
    lines.append(f"3. {PAPER_EXPECTS[2]}: {_gdn_vs_gla(curves, needed, exp)} ({basis})")
    lines.append(f"4. {PAPER_EXPECTS[3]}: {_recommended(curves, results, target, exp)}")
    return lines


def _lm_flat(curves: dict[str, list[dict]], exp: HybridRatioExperiment) -> str:
    flags, notes = [], []
    for mixer, runs in curves.items():
        if len(runs) < 2:
            continue
        bpbs = [r["val_bpb"] for r in runs]
        spread = (max(bpbs) - min(bpbs)) / (sum(bpbs) / len(bpbs))
        flags.append(spread <= exp.lm_flat_tolerance)
        notes.append(f"{mixer} {min(bpbs):.3f}-{max(bpbs):.3f} ({100 * spread:.1f}%)")
    rule = f"flat = max - min <= {100 * exp.lm_flat_tolerance:g}% of the mean"
    return f"{_verdict(flags, 'flat', 'not flat')} (bpb over each mixer's ratios: {'; '.join(notes) or 'n/a'}; {rule})"


def _recall_steep(curves: dict[str, list[dict]], exp: HybridRatioExperiment) -> str:
    flags, notes = [], []
    for mixer, runs in curves.items():
        linear = next((r for r in runs if r["softmax_layers"] == 0), None)
        hybrids = [r for r in runs if r["softmax_layers"] > 0]
        if linear is None or not hybrids:
            continue
        first = hybrids[0]
        jump = first["mqar_recall"] - linear["mqar_recall"]
        gain = max(r["mqar_recall"] for r in hybrids) - linear["mqar_recall"]
        flags.append(jump >= exp.recall_margin and jump >= 0.5 * gain)
        notes.append(f"{mixer} {linear['mqar_recall']:.3f} -> {first['mqar_recall']:.3f} at {first['ratio']}")
    rule = f"steep = a jump >= {exp.recall_margin:g} that is at least half of the largest gain"
    return f"{_verdict(flags, 'shown', 'not shown')} (recall all-linear -> first hybrid: {'; '.join(notes) or 'n/a'}; {rule})"


def _gdn_vs_gla(
    curves: dict[str, list[dict]], needed: dict[str, int | None], exp: HybridRatioExperiment
) -> str:
    if "gla" not in needed or "gated_deltanet" not in needed:
        return "not measured (needs gla and gated_deltanet in --mixers)"
    g, n = needed["gla"], needed["gated_deltanet"]
    if n is not None and (g is None or n < g):
        return "shown"
    if g is not None and (n is None or g < n):
        return "contradicted: GLA needs fewer"
    diffs = [
        a["mqar_recall"] - b["mqar_recall"]
        for a, b in zip(curves["gated_deltanet"], curves["gla"])
        if a["softmax_layers"] == b["softmax_layers"] and 0 < a["softmax_layers"] < exp.n_layers
    ]
    mean = sum(diffs) / len(diffs) if diffs else 0.0
    lead = (
        "no difference"
        if abs(mean) < exp.recall_margin
        else "Gated DeltaNet ahead"
        if mean > 0
        else "GLA ahead"
    )
    what = "neither reaches the target" if g is None else "they need the same number"
    return f"not shown: {what}; at equal hybrid ratios Gated DeltaNet - GLA recall = {mean:+.3f} on average ({lead})"


def _recommended(curves: dict[str, list[dict]], results: list[dict], target: float, exp) -> str:
    """The most linear hybrid with near-softmax recall and near-best bpb, per mixer, against 3:1-6:1."""
    best_bpb = min(r["val_bpb"] for r in results)
    flags, notes = [], []
    for mixer, runs in curves.items():
        pick = next(
            (
                r for r in runs
                if 0 < r["softmax_layers"] < exp.n_layers and r["mqar_recall"] >= target
                and r["val_bpb"] <= best_bpb * (1 + exp.lm_flat_tolerance)
            ),
            None,
        )  # fmt: skip
        if pick is None:
            flags.append(False)
            notes.append(f"{mixer} none of its hybrids")
            continue
        per = _linear_per_softmax(pick)
        flags.append(3 <= per <= 6)
        where = (
            "in the range"
            if 3 <= per <= 6
            else "more linear than the range"
            if per > 6
            else "below the range"
        )
        notes.append(f"{mixer} {pick['ratio']} ({where})")
    rule = f"recall >= {target:.3f} and bpb within {100 * exp.lm_flat_tolerance:g}% of the best"
    return f"{_verdict(flags, 'shown', 'not shown')} (most linear hybrid with {rule}: {'; '.join(notes)})"


def _linear_per_softmax(run: dict) -> float:
    n_soft = run["softmax_layers"]
    return math.inf if n_soft == 0 else (len(run["pattern"]) - n_soft) / n_soft


def _layers_needed(runs: list[dict], target: float) -> int | None:
    return next((r["softmax_layers"] for r in runs if r["mqar_recall"] >= target), None)


def _verdict(flags: list[bool], yes: str, no: str) -> str:
    if not flags:
        return "not measured"
    if all(flags):
        return yes + (" for every mixer" if len(flags) > 1 else "")
    if not any(flags):
        return no
    return f"{yes} for {sum(flags)} of {len(flags)} mixers"


def plot(results: list[dict], run_dir: RunDir) -> None:
    import matplotlib.pyplot as plt

    curves = _curves(results)
    if not curves:
        return
    n_layers = len(results[0]["pattern"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (mixer, runs) in enumerate(curves.items()):
        xs = [r["softmax_layers"] for r in runs]
        for ax, key in zip(axes, ("mqar_recall", "val_bpb")):
            ax.plot(xs, [r[key] for r in runs], marker="osD^"[i % 4], color=plt.cm.tab10(i), label=mixer)
    ticks = sorted({r["softmax_layers"]: r["ratio"] for r in results}.items())
    for ax, title in zip(axes, ("MQAR recall (held-out)", "validation bits per byte")):
        ax.set_xticks([t for t, _ in ticks], [f"{lab}\n({t}/{n_layers} A)" for t, lab in ticks], fontsize=8)
        ax.set_xlabel("linear:full ratio (softmax layers)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(1 / 128, color="grey", linestyle=":", label="chance (1/128)")
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    run_dir.save_figure("hybrid_ratio.png", fig)


def _report_text(results: list[dict], exp: HybridRatioExperiment) -> str:
    lines = [table(results), "", "The paper (arXiv 2507.06457) leads one to expect, and this run shows:"]
    return "\n".join(lines + ["  " + line for line in expectations(results, exp)])


def check(exp: HybridRatioExperiment) -> None:
    """Build one small model per mixer so that impossible widths or heads fail before any file is written."""
    for mixer in exp.mixer_list():
        small = HybridRatioExperiment(**{**to_dict(exp), "n_layers": 2, "ratios": ["1:1"]})
        try:
            build_model(small, mixer, (1, 1))
        except ValueError as err:
            raise ValueError(
                f"d_model={exp.d_model}, num_heads={exp.num_heads} do not fit {mixer}: {err}"
            ) from None


def run(exp: HybridRatioExperiment, run_dir: RunDir) -> dict[str, Any]:
    jobs = _jobs(exp)
    folder = {SOFTMAX: "softmax"}
    args = [
        ({"experiment": to_dict(exp), "mixer": m, "ratio": list(r),
          "folder": str(run_dir.path / (folder.get(m) or f"{m}-{ratio_label(r).replace(':', 'to')}"))},)
        for m, r in jobs
    ]  # fmt: skip
    workers = exp.workers or default_workers()
    print(f"hybrid-ratio: {len(jobs)} training runs of {exp.steps} steps on {workers} worker(s)", flush=True)
    t0, cpu0 = time.perf_counter(), time.process_time()
    results = run_jobs(
        _train_one,
        args,
        workers,
        desc="hybrid-ratio",
        costs=[_job_cost(m, r) for m, r in jobs],
        steps=[exp.steps] * len(jobs),
    )
    print(_report_text(results, exp))
    plot(results, run_dir)
    return {
        "results": _order(results),
        "expectations": expectations(results, exp),
        "seconds": round(time.perf_counter() - t0, 1),
        "job_cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
        "main_cpu_seconds": round(time.process_time() - cpu0, 1),
    }


def report(run_dir: RunDir) -> str:
    summary = run_dir.read_summary()
    exp = HybridRatioExperiment(**run_dir.read_config())
    plot(summary["results"], run_dir)
    return _report_text(summary["results"], exp)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """MQAR recall, bits per byte and KV-cache bytes per token for each mixer and linear:full ratio."""
    out: dict[str, float] = {}
    for r in summary.get("results", []):
        name = r["mixer"] if r["ratio"] == r["mixer"] else f"{r['mixer']} {r['ratio']}"
        out[f"{name} recall"] = r["mqar_recall"]
        out[f"{name} bpb"] = r["val_bpb"]
        out[f"{name} KV bytes/token"] = r["kv_bytes_per_token"]
    return out


RECIPE = Recipe(
    name="hybrid-ratio",
    help="linear:full hybrid ratios (arXiv 2507.06457): bits/byte, MQAR recall, KV bytes per token",
    config=HybridRatioExperiment,
    presets={"default": HybridRatioExperiment, "smoke": _smoke, "full": _full},
    run=run,
    report=report,
    flags=(
        Flag("--mixers", "mixers", f"comma-separated linear mixers (subset of {','.join(LINEAR_MIXERS)})"),
    ),
    check=check,
    resume_may_change=("workers",),
    headline=headline,
)
