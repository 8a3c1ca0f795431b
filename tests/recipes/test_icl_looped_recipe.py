"""The ``icl-looped`` recipe through the real CLI at smoke size."""

import json

import pytest

from linearlab.cli import main

# Training losses of `linearlab run icl-looped --smoke` at steps 1-5 and 30, and summary numbers of
# that run, recorded from the code before the recipe moved onto the shared spine (commit 7698775);
# every per-step loss of the port was bit-identical to it.
GOLDEN_LOSSES = {
    0: 5.271104335784912, 1: 5.73539924621582, 2: 5.899498462677002, 3: 4.492644786834717,
    4: 4.675145149230957, 29: 4.977590560913086,
}  # fmt: skip
# (fixed-step rate, best-step rate) at n = 2d, then at n = 8d
GOLDEN_RATES = [0.9212576866955744, 0.8920855565070306, 0.7028800386630405, 0.5465459055047488]
GOLDEN_TRAINED_MSE = [5.773635387420654, 5.764265060424805, 5.754831314086914]


def test_smoke_reproduces_the_pre_refactor_run_and_the_theory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "icl-looped", "--smoke", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["preset"] == "smoke"
    records = [json.loads(line) for line in (out / "trained" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert len(losses) == 30 and (out / "trained" / "checkpoint.safetensors").exists()
    assert {i: losses[i] for i in GOLDEN_LOSSES} == pytest.approx(GOLDEN_LOSSES, rel=1e-6)
    assert records[0]["lr"] == pytest.approx(2e-3 / 1)  # 30 // 20 = 1 warm-up step, then cosine
    s = json.loads((out / "summary.json").read_text())
    # (a) the hand-set block looped 10 times is 10 GD steps, to float32 precision
    assert s["construction_max_abs_diff"] < 2e-6
    # (b) geometric decay at the rates the spectrum predicts; faster with more examples per dimension
    rates = [r[k] for r in s["efficiency"] for k in ("rate_fixed_measured", "rate_opt_measured")]
    assert rates == pytest.approx(GOLDEN_RATES, rel=1e-6)
    for r in s["efficiency"]:
        assert r["rate_opt_measured"] == pytest.approx(r["rate_opt_theory_per_prompt"], abs=0.01)
        assert r["rate_fixed_measured"] <= r["rate_fixed_theory_per_prompt"]  # max |1 - eta lambda| bounds it
        assert r["max_abs_diff_loop_vs_gd"] < 2e-6
        assert r["log10_err_loop"]["15"] < r["log10_err_loop"]["10"] < r["log10_err_loop"]["1"] < 0
    assert rates[2] < rates[0] - 0.1
    # (c) 12 evaluation loops, each lowering the error of the trained block a little (30 steps only)
    m = s["trained_mse_by_loop"]
    assert len(m) == 12 and m[:3] == pytest.approx(GOLDEN_TRAINED_MSE, rel=1e-6)
    assert all(b < a for a, b in zip(m, m[1:]))
    assert main(["report", str(out)]) == 0
    assert "(b) d=10" in capsys.readouterr().out


def test_impossible_ratio_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "icl-looped", "--smoke", "--out", str(out), "--set", "ratios=1.0,2.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ratios: expected n/d ratios with round(ratio * d) > d = 10" in err
    assert not out.exists()
