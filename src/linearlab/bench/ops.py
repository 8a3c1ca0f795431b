"""``linearlab bench ops``: speed and memory of every op family against its references.

For each family at B=1, H=4, K=V=64 and each T: median forward and forward+backward time of the
chunked form, the naive token loop (T <= 2048) and causal SDPA on the same shapes, their ratios;
peak memory of the chunked forward+backward at T = 65536 (measured in a fresh subprocess as the
growth of its peak resident set size, inputs included); and the decoding form's per-token step
time after prefilling contexts of growing length (KV-cache SDPA for comparison).

Kernel efficiency (``--efficiency-t``, default T = 2048): the FLOPs each chunk forward+backward
executes, counted by ``torch.utils.flop_counter.FlopCounterMode``, over its median time, as a
fraction of this machine's batched 64x64 float32 matmul rate measured in the same run (the
chunk kernels' tile shape). Crossover (``--crossover``): the smallest tried T from which each
chunk form's forward+backward beats causal SDPA's. On a shared machine compare these ratios
within one run; the absolute rates follow the load.

Allocator: glibc page-faults every buffer of 32 MiB or more afresh on each call (smaller ones are
recycled), which adds ~10 ms per output tensor at T = 32768 and none at T = 2048. So the run
first measures the per-token cost ratio of the longest T to T = 2048 (or to the shortest T) with
glibc's defaults, then tells malloc to keep freed memory (``bench.timing.reuse_freed_memory``, as
jemalloc/tcmalloc do) and measures everything else with that; both ratios are printed and saved.
``--system-malloc`` keeps the defaults throughout. The peak-memory subprocess always uses the default allocator.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from linearlab import ops
from linearlab.bench.timing import fmt_ms, fmt_ratio, median_time, reuse_freed_memory
from linearlab.io import atomic_write_json

B, H, D = 1, 4, 64


@dataclass(frozen=True)
class Family:
    """How to call one op family: inputs builder + its chunk, recurrent and naive functions."""

    name: str
    chunk: Callable
    recurrent: Callable
    naive: Callable
    gates: Callable[[int, torch.Generator], dict[str, torch.Tensor]]
    positional: tuple[str, ...] = ()  # gate names passed positionally after q, k, v
    normalize_keys: bool = False


#: each chunk-form timing samples for at least this long by default (fast calls get many repeats)
MIN_SECONDS = 0.5


def _no_gates(T, gen):
    return {}


def _scalar_gate(T, gen):
    return {"g": F.logsigmoid(torch.randn(B, T, H, generator=gen)) / 16}


def _key_gate(T, gen):
    return {"g": F.logsigmoid(torch.randn(B, T, H, D, generator=gen)) / 16}


def _beta(T, gen):
    return {"beta": torch.rand(B, T, H, generator=gen).sigmoid()}


def _gated_beta(T, gen):
    return {**_scalar_gate(T, gen), **_beta(T, gen)}


def _lightning(fn):
    # layer 0 of 2: the TransNormerLLM decay schedule's strongest layer
    return lambda q, k, v, **kw: fn(q, k, v, 0, 2, **kw)


def _lightning_naive(q, k, v, **kw):
    g_gamma = ops.lightning_attn_decay(H, 0, 2)
    return ops.naive_recurrent_simple_gla(q, k, v, g_gamma=g_gamma, **kw)


def families() -> list[Family]:
    return [
        Family("linear_attn", partial(ops.chunk_linear_attn, normalize=False), ops.fused_recurrent_linear_attn, ops.naive_recurrent_linear_attn, _no_gates),
        Family("simple_gla", ops.chunk_simple_gla, ops.fused_recurrent_simple_gla, ops.naive_recurrent_simple_gla, _scalar_gate),
        Family("lightning", _lightning(ops.chunk_lightning_attn), _lightning(ops.fused_recurrent_lightning_attn), _lightning_naive, _no_gates),
        Family("gla", ops.chunk_gla, ops.fused_recurrent_gla, ops.naive_recurrent_gla, _key_gate, positional=("g",)),
        Family("delta_rule", ops.chunk_delta_rule, ops.fused_recurrent_delta_rule, ops.naive_recurrent_delta_rule, _beta, positional=("beta",), normalize_keys=True),
        Family("gated_delta_rule", ops.chunk_gated_delta_rule, ops.fused_recurrent_gated_delta_rule, ops.naive_recurrent_gated_delta_rule, _gated_beta, positional=("g",), normalize_keys=True),
    ]  # fmt: skip


def make_inputs(fam: Family, T: int, seed: int = 0, requires_grad: bool = True):
    """``(args, kwargs)`` for one call: q, k, v ``[B, T, H, D]`` plus the family's gates."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, D, generator=gen)
    k = torch.randn(B, T, H, D, generator=gen)
    v = torch.randn(B, T, H, D, generator=gen)
    if fam.normalize_keys:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    gates = fam.gates(T, gen)
    tensors = [q, k, v] + [gates[n] for n in fam.positional]
    kwargs = {n: t for n, t in gates.items() if n not in fam.positional}
    for t in [*tensors, *kwargs.values()]:
        t.requires_grad_(requires_grad)
    return tensors, kwargs


