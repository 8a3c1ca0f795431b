"""Small timing helpers shared by the benchmarks."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, min_seconds: float = 0.0) -> float:
    """Median wall time of ``fn()`` in seconds after ``warmup`` runs.

    Runs at least ``repeats`` times and keeps going until ``min_seconds`` have been spent, so fast
    calls get many samples and a single preempted one cannot move the median.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < max(1, repeats) or sum(times) < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse; returns whether it took effect.

    By default glibc serves every block of 32 MiB or more with a fresh ``mmap`` and unmaps it on
    free, so a tensor that large is page-faulted (and zeroed by the kernel) again on every call,
    about 10 ms per 32 MiB here, while smaller buffers are recycled from the heap. That cost
    appears only above one size, so it would distort a per-token comparison of a long and a short
    sequence. Raising the mmap and trim thresholds (what jemalloc / tcmalloc do by design, and what
    PyTorch's CPU tuning guide recommends) recycles large blocks too. Process-wide and not undone.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_trim_threshold, m_mmap_threshold, limit = -1, -3, 1 << 30
    return bool(mallopt(m_mmap_threshold, limit)) and bool(mallopt(m_trim_threshold, limit))
