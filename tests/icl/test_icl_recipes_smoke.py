"""Each recipe of issue 6 through the real CLI at ``--smoke`` size."""

import json
import math

import pytest

from linearlab.cli import main
from linearlab.tasks.icl_reference import optimal_one_step_lr, optimal_one_step_mse


def _run(name, tmp_path, capsys):
    assert main(["run", name, "--smoke", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["smoke"] is True
    assert list(tmp_path.glob("*.png")), "the recipe must write a plot"
    return summary, printed


def test_icl_one_step_gd_smoke(tmp_path, capsys):
    s, printed = _run("icl-one-step-gd", tmp_path, capsys)
    assert s["theory_mse"] == pytest.approx(optimal_one_step_mse(20, 5))
    assert s["theory_slope"] == pytest.approx(optimal_one_step_lr(20, 5))
    assert s["r2_vs_gd"] > 0.9 and abs(s["slope_vs_gd"] - s["theory_slope"]) < 0.1
    assert s["aniso_cos_gamma_vs_theory"] > s["aniso_cos_gamma_vs_identity"]
    assert "slope of LSA on 1-step GD" in printed
    assert main(["report", str(tmp_path), "--recipe", "icl-one-step-gd"]) == 0
    assert "test MSE (isotropic)" in capsys.readouterr().out


def test_icl_looped_smoke(tmp_path, capsys):
    s, printed = _run("icl-looped", tmp_path, capsys)
    assert s["construction_max_abs_diff"] < 1e-5
    rates = [r["rate_fixed_measured"] for r in s["efficiency"]]
    assert all(0 < r < 1 for r in rates) and rates[-1] < rates[0]  # more examples per dim: faster decay
    assert len(s["trained_mse_by_loop"]) == 12 and all(math.isfinite(v) for v in s["trained_mse_by_loop"])
    assert "(b) d=10" in printed


def test_deep_linear_dynamics_smoke(tmp_path, capsys):
    s, printed = _run("deep-linear-dynamics", tmp_path, capsys)
    assert all(abs(m["rel_err"]) < 0.05 for m in s["two_layer"]["modes"])
    assert all(r["max_abs_rel_err"] < 0.05 for r in s["deep_decoupled"])
    assert {r["init"] for r in s["sweep"]} == {"decoupled", "orthogonal", "gaussian", "small"}
    assert "time to half strength" in printed


def test_icl_algorithms_smoke(tmp_path, capsys):
    s, printed = _run("icl-algorithms", tmp_path, capsys)
    assert [r["noise_std"] for r in s["runs"]] == [0.0, 0.5]
    noiseless = s["runs"][0]
    assert noiseless["ols_theory"][0] == 1.0 and noiseless["ols_theory"][-1] == 0.0
    assert max(noiseless["mse"]["ols"][5:]) < 1e-8  # OLS is exact from k = d examples on
    for run in s["runs"]:
        assert set(run["spd"]) == {"ols", "ridge", "gd1", "gd_multi"}
        assert len(run["probe_r2"]) == 6  # 3 targets x 2 feature sets
        assert all(len(v) == 3 for v in run["probe_r2"].values())  # embedding + 2 blocks
        assert all(math.isfinite(x) for v in run["ilwd"].values() for x in v)
    assert "closest algorithm" in printed
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "model_sigma0.5.safetensors",
        "model_sigma0.safetensors",
    ]
