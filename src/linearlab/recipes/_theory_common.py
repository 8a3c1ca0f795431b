"""Shared plumbing for the in-context-learning and deep-linear recipes (not a recipe itself)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch

from linearlab.config import apply_overrides, to_dict
from linearlab.runs import RunDir

C = TypeVar("C")


def setup(args: argparse.Namespace, run_dir: RunDir, default: C, smoke: Callable[[C], C]) -> C:
    """Apply ``--smoke`` (shrink) then ``--set`` overrides, write ``config.json``, seed torch and use one
    intra-op thread."""
    cfg = smoke(default) if getattr(args, "smoke", False) else default
    cfg = apply_overrides(cfg, list(getattr(args, "set", []) or []))
    record = to_dict(cfg)
    record["smoke"] = bool(getattr(args, "smoke", False))
    run_dir.write_config(record)
    torch.manual_seed(getattr(cfg, "seed", 0))
    # these recipes move tiny tensors: extra intra-op threads only add synchronisation, and on a
    # shared machine their spin-waiting costs several times the work itself
    torch.set_num_threads(1)
    return cfg


def progress(iterable: Iterable, smoke: bool, desc: str, total: int | None = None):
    """A tqdm bar on a TTY outside ``--smoke``; the bare iterable otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=smoke or not sys.stderr.isatty(), leave=False)


def cosine_lr(step: int, total: int, base: float, warmup: int = 0) -> float:
    """Linear warm-up then cosine decay to zero (a decayed rate lets Adam settle on the optimum)."""
    import math

    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))


def report_from_summary(run_dir: RunDir, formatter: Callable[[dict[str, Any]], str]) -> str:
    """Rebuild a recipe's printed table from its ``summary.json`` alone."""
    summary = json.loads(run_dir.file("summary.json").read_text(encoding="utf-8"))
    return formatter(summary)


def fmt(x: float, digits: int = 4) -> str:
    """A compact float for tables (``inf``/``nan`` spelled out)."""
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"
