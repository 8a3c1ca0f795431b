"""The benchmarks run end to end at tiny sizes and write well-formed JSON (speed is not asserted)."""

import json

import pytest

from linearlab.bench import mixers as bench_mixers
from linearlab.bench import ops as bench_ops


def test_ops_bench_tiny(tmp_path, capsys):
    out = tmp_path / "ops.json"
    args = [
        "--lengths",
        "32,64",
        "--families",
        "linear_attn,gla",
        "--repeats",
        "1",
        "--min-seconds",
        "0",
        "--memory-t",
        "256",
    ]
    extra = ["--efficiency-t", "64", "--crossover", "32,64"]
    assert bench_ops.main([*args, *extra, "--contexts", "32,64", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["family"] for r in data["speed"]} == {"linear_attn", "gla"}
    # efficiency: counted FLOPs over the timed T=64 forward+backward, as a fraction of the tile rate
    assert data["tile_gflops"] > 0
    speed64 = {r["family"]: r["chunk_fwdbwd"] for r in data["speed"] if r["T"] == 64}
    for r in data["efficiency"]:
        assert r["T"] == 64 and r["flops"] > 0 and r["seconds"] == speed64[r["family"]]
        assert r["gflops"] == pytest.approx(r["flops"] / r["seconds"] / 1e9)
        assert r["fraction_of_tile_rate"] == pytest.approx(r["gflops"] / data["tile_gflops"])
    # crossover: the smallest tried T from which every later tried length is a win (or None)
    for r in data["crossover"]:
        tried = r["tried"]
        assert [t["T"] for t in tried] == [32, 64]  # two lengths: no early stop before both
        wins = [t["speedup_vs_sdpa_fwdbwd"] > 1 for t in tried]
        expected = next((t["T"] for i, t in enumerate(tried) if all(wins[i:])), None)
        assert r["T"] == expected
    # the default-allocator scaling pass ran first, on the shortest and longest T
    scaling = data["scaling_with_default_allocator"]
    assert [(r["family"], r["short"], r["long"]) for r in scaling] == [
        ("linear_attn", 32, 64),
        ("gla", 32, 64),
    ]
    assert all(r["ratio"] > 0 for r in scaling)
    assert data["allocator"] == "reuse"  # glibc on Linux accepts the mallopt settings
    ratio = data["goal_checks"]["gla"]["per_token_cost_ratio_64_vs_32_glibc_default"]
    assert ratio == scaling[1]["ratio"]
    for r in data["speed"]:
        assert r["chunk_fwdbwd"] > 0 and r["naive_fwdbwd"] > 0 and r["sdpa_fwdbwd"] > 0
        assert r["speedup_vs_naive_fwdbwd"] == r["naive_fwdbwd"] / r["chunk_fwdbwd"]
    assert all(m["peak_mib"] >= 0 for m in data["memory"]), data["memory"]
    assert {r["context"] for r in data["decode"]} == {32, 64}
    assert "goal checks" in capsys.readouterr().out


def test_ops_bench_system_malloc_skips_the_allocator_change(tmp_path):
    out = tmp_path / "ops.json"
    args = [
        "--lengths",
        "32,64",
        "--families",
        "linear_attn",
        "--repeats",
        "1",
        "--min-seconds",
        "0",
        "--memory-t",
        "0",
    ]
    assert bench_ops.main([*args, "--contexts", "32", "--system-malloc", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["allocator"] == "system" and data["scaling_with_default_allocator"] == []
    per_token = {r["T"]: r["chunk_fwdbwd_us_per_token"] for r in data["speed"]}
    ratio = (
        data["goal_checks"]["linear_attn"]["per_token_cost_ratio_32768_vs_2048"]
        if 32768 in per_token
        else None
    )
    assert ratio is None and set(per_token) == {32, 64}


def test_ops_goal_checks_report_each_measured_value_and_whether_its_goal_is_met():
    speed = [
        {"family": "gla", "T": 2048, "speedup_vs_naive_fwdbwd": 25.0, "chunk_fwdbwd_us_per_token": 10.0},
        {"family": "gla", "T": 8192, "speedup_vs_sdpa_fwdbwd": 0.5, "chunk_fwdbwd_us_per_token": 11.0},
        {"family": "gla", "T": 32768, "chunk_fwdbwd_us_per_token": 12.0},
    ]
    memory = [{"family": "gla", "T": 65536, "peak_mib": 900.0}]
    decode = [
        {"family": "gla", "context": 1024, "step_seconds": 1e-4},
        {"family": "gla", "context": 8192, "step_seconds": 2e-4},
    ]
    default_scaling = [{"family": "gla", "short": 2048, "long": 32768, "ratio": 1.5}]
    assert bench_ops.check_goals(speed, memory, decode, default_scaling) == {
        "gla": {
            "naive_speedup_T2048": 25.0,
            "met_20x_vs_naive": True,
            "sdpa_speedup_T8192": 0.5,
            "met_faster_than_sdpa_T8192": False,
            "per_token_cost_ratio_32768_vs_2048": 1.2,
            "met_linear_scaling_1.3x": True,
            "per_token_cost_ratio_32768_vs_2048_glibc_default": 1.5,
            "peak_mib_T65536": 900.0,
            "met_memory_under_2GiB": True,
            "decode_step_ratio_longest_vs_shortest": 2.0,
        }
    }


def test_ops_flop_count_matches_the_matmul_count_of_linear_attention():
    """Ungated chunked linear attention, T = one chunk of 64, no initial state: forward q k^T (C x C x
    K), its product with v, q S (S = 0 still multiplied) and the state update k^T v; the counter
    must see at least the forward's 2 C^2 K + 2 C^2 V per head and stay within a small multiple."""
    fam = next(f for f in bench_ops.families() if f.name == "linear_attn")
    flops = bench_ops.count_flops(fam, 64)
    per_head_fwd = 2 * 64 * 64 * 64 * 2
    assert bench_ops.H * per_head_fwd <= flops <= 8 * bench_ops.H * per_head_fwd


def test_ops_goal_checks_include_efficiency_and_crossover():
    eff = [{"family": "gla", "T": 2048, "fraction_of_tile_rate": 0.4}]
    cross = [{"family": "gla", "T": 2048, "speedup_vs_sdpa_fwdbwd": 1.2}]
    checks = bench_ops.check_goals([{"family": "gla", "T": 2048}], [], [], None, eff, cross)["gla"]
    assert checks == {
        "fraction_of_tile_rate_T2048": 0.4,
        "met_35%_of_tile_rate": True,
        "crossover_T_vs_sdpa": 2048,
        "met_crossover_le_1024": False,
    }


def test_ops_bench_rejects_unknown_family(tmp_path):
    import pytest

    with pytest.raises(SystemExit):
        bench_ops.main(["--families", "nope", "--json", str(tmp_path / "x.json")])


def test_mixers_bench_tiny(tmp_path):
    out = tmp_path / "mixers.json"
    args = [
        "--mixers",
        "softmax,gla",
        "--train-len",
        "64",
        "--contexts",
        "64",
        "--steps",
        "2",
        "--threads",
        "1",
    ]
    assert bench_mixers.main([*args, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["train"]) == {"softmax", "gla"} and set(data["decode"]) == {"softmax", "gla"}
    assert data["train_seq_len"] == 64 and set(data["decode"]["gla"]) == {"64"}
    assert data["pair_goals"] == {}  # neither goal pair is among the selected mixers


def test_mixers_bench_pair_goal_ratio(tmp_path):
    out = tmp_path / "mixers.json"
    args = ["--mixers", "softmax,lssl", "--train-len", "32", "--contexts", "32", "--steps", "1"]
    assert bench_mixers.main([*args, "--threads", "1", "--json", str(out)]) == 0
    goal = json.loads(out.read_text())["pair_goals"]["lssl"]
    assert goal["reference"] == "softmax" and goal["goal"] == 1.0
    assert goal["ratio"] == goal["reference_seconds"] / goal["seconds"]
    assert goal["met"] == (goal["ratio"] >= 1.0)


def test_median_time_keeps_sampling_until_min_seconds(monkeypatch):
    import linearlab.bench.timing as timing
    from linearlab.bench.timing import median_time

    # a fake clock that each call advances by 10 ms, so the count does not depend on the load of
    # the machine (a real sleep can oversleep on a busy one)
    now = [0.0]
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now[0])
    calls = []

    def nap():
        calls.append(None)
        now[0] += 0.01

    assert median_time(nap, repeats=2, warmup=0, min_seconds=0.08) == pytest.approx(0.01)
    assert len(calls) == 8  # 2 repeats would stop after 0.02 s
    calls.clear()
    median_time(nap, repeats=3, warmup=1)
    assert len(calls) == 4  # no time budget: warm-up plus exactly the repeats