def _fwd(fn, args, kwargs):
    with torch.no_grad():
        fn(*args, **kwargs)


def _fwd_bwd(fn, args, kwargs, do=None):
    """Forward + backward; pass the cotangent ``do`` to keep its allocation out of the timing."""
    o, _ = fn(*args, **kwargs)
    o.backward(torch.ones_like(o) if do is None else do)
    for t in [*args, *kwargs.values()]:
        t.grad = None


def _sdpa_inputs(T: int):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, T, D, generator=gen).requires_grad_() for _ in range(3)]


def _sdpa_fwd(qkv):
    with torch.no_grad():
        F.scaled_dot_product_attention(*qkv, is_causal=True)


def _sdpa_fwd_bwd(qkv, do):
    o = F.scaled_dot_product_attention(*qkv, is_causal=True)
    o.backward(do)
    for t in qkv:
        t.grad = None


def _chunk_fwdbwd_seconds(fam: Family, args, kwargs, repeats: int, min_seconds: float) -> float:
    """Median forward+backward time of the chunked form (cotangent of ones, allocated up front)."""
    do = torch.ones_like(args[2])  # the output has v's shape
    return median_time(partial(_fwd_bwd, fam.chunk, args, kwargs, do), repeats, min_seconds=min_seconds)


def bench_speed(
    fams: list[Family],
    lengths: list[int],
    naive_max_t: int,
    sdpa_max_t: int,
    repeats: int,
    min_seconds: float = MIN_SECONDS,
) -> list[dict]:
    rows = []
    sdpa_cache: dict[int, tuple[float, float]] = {}
    for T in lengths:
        if T <= sdpa_max_t:
            qkv = _sdpa_inputs(T)
            sdpa_cache[T] = (
                median_time(partial(_sdpa_fwd, qkv), repeats),
                median_time(partial(_sdpa_fwd_bwd, qkv, torch.ones_like(qkv[0])), repeats),
            )
        for fam in fams:
            args, kwargs = make_inputs(fam, T)
            do = torch.ones_like(args[2])  # the output has v's shape
            row = {"family": fam.name, "T": T}
            row["chunk_fwd"] = median_time(
                partial(_fwd, fam.chunk, args, kwargs), repeats, min_seconds=min_seconds
            )
            row["chunk_fwdbwd"] = _chunk_fwdbwd_seconds(fam, args, kwargs, repeats, min_seconds)
            if T <= naive_max_t:
                naive_reps = max(1, min(repeats, 3))
                row["naive_fwd"] = median_time(partial(_fwd, fam.naive, args, kwargs), naive_reps, warmup=0)
                row["naive_fwdbwd"] = median_time(
                    partial(_fwd_bwd, fam.naive, args, kwargs, do), naive_reps, warmup=0
                )
                row["speedup_vs_naive_fwdbwd"] = row["naive_fwdbwd"] / row["chunk_fwdbwd"]
            if T in sdpa_cache:
                row["sdpa_fwd"], row["sdpa_fwdbwd"] = sdpa_cache[T]
                row["speedup_vs_sdpa_fwdbwd"] = row["sdpa_fwdbwd"] / row["chunk_fwdbwd"]
            row["chunk_fwdbwd_us_per_token"] = row["chunk_fwdbwd"] / T * 1e6
            rows.append(row)
            print(_speed_line(row), flush=True)
    return rows


