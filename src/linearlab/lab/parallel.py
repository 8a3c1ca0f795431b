"""Independent training jobs in worker processes, one intra-op thread each.

On a small CPU two single-threaded jobs finish sooner than one job on two threads for the lab's
small models, so recipes that train many variants run them side by side.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_jobs(
    fn: Callable[..., dict], jobs: list[tuple], workers: int, desc: str, costs: Sequence[float] | None = None
) -> list[dict]:
    """Run ``fn(*job)`` for every job, in ``workers`` processes (in-process when 1).

    Results come back in the order of ``jobs``; with ``costs`` the dearest jobs are started first so
    that the workers finish together instead of one running the slowest job alone at the end.
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
    """Worker processes for independent jobs: the cores, at most two."""
    return max(1, min(2, os.cpu_count() or 1))
