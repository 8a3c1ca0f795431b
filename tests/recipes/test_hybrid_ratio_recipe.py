"""The ``hybrid-ratio`` recipe through the real CLI at tiny sizes, plus its KV and verdict arithmetic."""

import json

import pytest

from linearlab.cli import main
from linearlab.recipes.hybrid_ratio import (
    HybridRatioExperiment,
    block_pattern,
    build_model,
    cache_bytes,
    expectations,
    parse_ratio,
)

FLOAT32 = 4


def test_hybrid_ratio_smoke_through_cli(tmp_path, capsys):
    out = tmp_path / "hr"
    assert main(["run", "hybrid-ratio", "--smoke", "--out", str(out), "--set", "workers=1"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == str(out)
    assert "MQAR recall" in printed and "KV B/token" in printed
    assert "leads one to expect" in printed and printed.count("\n  ") >= 4  # one line per claim
    summary = json.loads((out / "summary.json").read_text())
    results = summary["results"]
    assert [(r["mixer"], r["ratio"]) for r in results] == [
        ("gla", "linear"), ("gla", "1:1"), ("gated_deltanet", "linear"), ("gated_deltanet", "1:1"),
    ]  # fmt: skip
    assert [r["pattern"] for r in results] == ["GG", "GA", "NN", "NA"]
    d_model = 32
    for r in results:
        # 8 bits per byte is an untrained (uniform) model; 30 steps on Python source must beat it clearly
        assert r["val_bpb"] < 6.5
        assert 0.0 <= r["mqar_recall"] <= 1.0
        assert r["params"] > 30_000 and r["steps"] == 30
        # only softmax layers keep a per-token KV cache: keys + values of d_model floats each
        assert r["kv_bytes_per_token"] == r["pattern"].count("A") * 2 * d_model * FLOAT32
        assert r["state_bytes"] > 0  # the linear layers' fixed recurrent state
        assert (out / _folder(r) / "result.json").exists()
        assert (out / _folder(r) / "checkpoint.safetensors").exists()
    assert len(summary["expectations"]) == 4
    assert (out / "hybrid_ratio.png").stat().st_size > 5000
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "hybrid-ratio" and config["preset"] == "smoke"
    # the report is rebuilt from the run directory alone
    assert main(["report", str(out)]) == 0
    assert "gated_deltanet" in capsys.readouterr().out
    # a resume reuses every finished job
    assert main(["run", "hybrid-ratio", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["results"] == results


def _folder(r: dict) -> str:
    return "softmax" if r["mixer"] == "softmax" else f"{r['mixer']}-{r['ratio'].replace(':', 'to')}"


def test_all_softmax_is_trained_once_and_kv_grows_with_softmax_layers(tmp_path, capsys):
    out = tmp_path / "hr"
    args = ["run", "hybrid-ratio", "--smoke", "--out", str(out), "--mixers", "gla,retnet", "--set", "workers=1",
            "--set", "ratios=linear,1:1,softmax", "--set", "steps=3"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "summary.json").read_text())["results"]
    assert [(r["mixer"], r["ratio"]) for r in results] == [
        ("gla", "linear"), ("gla", "1:1"), ("retnet", "linear"), ("retnet", "1:1"), ("softmax", "softmax"),
    ]  # fmt: skip
    kv = {(r["mixer"], r["ratio"]): r["kv_bytes_per_token"] for r in results}
    assert kv[("gla", "linear")] == kv[("retnet", "linear")] == 0
    assert kv[("gla", "1:1")] == kv[("retnet", "1:1")] == 2 * 32 * FLOAT32
    assert kv[("softmax", "softmax")] == 2 * 2 * 32 * FLOAT32
    assert next(r for r in results if r["mixer"] == "softmax")["state_bytes"] == 0


@pytest.mark.parametrize("mixer", ["gla", "deltanet", "gated_deltanet", "retnet"])
def test_kv_bytes_per_token_count_the_softmax_layers_of_an_8_layer_stack(mixer):
    exp = HybridRatioExperiment(mixers=mixer, d_model=64)
    sizes = []
    for text in ["linear", "7:1", "3:1", "1:1", "softmax"]:
        model = build_model(exp, mixer, parse_ratio(text))
        n_softmax = model.config.block_pattern.count("A")
        kv, state = cache_bytes(model, exp.seq_len)
        assert kv == n_softmax * 2 * 64 * FLOAT32, text
        sizes.append((n_softmax, kv, state))
    assert [n for n, _, _ in sizes] == [0, 1, 2, 4, 8]
    # the fixed state shrinks as linear layers are replaced, and all-softmax has none
    assert [s for _, _, s in sizes] == sorted((s for _, _, s in sizes), reverse=True) and sizes[-1][2] == 0
    assert block_pattern((3, 1), 8, "G") == "GGGAGGGA" and block_pattern((7, 1), 8, "N") == "NNNNNNNA"


def test_bad_settings_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    cases = [
        (["--set", "ratios=linear,5:1"], "ratios: '5:1' needs groups of 6 layers, which do not divide n_layers=2; "
                                         "allowed: linear, 1:1, softmax"),
        (["--set", "ratios=3to1"], "ratios: '3to1' is not a ratio"),
        (["--set", "ratios=1:1,1:1"], "appears twice"),
        (["--mixers", "gla,softmax"], "mixers: 'gla,softmax' has unknown ['softmax']; allowed: gla, deltanet, "
                                      "gated_deltanet, retnet"),
        (["--set", "num_kv_pairs=16"], "num_kv_pairs: must be in [1, (seq_len - 2) // 4 = 15]"),
        (["--set", "seq_len=512"], "seq_len: an MQAR byte row needs an even length in [4, 256], got 512"),
        (["--set", "lm_rows=0"], "lm_rows: every batch needs rows of both tasks"),
        (["--set", "mqar_weight=1"], "mqar_weight: must be in (0, 1), got 1.0"),
        (["--set", "num_heads=3"], "d_model=32, num_heads=3 do not fit gla"),
        (["--set", "steps=abc"], "--set steps=abc: expected an integer"),
    ]  # fmt: skip
    for extra, message in cases:
        out = tmp_path / "x"
        assert main(["run", "hybrid-ratio", "--smoke", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists(), extra


def _run(mixer: str, ratio: str, recall: float, bpb: float, n_layers: int = 8) -> dict:
    a, b = parse_ratio(ratio)
    letter = {"gla": "G", "gated_deltanet": "N", "softmax": "A"}[mixer]
    pattern = block_pattern((a, b), n_layers, letter)
    return {"mixer": mixer, "ratio": ratio, "pattern": pattern, "softmax_layers": pattern.count("A"),
            "mqar_recall": recall, "val_bpb": bpb}  # fmt: skip


def test_verdicts_follow_the_numbers():
    exp = HybridRatioExperiment(mixers="gla,gated_deltanet")
    paper_like = [
        _run("gla", "linear", 0.05, 2.00), _run("gla", "7:1", 0.55, 2.01), _run("gla", "3:1", 0.80, 2.00),
        _run("gla", "1:1", 0.90, 2.02), _run("gated_deltanet", "linear", 0.10, 1.98),
        _run("gated_deltanet", "7:1", 0.70, 1.99), _run("gated_deltanet", "3:1", 0.90, 1.98),
        _run("gated_deltanet", "1:1", 0.92, 2.00), _run("softmax", "softmax", 0.95, 2.03),
    ]  # fmt: skip
    lines = expectations(paper_like, exp)
    assert lines[0].split(": ")[1].startswith("flat for every mixer")
    assert lines[1].split(": ")[1].startswith("shown for every mixer")
    assert lines[2].split(": ")[1].startswith("shown")  # GDN reaches 0.855 with 2 softmax layers, GLA with 4
    assert "gla 4; gated_deltanet 2" in lines[2]
    assert lines[3].split(": ")[1].startswith("shown for 1 of 2 mixers") and "gated_deltanet 3:1" in lines[3]
    contrary = [dict(r, val_bpb=r["val_bpb"] * (1 + r["softmax_layers"] / 8)) for r in paper_like]
    for r in contrary:
        if r["mixer"] == "gla" and r["softmax_layers"] == 1:
            r["mqar_recall"] = 0.9
    lines = expectations(contrary, exp)
    assert lines[0].split(": ")[1].startswith("not flat")
    assert "same recall: contradicted: GLA needs fewer" in lines[2]
    nobody = [dict(r, mqar_recall=0.01) for r in paper_like]
    assert all("not measurable" in line for line in expectations(nobody, exp)[1:])