def bench_scaling(
    fams: list[Family], short: int, long: int, repeats: int, min_seconds: float = MIN_SECONDS
) -> list[dict]:
    """Per-token forward+backward cost at ``long`` over ``short`` tokens, under the current allocator."""
    rows = []
    for fam in fams:
        per_token = {}
        for T in (short, long):
            args, kwargs = make_inputs(fam, T)
            per_token[T] = _chunk_fwdbwd_seconds(fam, args, kwargs, repeats, min_seconds) / T
        rows.append(
            {"family": fam.name, "short": short, "long": long, "ratio": per_token[long] / per_token[short]}
        )
        print(f"{fam.name:17s} per-token cost T={long} / T={short}: {rows[-1]['ratio']:.2f}", flush=True)
    return rows


def _speed_line(r: dict) -> str:
    return (
        f"{r['family']:17s} {r['T']:>6d} | chunk {fmt_ms(r['chunk_fwd']):>8s} {fmt_ms(r['chunk_fwdbwd']):>8s}"
        f" | naive {fmt_ms(r.get('naive_fwd')):>8s} {fmt_ms(r.get('naive_fwdbwd')):>8s}"
        f" | sdpa {fmt_ms(r.get('sdpa_fwd')):>8s} {fmt_ms(r.get('sdpa_fwdbwd')):>8s}"
        f" | vs naive {fmt_ratio(r.get('speedup_vs_naive_fwdbwd')):>7s} vs sdpa {fmt_ratio(r.get('speedup_vs_sdpa_fwdbwd')):>6s}"
    )


def _peak_rss_mib() -> float:
    """This process's peak resident set size in MiB.

    ``VmHWM`` belongs to the process's own address space, so it starts fresh after exec; the
    ``ru_maxrss`` fallback (non-Linux) may include the parent's size at fork time.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(family: str, T: int) -> None:
    """Run in a subprocess: print the growth of peak RSS (MiB) over one chunk fwd+bwd, inputs included."""
    fam = next(f for f in families() if f.name == family)
    base = _peak_rss_mib()  # after imports, before the inputs exist
    args, kwargs = make_inputs(fam, T)
    _fwd_bwd(fam.chunk, args, kwargs)
    print(json.dumps({"peak_mib": _peak_rss_mib() - base, "baseline_mib": base}))


def bench_memory(fams: list[Family], T: int) -> list[dict]:
    rows = []
    for fam in fams:
        cmd = [sys.executable, "-m", "linearlab.bench.ops", "--memory-child", fam.name, str(T)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            row = {"family": fam.name, "T": T, "error": out.stderr.strip().splitlines()[-1:]}
        else:
            row = {"family": fam.name, "T": T, **json.loads(out.stdout.strip().splitlines()[-1])}
        rows.append(row)
        print(
            f"{fam.name:17s} T={T}: peak fwd+bwd memory {row.get('peak_mib', float('nan')):.0f} MiB",
            flush=True,
        )
    return rows


def bench_decode(fams: list[Family], contexts: list[int], steps: int = 32) -> list[dict]:
    """Per-token step time of the recurrent form after a prefill of each context length."""
    rows = []
    for ctx in contexts:
        for fam in fams:
            args, kwargs = make_inputs(fam, ctx + 1, requires_grad=False)
            prefix = [a[:, :ctx] for a in args]
            step_args = [a[:, ctx : ctx + 1] for a in args]
            pk = {k: v[:, :ctx] for k, v in kwargs.items()}
            sk = {k: v[:, ctx : ctx + 1] for k, v in kwargs.items()}
            with torch.no_grad():
                _, state = fam.chunk(*prefix, **pk, output_final_state=True)
                t = median_time(
                    partial(fam.recurrent, *step_args, **sk, initial_state=state, output_final_state=True),
                    steps,
                )
            rows.append({"family": fam.name, "context": ctx, "step_seconds": t})
        # the softmax reference: one query against a KV cache of length ctx
        q = torch.randn(B, H, 1, D)
        kc, vc = torch.randn(B, H, ctx + 1, D), torch.randn(B, H, ctx + 1, D)
        t = median_time(partial(F.scaled_dot_product_attention, q, kc, vc), steps)
        rows.append({"family": "sdpa_kv_cache", "context": ctx, "step_seconds": t})
    for ctx in contexts:
        line = "  ".join(
            f"{r['family']}={r['step_seconds'] * 1e6:.0f}us" for r in rows if r["context"] == ctx
        )
        print(f"decode step at context {ctx:>6d}: {line}", flush=True)
    return rows


def matmul_tile_rate(repeats: int = 5, min_seconds: float = 0.2, batch: int = 256) -> float:
    """This machine's batched 64x64 float32 matmul rate in GFLOP/s (the chunk kernels' tile shape).

    Measured in the calling process with its thread setting, so a family's fraction of it compares
    two numbers taken under the same load.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(batch, 64, 64, generator=gen), torch.randn(batch, 64, 64, generator=gen)
    out = torch.empty(batch, 64, 64)
    seconds = median_time(partial(torch.bmm, a, b, out=out), repeats, min_seconds=min_seconds)
    return 2 * 64**3 * batch / seconds / 1e9


