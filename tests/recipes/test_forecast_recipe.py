"""The ``forecast`` recipe through the real CLI: smoke size on the synthetic series, and one ETTh1 horizon."""

from __future__ import annotations

import json
import math

import pytest

from linearlab.cli import main
from linearlab.models.forecast import create_forecaster
from linearlab.recipes import get_recipe
from linearlab.recipes.forecast import DEFAULT_MODELS, learning_rate, settings_for
from linearlab.runs import RunDir


def test_smoke_run_writes_the_summary_schema(tmp_path, capsys):
    assert main(["run", "forecast", "--smoke", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == set(DEFAULT_MODELS) | {"wall_seconds"}  # the CLI adds wall_seconds
    for name in DEFAULT_MODELS:
        assert list(summary[name]) == ["24"]
        row = summary[name]["24"]
        assert set(row) == {"mse", "mae", "params", "train_seconds"}
        assert math.isfinite(row["mse"]) and math.isfinite(row["mae"]) and row["mse"] > 0
        assert row["mae"] ** 2 <= row["mse"] + 1e-12  # Jensen: (E|e|)^2 <= E e^2
        st = settings_for(name, 24, 48)
        assert row["params"] == create_forecaster(name, 48, 24, 2, **st.model_kwargs).num_parameters()
        assert name in printed
    # On the seasonal synthetic series every trained linear model beats the last-value baseline.
    for name in ("linear", "nlinear", "dlinear"):
        assert summary[name]["24"]["mse"] < 0.5 * summary["repeat"]["24"]["mse"]

    details = json.loads((tmp_path / "details.json").read_text())
    nlinear = details["results"]["nlinear"]["24"]
    assert nlinear["all_windows"]["mse"] == summary["nlinear"]["24"]["mse"]  # default: every window
    assert nlinear["legacy"]["windows"] == nlinear["all_windows"]["windows"] // 32 * 32
    assert 1 <= nlinear["epochs"] <= 2  # --smoke caps training at 2 epochs
    assert (tmp_path / "forecast_H24_L48.png").stat().st_size > 1000
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["model"] for r in records if "epoch" in r} == set(DEFAULT_MODELS) - {"repeat"}
    assert {r["model"]: r["result"] for r in records if "result" in r} == {
        m: summary[m]["24"] for m in DEFAULT_MODELS
    }

    rebuilt = get_recipe("forecast").report(RunDir(tmp_path))
    assert rebuilt.splitlines()[1:] == (tmp_path / "table.txt").read_text().splitlines()[1:]


def test_legacy_flag_and_csv_input(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    t = np.arange(700)
    frame = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=700, freq="h").astype(str)})
    frame["OT"] = np.sin(2 * np.pi * t / 24) + 0.1 * rng.normal(size=700)
    frame["load"] = np.cos(2 * np.pi * t / 24) + 0.1 * rng.normal(size=700)
    csv = tmp_path / "tiny.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "run"
    argv = [
        "run",
        "forecast",
        "--smoke",
        "--data",
        str(csv),
        "--models",
        "repeat,nlinear",
        "--set",
        "individual=true",
        "--set",
        "lr=0.002",
        "--set",
        "batch_size=16",
    ]
    assert main([*argv, "--horizons", "24", "--lookback", "48", "--legacy-drop-last", "--out", str(out)]) == 0
    capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    details = json.loads((out / "details.json").read_text())
    assert set(summary) == {"repeat", "nlinear", "wall_seconds"}
    assert summary["nlinear"]["24"]["params"] == 2 * (48 * 24 + 24)  # one map per channel
    settings = details["results"]["nlinear"]["24"]["settings"]
    assert settings["model_kwargs"] == {"individual": True}
    assert (settings["lr"], settings["batch_size"]) == (0.002, 16)  # --set overrides the paper's
    legacy = details["results"]["repeat"]["24"]["legacy"]
    assert summary["repeat"]["24"]["mse"] == legacy["mse"] and legacy["windows"] % 32 == 0


def test_bad_model_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="--models: unknown \\['transformer'\\]; choose from repeat"):
        main(["run", "forecast", "--smoke", "--models", "nlinear,transformer", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--horizons: cannot parse '24,x' as a list of int"):
        main(["run", "forecast", "--smoke", "--horizons", "24,x", "--out", str(tmp_path)])


def test_dlinear_uses_its_first_release_settings():
    # Table 2's DLinear row: batch 8, run_longExp's default lr 1e-4, weights initialised to 1/L.
    st = settings_for("dlinear", 96, None)
    assert (st.lookback, st.lr, st.batch_size, st.epochs, st.patience) == (336, 1e-4, 8, 10, 3)
    assert st.model_kwargs == {"init": "average"}
    shared = settings_for("nlinear", 96, None)  # the shared Linear/etth1.sh script
    assert (shared.lr, shared.batch_size, shared.model_kwargs) == (0.005, 32, {})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "linear_init=uniform",
            "--set linear_init: expected one of \\('auto', 'default', 'average'\\), got 'uniform'",
        ),
        ("lr=-0.1", "--set lr: expected 0 \\(the paper's\\) or a positive finite rate, got -0.1"),
        ("batch_size=-4", "--set batch_size: expected 0 \\(the paper's\\) or a positive size, got -4"),
    ],
)
def test_bad_settings_are_rejected(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        main(["run", "forecast", "--smoke", "--models", "nlinear", "--set", override, "--out", str(tmp_path)])


def test_learning_rate_schedules_follow_the_reference_code():
    # type1: epochs 0 and 1 at lr, then halving; type3: constant through epoch 3, then x0.8.
    assert [learning_rate(1.0, e, "type1") for e in range(4)] == [1.0, 1.0, 0.5, 0.25]
    assert [learning_rate(1.0, e, "type3") for e in range(6)] == pytest.approx([1, 1, 1, 1, 0.8, 0.64])
    with pytest.raises(ValueError, match="lradj: expected 'type1' or 'type3', got 'cosine'"):
        learning_rate(1.0, 0, "cosine")


def test_nlinear_and_dlinear_reproduce_table2_at_h96(tmp_path, capsys, etth1_csv):
    # LTSF-Linear Table 2, ETTh1, L=336, H=96 (published drop_last protocol): NLinear 0.374,
    # DLinear 0.375. The issue asks for 3% relative MSE; about 15 s of training on one core.
    argv = ["run", "forecast", "--data", str(etth1_csv), "--models", "nlinear,dlinear", "--horizons", "96"]
    assert main([*argv, "--legacy-drop-last", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "summary.json").read_text())
    for name, paper in (("nlinear", 0.374), ("dlinear", 0.375)):
        mse = summary[name]["96"]["mse"]
        assert abs(mse - paper) / paper < 0.03, (name, mse, paper)
