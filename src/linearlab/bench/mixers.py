"""``linearlab bench mixers``: training throughput and decoding cost of every registered mixer.

Two measurements, one layer each, at ``d_model = 256``, batch 1, default mixer kwargs:

1. **train**: forward + backward tokens/s at T = 2048 (T = 512 with ``--quick``) and the ratio to
   softmax attention on the same input;
2. **decode**: wall time per generated token after prefilling a context of 1k, 8k and 32k tokens
   (1k, 2k with ``--quick``): softmax with its growing KV cache against every other mixer with
   its recurrent state. The prefill runs once, in pieces of ``--prefill-chunk`` tokens with the
   state carried (same result as one call, bounded memory), then ``--steps`` single-token calls
   are timed. The state size after the context is reported too: it grows with the context only
   for the softmax KV cache.

Results go to stdout as two tables and to a JSON file (default ``bench_results/mixers.json``,
written atomically). Times on a shared machine are noisy: compare ratios from one run, and use
``--threads 1`` when other processes keep the cores busy (a multi-threaded tiny op then waits for
a descheduled worker thread, which can make a 0.5 ms decode step take 100+ ms).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from linearlab.bench.timing import fmt_ratio, median_time
from linearlab.io import atomic_write_json
from linearlab.layers.registry import create_mixer, list_mixers

BASELINE = "softmax"
D_MODEL = 256
#: the issue's training-speed goals: (mixer, its kwargs, reference mixer, minimum tokens/s ratio)
PAIR_GOALS = (
    ("mom", {"topk": 1}, "gated_deltanet", 0.45),  # top-1 + shared memory: two memories per token
    ("lssl", {}, BASELINE, 1.0),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="linearlab bench mixers", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="T=512 training, contexts 1k and 2k, 1 repeat")
    p.add_argument("--json", type=Path, default=Path("bench_results/mixers.json"), help="output JSON path")
    p.add_argument("--mixers", default=None, help="comma-separated mixer names (default: all registered)")
    p.add_argument("--steps", type=int, default=16, help="timed decode steps per context (default 16)")
    p.add_argument("--prefill-chunk", type=int, default=2048, help="prefill piece length (default 2048)")
    p.add_argument("--train-len", type=int, default=None, help="override the training sequence length")
    p.add_argument("--contexts", default=None, help="override the decode contexts, e.g. 1024,4096")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's default); on a busy machine 1 avoids waits on "
        "descheduled worker threads that inflate small decode steps 100x",
    )
    return p


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        settings = {"train_T": 512, "contexts": [1024, 2048], "repeats": 1}
    else:
        settings = {"train_T": 2048, "contexts": [1024, 8192, 32768], "repeats": 3}
    if args.train_len is not None:
        if args.train_len < 1:
            raise ValueError(f"--train-len: expected >= 1, got {args.train_len}")
        settings["train_T"] = args.train_len
    if args.contexts is not None:
        try:
            contexts = [int(c) for c in args.contexts.split(",") if c.strip()]
        except ValueError:
            contexts = []
        if not contexts or min(contexts) < 1:
            raise ValueError(f"--contexts: expected comma-separated positive ints, got {args.contexts!r}")
        settings["contexts"] = contexts
    return settings


def _select_mixers(spec: str | None) -> list[str]:
    registered = list_mixers()
    if spec is None:
        return registered
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"--mixers: unknown mixer(s) {unknown}; registered: {', '.join(registered)}")
    return names


def _train_step(name: str, seq_len: int, gen: torch.Generator, **kwargs: Any):
    """A closure running one forward + backward of a fresh ``name`` layer on ``x: [1, seq_len, 256]``."""
    mixer = create_mixer(name, d_model=D_MODEL, **kwargs)
    mixer.train()
    x = torch.randn(1, seq_len, D_MODEL, generator=gen, requires_grad=True)

    def step() -> None:
        y, _ = mixer(x)
        y.sum().backward()
        x.grad = None
        mixer.zero_grad(set_to_none=True)

    return step


def bench_train(name: str, seq_len: int, repeats: int, gen: torch.Generator) -> dict[str, Any]:
    """Forward + backward throughput of one mixer layer on ``x: [1, seq_len, 256]``."""
    seconds = median_time(_train_step(name, seq_len, gen), repeats=repeats, warmup=1)
    return {"seconds": seconds, "tokens_per_s": seq_len / seconds}


def bench_pair(
    name: str, kwargs: dict[str, Any], reference: str, seq_len: int, repeats: int, gen: torch.Generator
) -> dict[str, Any]:
    """Tokens/s of ``name(**kwargs)`` over ``reference``'s, forward + backward at ``seq_len``.

    The two layers' steps alternate and each keeps its fastest of ``max(repeats, 3)`` runs, so a
    burst of load from other processes hits both alike and the ratio stays meaningful on a
    shared machine (the absolute times do not).
    """
    steps = [_train_step(name, seq_len, gen, **kwargs), _train_step(reference, seq_len, gen)]
    for step in steps:
        step()  # warm-up
    best = [float("inf"), float("inf")]
    for _ in range(max(repeats, 3)):
        for i, step in enumerate(steps):
            t0 = time.perf_counter()
            step()
            best[i] = min(best[i], time.perf_counter() - t0)
    return {"seconds": best[0], "reference_seconds": best[1], "ratio": best[1] / best[0]}


def _pair_goals(names: list[str], seq_len: int, repeats: int, gen: torch.Generator) -> dict[str, Any]:
    """:data:`PAIR_GOALS` whose two mixers are both selected, each measured by :func:`bench_pair`."""
    out: dict[str, Any] = {}
    for name, kwargs, reference, goal in PAIR_GOALS:
        if name not in names or reference not in names:
            continue
        label = name + ("(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")" if kwargs else "")
        r = _safe(bench_pair, name, kwargs, reference, seq_len, repeats, gen)
        r.update({"reference": reference, "goal": goal})
        if "ratio" in r:
            r["met"] = r["ratio"] >= goal
            print(
                f"{label:18s} tokens/s vs {reference}: {r['ratio']:.2f}x (goal >= {goal:.2f}x; "
                f"alternating runs, fastest of each, T={seq_len})"
            )
        else:
            print(f"{label:18s} vs {reference}: {r['error']}")
        out[label] = r
    return out


@torch.no_grad()
def _prefill(mixer: torch.nn.Module, context: int, piece: int, gen: torch.Generator) -> Any:
    state = None
    for start in range(0, context, piece):
        x = torch.randn(1, min(piece, context - start), D_MODEL, generator=gen)
        _, state = mixer(x, state)
    return state


@torch.no_grad()
def bench_decode(name: str, context: int, steps: int, piece: int, gen: torch.Generator) -> dict[str, Any]:
    """Per-token decode time of one mixer layer after a ``context``-token prefill."""
    mixer = create_mixer(name, d_model=D_MODEL).eval()
    t0 = time.perf_counter()
    state = _prefill(mixer, context, piece, gen)
    prefill_s = time.perf_counter() - t0
    tokens = torch.randn(steps + 1, 1, 1, D_MODEL, generator=gen)
    _, state = mixer(tokens[0], state)  # warm-up step
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        _, state = mixer(tokens[i + 1], state)
        times.append(time.perf_counter() - t0)
    return {
        "ms_per_token": statistics.median(times) * 1e3,
        # the fastest step is the least disturbed by other processes on a shared machine
        "ms_per_token_min": min(times) * 1e3,
        "prefill_s": prefill_s,
        "state_size": int(mixer.state_size(context)),
    }


def _safe(fn, *args) -> dict[str, Any]:
    # one failing mixer (bug, out of memory) must not cost the rest of a long benchmark
    try:
        return fn(*args)
    except (RuntimeError, ValueError, MemoryError) as err:
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or base is None or base == 0 else value / base


def _train_table(results: dict[str, dict[str, Any]], seq_len: int) -> str:
    base = results.get(BASELINE, {}).get("tokens_per_s")
    lines = [f"forward+backward, one layer, d_model={D_MODEL}, B=1, T={seq_len}", ""]
    lines.append(f"{'mixer':18s} {'tokens/s':>10s} {'ms':>9s} {'vs ' + BASELINE:>11s}")
    for name, r in results.items():
        if "error" in r:
            lines.append(f"{name:18s} error: {r['error']}")
            continue
        ratio = fmt_ratio(_ratio(r["tokens_per_s"], base))
        lines.append(f"{name:18s} {r['tokens_per_s']:10.0f} {r['seconds'] * 1e3:9.1f} {ratio:>11s}")
    return "\n".join(lines)


def _decode_table(results: dict[str, dict[str, dict[str, Any]]], contexts: list[int]) -> str:
    lines = [
        f"decode ms/token after a prefill of C tokens (speed-up vs {BASELINE} KV cache; state scalars)",
        "",
    ]
    head = f"{'mixer':18s}" + "".join(f" {'C=' + str(c):>28s}" for c in contexts)
    lines.append(head)
    for name, per_ctx in results.items():
        cells = []
        for c in contexts:
            r = per_ctx.get(str(c), {})
            if "error" in r or not r:
                cells.append(f" {'error':>28s}")
                continue
            base = results.get(BASELINE, {}).get(str(c), {}).get("ms_per_token")
            speedup = fmt_ratio(_ratio(base, r["ms_per_token"]))
            cells.append(f" {r['ms_per_token']:8.2f} ms {speedup:>7s} {r['state_size']:>9d}")
        lines.append(f"{name:18s}" + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``argv`` as for ``linearlab bench mixers`` (see ``--help``)."""
    args = _parser().parse_args(argv)
    if args.steps < 1:
        raise SystemExit(f"--steps: expected >= 1, got {args.steps}")
    if args.prefill_chunk < 1:
        raise SystemExit(f"--prefill-chunk: expected >= 1, got {args.prefill_chunk}")
    try:
        names = _select_mixers(args.mixers)
        settings = _settings(args)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads: expected >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(
        f"linearlab bench mixers | torch {torch.__version__} | threads {torch.get_num_threads()} | "
        f"{platform.processor() or platform.machine()} | {'quick' if args.quick else 'full'}"
    )
    show = sys.stderr.isatty()

    train: dict[str, dict[str, Any]] = {}
    for name in tqdm(names, desc="train", disable=not show):
        train[name] = _safe(bench_train, name, settings["train_T"], settings["repeats"], gen)
    print()
    print(_train_table(train, settings["train_T"]))
    print()
    goals = _pair_goals(names, settings["train_T"], settings["repeats"], gen)

    decode: dict[str, dict[str, dict[str, Any]]] = {}
    jobs = [(n, c) for n in names for c in settings["contexts"]]
    for name, ctx in tqdm(jobs, desc="decode", disable=not show):
        decode.setdefault(name, {})[str(ctx)] = _safe(
            bench_decode, name, ctx, args.steps, args.prefill_chunk, gen
        )
    print()
    print(_decode_table(decode, settings["contexts"]))

    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "quick": args.quick,
        "d_model": D_MODEL,
        "baseline": BASELINE,
        "train_seq_len": settings["train_T"],
        "decode_steps": args.steps,
        "train": train,
        "pair_goals": goals,
        "decode": decode,
    }
    path = atomic_write_json(args.json, report)
    print(f"\nwrote {path}")
    return 0
