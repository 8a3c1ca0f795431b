"""Helpers shared by the sequence-model lab recipes (``mqar``, ``lm``).

A *variant* is a label for one mixer configuration, e.g. ``"hedgehog"`` ->
``("linear_attention", {"feature_map": "hedgehog"})``. Variants are trained in worker processes
(one intra-op thread each), because on a small CPU two single-threaded jobs finish sooner than
one job on two threads for models this small.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

# label -> (registered mixer, kwargs); the paper mixers the lab compares
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "softmax": ("softmax", {}),
    "sliding_window": ("sliding_window", {"window_size": 16}),
    "linear_elu1": ("linear_attention", {"feature_map": "elu1"}),
    "hedgehog": ("linear_attention", {"feature_map": "hedgehog"}),
    "retnet": ("retnet", {}),
    "lightning": ("lightning", {}),
    "transnormer": ("transnormer", {}),
    "slab": ("slab", {}),
    "gla": ("gla", {}),
    "deltanet": ("deltanet", {}),
    "gated_deltanet": ("gated_deltanet", {}),
    # top-1 routing over 4 memories (+ the shared one): MoM's recall benefit at about 2x DeltaNet's cost
    "mom": ("mom", {"num_memories": 4, "topk": 1}),
    "lssl": ("lssl", {}),
}


# relative training cost at the lab's sizes: the slowest jobs are started first so that the
# workers finish together instead of one of them running the slowest job alone at the end
COST_HINT: dict[str, float] = {"mom": 3.0, "lssl": 2.0, "gated_deltanet": 1.6, "deltanet": 1.5, "retnet": 1.2}


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """``"softmax,gla"`` -> ``["softmax", "gla"]``; unknown labels raise a ValueError listing the known ones."""
    labels = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip()]
    unknown = [lab for lab in labels if lab not in VARIANTS]
    if unknown:
        raise ValueError(f"mixers: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not labels:
        raise ValueError("mixers: give at least one mixer")
    return labels


def variant(label: str, num_heads: int | None = None) -> tuple[str, dict[str, Any]]:
    """Mixer name and kwargs for ``label`` (adds ``num_heads`` if given)."""
    name, kwargs = VARIANTS[label]
    kwargs = dict(kwargs)
    if num_heads is not None and name not in ("lssl", "base_conv"):
        kwargs["num_heads"] = num_heads
    return name, kwargs


def refuse_existing_run(run_dir, resume: bool) -> None:
    """A run directory that already holds a run is only reused with ``--resume``."""
    if run_dir.file("config.json").exists() and not resume:
        raise ValueError(f"--out: {str(run_dir.path)!r} already holds a run; pass --resume to continue it")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_jobs(
    fn: Callable[..., dict], jobs: list[tuple], workers: int, desc: str, costs: Sequence[float] | None = None
) -> list[dict]:
    """Run ``fn(*job)`` for every job, in ``workers`` processes (in-process when 1).

    Results come back in the order of ``jobs``; with ``costs`` the dearest jobs are started first.
    """
    results: list[dict | None] = [None] * len(jobs)
    order = sorted(range(len(jobs)), key=lambda i: -(costs[i] if costs else 0.0))
    bar = tqdm(total=len(jobs), desc=desc, leave=False)
    if workers <= 1:
        for i in order:
            results[i] = fn(*jobs[i])
            bar.update(1)
    else:
        ctx = mp.get_context("spawn")  # fork + torch threads can deadlock
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(fn, *jobs[i]): i for i in order}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    return [r for r in results if r is not None]


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:.3f}"
    return str(c)
