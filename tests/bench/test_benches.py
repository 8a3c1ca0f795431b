"""The benchmarks run end to end at tiny sizes and write well-formed JSON (speed is not asserted)."""

import json

from linearlab.bench import mixers as bench_mixers
from linearlab.bench import ops as bench_ops


def test_ops_bench_tiny(tmp_path, capsys):
    out = tmp_path / "ops.json"
    args = ["--lengths", "64", "--families", "linear_attn,gla", "--repeats", "1", "--memory-t", "256"]
    assert bench_ops.main([*args, "--contexts", "32,64", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["family"] for r in data["speed"]} == {"linear_attn", "gla"}
    for r in data["speed"]:
        assert r["chunk_fwdbwd"] > 0 and r["naive_fwdbwd"] > 0 and r["sdpa_fwdbwd"] > 0
        assert r["speedup_vs_naive_fwdbwd"] == r["naive_fwdbwd"] / r["chunk_fwdbwd"]
    assert all(m["peak_mib"] >= 0 for m in data["memory"]), data["memory"]
    assert {r["context"] for r in data["decode"]} == {32, 64}
    assert "targets:" in capsys.readouterr().out


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
