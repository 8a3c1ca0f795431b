"""The benchmarks run end to end at tiny sizes and write well-formed JSON (speed is not asserted)."""

import json

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
    assert bench_ops.main([*args, "--contexts", "32,64", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["family"] for r in data["speed"]} == {"linear_attn", "gla"}
    # the default-allocator scaling pass ran first, on the shortest and longest T
    scaling = data["scaling_with_default_allocator"]
    assert [(r["family"], r["short"], r["long"]) for r in scaling] == [
        ("linear_attn", 32, 64),
        ("gla", 32, 64),
    ]
    assert all(r["ratio"] > 0 for r in scaling)
    assert data["allocator"] == "reuse"  # glibc on Linux accepts the mallopt settings
    ratio = data["targets"]["gla"]["per_token_cost_ratio_64_vs_32_glibc_default"]
    assert ratio == scaling[1]["ratio"]
    for r in data["speed"]:
        assert r["chunk_fwdbwd"] > 0 and r["naive_fwdbwd"] > 0 and r["sdpa_fwdbwd"] > 0
        assert r["speedup_vs_naive_fwdbwd"] == r["naive_fwdbwd"] / r["chunk_fwdbwd"]
    assert all(m["peak_mib"] >= 0 for m in data["memory"]), data["memory"]
    assert {r["context"] for r in data["decode"]} == {32, 64}
    assert "targets:" in capsys.readouterr().out


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
        data["targets"]["linear_attn"]["per_token_cost_ratio_32768_vs_2048"] if 32768 in per_token else None
    )
    assert ratio is None and set(per_token) == {32, 64}


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


def test_median_time_keeps_sampling_until_min_seconds():
    import time

    from linearlab.bench.timing import median_time

    calls = []

    def nap():
        calls.append(None)
        time.sleep(0.01)

    assert median_time(nap, repeats=2, warmup=0, min_seconds=0.08) >= 0.01
    assert len(calls) >= 8  # 2 repeats would stop after 0.02 s
    calls.clear()
    median_time(nap, repeats=3, warmup=1)
    assert len(calls) == 4  # no time budget: warm-up plus exactly the repeats
