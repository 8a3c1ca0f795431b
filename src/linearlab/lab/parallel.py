"""Independent training jobs in worker processes, one intra-op thread each.

On a small CPU two single-threaded jobs finish sooner than one job on two threads for the lab's
small models, so recipes that train many variants run them side by side.

With ``steps`` given, progress is counted in training steps across all jobs rather than in finished
jobs: a job calls :func:`step_done` after each optimizer step (e.g. as the train loop's ``on_step``
hook), each job has a slot in one shared counter array, and the parent's bar moves (with an ETA from
the step rate) within seconds of the start instead of sitting at 0/9 until the first job ends.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

from tqdm.auto import tqdm

# where this process counts finished steps: a shared array of one slot per job (None: not counting)
_counts: Any = None
_slot: int = 0
_after_count: Callable[[], None] | None = None  # in-process runs refresh the bar on every step


def step_done(*_hook_args: Any) -> None:
    """Count one finished training step of the running job towards :func:`run_jobs`' bar.

    A no-op outside ``run_jobs(..., steps=...)``. Its signature fits the train loop's
    ``on_step(step, model)`` hook: ``train(..., on_step=step_done)``.
    """
    if _counts is not None:
        _counts[_slot] += 1  # one writer per slot: no lock needed
        if _after_count is not None:
            _after_count()


def _init_worker(counts: Any = None) -> None:
    import torch

    global _counts
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _counts = counts


def _run_in_slot(fn: Callable[..., dict], slot: int, job: tuple) -> dict:
    global _slot
    _slot = slot
    return fn(*job)


def run_jobs(
    fn: Callable[..., dict],
    jobs: list[tuple],
    workers: int,
    desc: str,
    costs: Sequence[float] | None = None,
    steps: Sequence[int] | None = None,
) -> list[dict]:
    """Run ``fn(*job)`` for every job, in ``workers`` processes (in-process when 1).

    Results come back in the order of ``jobs``; with ``costs`` the dearest jobs are started first so
    that the workers finish together instead of one running the slowest job alone at the end.
    With ``steps`` (training steps of each job) the bar counts the steps jobs report through
    :func:`step_done`; a finished job counts in full (steps skipped by a resume included).
    """
    global _counts, _slot, _after_count
    if steps is not None and len(steps) != len(jobs):
        raise ValueError(f"steps: expected one count per job ({len(jobs)}), got {len(steps)}")
    results: list[dict | None] = [None] * len(jobs)
    order = sorted(range(len(jobs)), key=lambda i: -(costs[i] if costs else 0.0))
    sizes = list(steps) if steps is not None else [1] * len(jobs)
    finished = [False] * len(jobs)
    bar = tqdm(total=sum(sizes), desc=desc, unit="step" if steps is not None else "job", leave=False)

    def refresh(counts: Any) -> None:
        done = sum(
            n if end else min(n, counts[i] if counts is not None else 0)
            for i, (n, end) in enumerate(zip(sizes, finished))
        )
        bar.update(done - bar.n)

    if workers <= 1:
        counts = [0] * len(jobs) if steps is not None else None
        _counts, _after_count = counts, lambda: refresh(counts)
        try:
            for i in order:
                _slot = i
                results[i] = fn(*jobs[i])
                finished[i] = True
                refresh(counts)
        finally:
            _counts, _after_count = None, None
    else:
        ctx = mp.get_context("spawn")  # fork + torch threads can deadlock
        counts = ctx.Array("q", len(jobs), lock=False) if steps is not None else None
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(counts,)
        ) as pool:
            futures = {pool.submit(_run_in_slot, fn, i, jobs[i]): i for i in order}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[futures[fut]] = fut.result()
                    finished[futures[fut]] = True
                refresh(counts)
    bar.close()
    return [r for r in results if r is not None]


def default_workers() -> int:
    """Worker processes for independent jobs: the cores, at most two."""
    return max(1, min(2, os.cpu_count() or 1))