def count_flops(fam: Family, T: int) -> int:
    """FLOPs one chunk forward+backward executes at length ``T``, counted by
    ``torch.utils.flop_counter.FlopCounterMode`` (matmul-type ops: mm, bmm, baddbmm, ...;
    element-wise work and triangular solves are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    args, kwargs = make_inputs(fam, T)
    counter = FlopCounterMode(display=False)
    with counter:
        _fwd_bwd(fam.chunk, args, kwargs)
    return int(counter.get_total_flops())


def bench_efficiency(
    fams: list[Family], T: int, speed: list[dict], tile_gflops: float, repeats: int, min_seconds: float
) -> list[dict]:
    """Counted FLOPs of each family's chunk forward+backward at ``T``, the achieved GFLOP/s and
    its fraction of the batched 64x64 matmul rate ``tile_gflops`` measured in the same run."""
    rows = []
    for fam in fams:
        timed = [r for r in speed if r["family"] == fam.name and r["T"] == T]
        if timed:
            seconds = timed[0]["chunk_fwdbwd"]
        else:
            args, kwargs = make_inputs(fam, T)
            seconds = _chunk_fwdbwd_seconds(fam, args, kwargs, repeats, min_seconds)
        flops = count_flops(fam, T)
        gflops = flops / seconds / 1e9
        rows.append(
            {
                "family": fam.name,
                "T": T,
                "flops": flops,
                "seconds": seconds,
                "gflops": gflops,
                "fraction_of_tile_rate": gflops / tile_gflops,
            }
        )
        print(
            f"{fam.name:17s} T={T}: {flops / 1e9:7.3f} GFLOP counted, {gflops:6.1f} GFLOP/s = "
            f"{100 * gflops / tile_gflops:5.1f}% of the batched 64x64 matmul rate",
            flush=True,
        )
    return rows


def bench_crossover(fams: list[Family], lengths: list[int], repeats: int, min_seconds: float) -> list[dict]:
    """The smallest ``T`` in ``lengths`` from which each chunk form's forward+backward beats causal
    SDPA's at every tried length, and the speed-up there (None when it does not within ``lengths``).

    A single win can be load noise on a shared machine, so a family's search stops only after two
    consecutive wins (from there the linear-time form only gains on the quadratic one) and a
    later loss resets the candidate.
    """
    lengths = sorted(lengths)
    sdpa: dict[int, float] = {}
    rows = []
    for fam in fams:
        row: dict = {"family": fam.name, "T": None, "speedup_vs_sdpa_fwdbwd": None, "tried": []}
        streak = 0
        for T in lengths:
            if T not in sdpa:
                qkv = _sdpa_inputs(T)
                sdpa[T] = median_time(partial(_sdpa_fwd_bwd, qkv, torch.ones_like(qkv[0])), repeats)
            args, kwargs = make_inputs(fam, T)
            ratio = sdpa[T] / _chunk_fwdbwd_seconds(fam, args, kwargs, repeats, min_seconds)
            row["tried"].append({"T": T, "speedup_vs_sdpa_fwdbwd": ratio})
            if ratio <= 1:
                row["T"], row["speedup_vs_sdpa_fwdbwd"], streak = None, None, 0
                continue
            if streak == 0:
                row["T"], row["speedup_vs_sdpa_fwdbwd"] = T, ratio
            streak += 1
            if streak == 2:
                break
        rows.append(row)
        tried = " ".join(f"{t['T']}:{t['speedup_vs_sdpa_fwdbwd']:.2f}x" for t in row["tried"])
        where = f"T={row['T']}" if row["T"] else f"none up to T={lengths[-1]}"
        print(f"{fam.name:17s} chunk fwd+bwd beats causal SDPA from {where}  (tried {tried})", flush=True)
    return rows


#: the issue's efficiency goals: fraction of the batched 64x64 matmul rate per family
TILE_RATE_GOALS = {
    "linear_attn": 0.5,
    "simple_gla": 0.5,
    "lightning": 0.5,
    "gla": 0.35,
    "delta_rule": 0.35,
    "gated_delta_rule": 0.35,
}
#: the issue's crossover goal: every chunk form beats causal SDPA (fwd+bwd) at this T or below
CROSSOVER_GOAL_T = 1024


def check_goals(
    speed: list[dict],
    memory: list[dict],
    decode: list[dict],
    default_scaling: list[dict] | None = None,
    efficiency: list[dict] | None = None,
    crossover: list[dict] | None = None,
) -> dict:
    """The issue's speed and memory goals checked against the measurements, per family.

    Each family gets the measured value behind each goal and a ``met_*`` flag (True/False; absent
    when that value was not measured). ``default_scaling`` (rows of :func:`bench_scaling` under
    glibc's defaults) is reported next to the linear-scaling goal, which is judged on the main table.
    """
    out = {}
    for fam in sorted({r["family"] for r in speed}):
        by_t = {r["T"]: r for r in speed if r["family"] == fam}
        checks = {}
        if 2048 in by_t and "speedup_vs_naive_fwdbwd" in by_t[2048]:
            checks["naive_speedup_T2048"] = by_t[2048]["speedup_vs_naive_fwdbwd"]
            checks["met_20x_vs_naive"] = checks["naive_speedup_T2048"] >= 20
        if 8192 in by_t and "speedup_vs_sdpa_fwdbwd" in by_t[8192]:
            checks["sdpa_speedup_T8192"] = by_t[8192]["speedup_vs_sdpa_fwdbwd"]
            checks["met_faster_than_sdpa_T8192"] = checks["sdpa_speedup_T8192"] > 1
        if 32768 in by_t and 2048 in by_t:
            checks["per_token_cost_ratio_32768_vs_2048"] = (
                by_t[32768]["chunk_fwdbwd_us_per_token"] / by_t[2048]["chunk_fwdbwd_us_per_token"]
            )
            checks["met_linear_scaling_1.3x"] = checks["per_token_cost_ratio_32768_vs_2048"] <= 1.3
        for row in default_scaling or []:
            if row["family"] == fam:
                checks[f"per_token_cost_ratio_{row['long']}_vs_{row['short']}_glibc_default"] = row["ratio"]
        mem = [r for r in memory if r["family"] == fam and "peak_mib" in r]
        if mem:
            checks["peak_mib_T65536"] = mem[0]["peak_mib"]
            checks["met_memory_under_2GiB"] = mem[0]["peak_mib"] < 2048
        dec = sorted((r["context"], r["step_seconds"]) for r in decode if r["family"] == fam)
        if len(dec) >= 2:
            checks["decode_step_ratio_longest_vs_shortest"] = dec[-1][1] / dec[0][1]
        for row in efficiency or []:
            if row["family"] == fam:
                checks[f"fraction_of_tile_rate_T{row['T']}"] = row["fraction_of_tile_rate"]
                if fam in TILE_RATE_GOALS:
                    checks[f"met_{TILE_RATE_GOALS[fam]:.0%}_of_tile_rate"] = (
                        row["fraction_of_tile_rate"] >= TILE_RATE_GOALS[fam]
                    )
        for row in crossover or []:
            if row["family"] == fam:
                checks["crossover_T_vs_sdpa"] = row["T"]
                checks[f"met_crossover_le_{CROSSOVER_GOAL_T}"] = (
                    row["T"] is not None and row["T"] <= CROSSOVER_GOAL_T
                )
        out[fam] = checks
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="linearlab bench ops", description=__doc__)
    p.add_argument("--quick", action="store_true", help="about a minute: T in {512, 2048}, no memory run")
    p.add_argument("--lengths", default=None, help="comma-separated T values (default 512,2048,8192,32768)")
    p.add_argument("--families", default=None, help="comma-separated subset of families")
    p.add_argument("--repeats", type=int, default=None, help="minimum timed runs per measurement")
    p.add_argument(
        "--min-seconds",
        type=float,
        default=None,
        help=f"keep timing a chunk form until this long is spent (default {MIN_SECONDS}; --quick 0.1)",
    )
    p.add_argument("--memory-t", type=int, default=65536, help="T for the peak-memory run (0: skip)")
    p.add_argument(
        "--contexts", default=None, help="comma-separated decode contexts (default 1024,8192,32768)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--system-malloc",
        action="store_true",
        help="keep glibc's default allocator settings for the whole run (see bench.timing.reuse_freed_memory)",
    )
    p.add_argument(
        "--efficiency-t",
        type=int,
        default=2048,
        help="T for the counted-FLOPs efficiency table (0: skip)",
    )
    p.add_argument(
        "--crossover",
        default=None,
        help="ascending T values searched for the first chunk-beats-SDPA length "
        "(default 256,512,1024,2048,4096,8192; --quick 512,1024,2048; 'none' skips)",
    )
    p.add_argument("--json", default="bench_results/ops.json", help="where to write the results")
    p.add_argument("--memory-child", nargs=2, metavar=("FAMILY", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]))
        return 0
    fams = families()
    if args.families:
        wanted = args.families.split(",")
        unknown = set(wanted) - {f.name for f in fams}
        if unknown:
            p.error(f"--families: unknown {sorted(unknown)}; choose from {[f.name for f in fams]}")
        fams = [f for f in fams if f.name in wanted]
    if args.quick:
        lengths, naive_max, sdpa_max, repeats, mem_t, contexts = (
            [512, 2048],
            512,
            2048,
            args.repeats or 3,
            0,
            [512, 2048],
        )
    else:
        lengths = [int(x) for x in (args.lengths or "512,2048,8192,32768").split(",")]
        naive_max, sdpa_max, repeats, mem_t = 2048, 8192, args.repeats or 5, args.memory_t
        contexts = [int(x) for x in (args.contexts or "1024,8192,32768").split(",")]
    min_seconds = args.min_seconds if args.min_seconds is not None else (0.1 if args.quick else MIN_SECONDS)
    if min_seconds < 0:
        p.error(f"--min-seconds: expected a non-negative number, got {min_seconds}")
    print(
        f"linearlab bench ops | torch {torch.__version__} | threads {torch.get_num_threads()} | {platform.processor() or platform.machine()}"
    )
    print(f"B={B} H={H} K=V={D} float32; times are medians in ms (forward, forward+backward)")
    default_scaling, reused = [], False
    if not args.system_malloc:
        if len(lengths) > 1:
            print("linear scaling with glibc's default allocator (large buffers page-faulted on every call):")
            # the linear-scaling goal compares T=32768 with T=2048; other length lists use their extremes
            short = 2048 if 2048 in lengths and max(lengths) > 2048 else min(lengths)
            default_scaling = bench_scaling(fams, short, max(lengths), repeats, min_seconds)
        reused = reuse_freed_memory()
        print(
            "allocator: freed memory kept for reuse (mallopt), as jemalloc/tcmalloc do"
            if reused
            else "allocator: system default (mallopt unavailable)"
        )
    speed = bench_speed(fams, lengths, naive_max, sdpa_max, repeats, min_seconds)
    efficiency, tile_gflops = [], None
    if args.efficiency_t:
        tile_gflops = matmul_tile_rate(repeats, min_seconds)
        print(
            f"\nkernel efficiency (FLOPs counted by FlopCounterMode, fwd+bwd); batched 64x64 float32 "
            f"matmul on this machine, this run: {tile_gflops:.1f} GFLOP/s"
        )
        efficiency = bench_efficiency(fams, args.efficiency_t, speed, tile_gflops, repeats, min_seconds)
    crossover_spec = args.crossover or ("512,1024,2048" if args.quick else "256,512,1024,2048,4096,8192")
    crossover = []
    if crossover_spec != "none":
        try:
            cross_lengths = [int(x) for x in crossover_spec.split(",")]
        except ValueError:
            p.error(f"--crossover: expected comma-separated ints or 'none', got {crossover_spec!r}")
        print("\ncrossover with causal SDPA (fwd+bwd):")
        crossover = bench_crossover(fams, cross_lengths, repeats, min_seconds)
    memory = bench_memory(fams, mem_t) if mem_t else []
    decode = bench_decode(fams, contexts)
    goal_checks = check_goals(speed, memory, decode, default_scaling, efficiency, crossover)
    print("\ngoal checks (measured values; met_*: whether the goal is met):")
    for fam, checks in goal_checks.items():
        print(
            f"  {fam:17s} "
            + "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in checks.items())
        )
    result = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "allocator": "reuse" if reused else "system",
        "scaling_with_default_allocator": default_scaling,
        "shape": {"B": B, "H": H, "K": D, "V": D},
        "speed": speed,
        "tile_gflops": tile_gflops,
        "efficiency": efficiency,
        "crossover": crossover,
        "memory": memory,
        "decode": decode,
        "goal_checks": goal_checks,
    }
    path = atomic_write_json(Path(args.json), result)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
