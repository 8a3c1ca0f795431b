"""The ``forecast`` recipe through the real CLI: smoke size on the synthetic series, and one ETTh1 horizon."""

from __future__ import annotations

import json
import math

import pytest

from linearlab.cli import main
from linearlab.models.forecast import create_forecaster
from linearlab.recipes import get_recipe
from linearlab.recipes.forecast import DEFAULT_MODELS, ForecastConfig, learning_rate, settings_for
from linearlab.runs import RunDir
from linearlab.tasks.forecasting import EpochBatches

# Per-epoch (train_loss, val_mse) and the test MSE of `linearlab run forecast --smoke`, recorded
# from the pre-refactor code (its own Adam loop, before the recipe moved onto linearlab.train.train).
# The one loop must reproduce them: same batches in the same order, same schedule, same dropout draws.
GOLDEN_SMOKE = {
    "linear": ([(0.3280960426976283, 0.21744161912142723), (0.10867238851885001, 0.14833088744520181)], 0.14352894558151633),
    "nlinear": ([(0.45296293559173745, 0.20692136898992278), (0.14101658016443253, 0.14253209741676215)], 0.1187882273047592),
    "dlinear": ([(0.8016745919982592, 0.6369372061159884), (0.46382835879921913, 0.3906697855219374)], 0.3397173106171048),
    "mixlinear": ([(1.0300560394922893, 1.0530020543621454), (1.0110634565353394, 1.0435183425790144)], 0.9570196030551839),
    "swift": ([(1.2450534105300903, 0.5868053362763902), (0.5466199020544688, 0.33329917662214725)], 0.30428684330676387),
    "fourier": ([(3.835039267937342, 0.9791109972260242), (3.4962521493434906, 0.7984056913628856)], 0.7279688052120694),
}  # fmt: skip
GOLDEN_REPEAT_MSE = 1.76440503183532


def _records(path) -> list[dict]:
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


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

    stored = json.loads((tmp_path / "config.json").read_text())  # written by the CLI alone
    assert stored["preset"] == "smoke"
    assert stored["config"]["horizons"] == [24] and stored["config"]["lookback"] == 48

    details = json.loads((tmp_path / "details.json").read_text())
    nlinear = details["results"]["nlinear"]["24"]
    assert nlinear["all_windows"]["mse"] == summary["nlinear"]["24"]["mse"]  # default: every window
    assert nlinear["legacy"]["windows"] == nlinear["all_windows"]["windows"] // 32 * 32
    assert 1 <= nlinear["epochs"] <= 2  # the smoke preset caps training at 2 epochs
    assert (tmp_path / "forecast_H24_L48.png").stat().st_size > 1000
    records = _records(tmp_path)
    assert {r["model"] for r in records if "epoch" in r} == set(DEFAULT_MODELS) - {"repeat"}
    assert {r["model"]: r["result"] for r in records if "result" in r} == {
        m: summary[m]["24"] for m in DEFAULT_MODELS
    }
    # every trained (model, horizon) has its own resumable folder; the parameter-free one has none
    assert (tmp_path / "nlinear_H24" / "checkpoint.safetensors").is_file()
    assert not (tmp_path / "repeat_H24").exists()

    rebuilt = get_recipe("forecast").report(RunDir(tmp_path))
    assert rebuilt.splitlines()[1:] == (tmp_path / "table.txt").read_text().splitlines()[1:]


# float32 reductions are vectorised differently on different CPU models (AVX2 / AVX-512), so two
# epochs of training agree to about 1e-5 across machines (the Fourier head's loss differs by 7.5e-6
# relative between two AMD EPYC machines); changing the batches, the schedule or a dropout draw
# moves these numbers by 1e-3 or more
REL = 1e-4


def test_smoke_run_reproduces_the_pre_refactor_losses(tmp_path, capsys):
    assert main(["run", "forecast", "--smoke", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    records = _records(tmp_path)
    for name, (epochs, test_mse) in GOLDEN_SMOKE.items():
        got = [(r["train_loss"], r["val_mse"]) for r in records if r["model"] == name and "epoch" in r]
        assert len(got) == len(epochs), name
        for (loss, val), (want_loss, want_val) in zip(got, epochs):
            assert (loss, val) == (pytest.approx(want_loss, rel=REL), pytest.approx(want_val, rel=REL)), name
        result = next(r["result"] for r in records if r["model"] == name and "result" in r)
        assert result["mse"] == pytest.approx(test_mse, rel=REL), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["repeat"]["24"]["mse"] == pytest.approx(GOLDEN_REPEAT_MSE, rel=1e-9)


def test_legacy_protocol_and_csv_input(tmp_path, capsys):
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
    argv = ["run", "forecast", "--smoke", "--data", str(csv), "--models", "repeat,nlinear"]
    sets = ["--set", "individual=true", "--set", "lr=0.002", "--set", "batch_size=16"]
    protocol = ["--legacy-drop-last"]
    assert main([*argv, *sets, "--horizons", "24", "--lookback", "48", *protocol, "--out", str(out)]) == 0
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
    assert details["data"]["source"] == str(csv)


def _error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err  # one line, no traceback
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--models", "nlinear,transformer"],
            "models: unknown forecaster(s) ['transformer']; choose from: dlinear, fourier, linear",
        ),
        (["--horizons", "24,x"], "--horizons 24,x: expected an integer"),
        (["--horizons", "0"], "horizons: expected positive integers, got [0]"),
        (
            ["--set", "linear_init=uniform"],
            "linear_init: expected one of ('auto', 'default', 'average'), got 'uniform'",
        ),
        (["--set", "lr=-0.1"], "lr: expected 0 (the paper's) or a positive finite rate, got -0.1"),
        (["--set", "batch_size=-4"], "batch_size: expected 0 (the paper's) or a positive size, got -4"),
        (
            ["--models", "swift", "--horizons", "23"],
            "models: swift at horizon 23, lookback 48: horizon: the Haar split needs an even length, got 23",
        ),
        (["--lookback", "2000"], "too short for lookback 2000 + horizon 24"),
    ],
)
def test_bad_settings_fail_before_anything_is_written(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["run", "forecast", "--smoke", *args, "--out", str(out)]) == 2
    assert message in _error(capsys)
    assert not out.exists()


def test_missing_data_file_fails_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "nope.csv"
    assert main(["run", "forecast", "--data", str(missing), "--out", str(out)]) == 2
    line = _error(capsys)
    assert str(missing) in line and "does not exist" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("date,OT\n2020-01-01 00:00,1.0\n2020-01-01 01:00,abc\n", "column 'OT', row 1 (line 3): non-numeric value 'abc'"),
        ("time,OT\n2020-01-01 00:00,1.0\n", "no 'date' column"),
        ("date,OT\nyesterday,1.0\n", "column 'date', row 0 (line 2): cannot parse 'yesterday' as a date"),
    ],
)  # fmt: skip
def test_malformed_csv_fails_before_anything_is_written(tmp_path, capsys, text, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    out = tmp_path / "run"
    assert main(["run", "forecast", "--data", str(csv), "--out", str(out)]) == 2
    line = _error(capsys)
    assert str(csv) in line and message in line
    assert not out.exists()


def test_legacy_drop_last_is_a_bare_switch_for_the_config_field(tmp_path):
    assert ForecastConfig().legacy_drop_last is False
    out = tmp_path / "r"
    assert (
        main(["run", "forecast", "--smoke", "--models", "repeat", "--legacy-drop-last", "--out", str(out)])
        == 0
    )
    assert json.loads((out / "config.json").read_text())["config"]["legacy_drop_last"] is True


def test_an_interrupted_run_resumes_to_the_same_results(tmp_path, capsys, monkeypatch):
    argv = ["run", "forecast", "--smoke", "--models", "repeat,nlinear,dlinear"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert main([*argv, "--out", str(full)]) == 0

    # Interrupt dlinear (batch 8) in its second epoch, after its first epoch's checkpoint;
    # nlinear has finished by then and must not be trained again.
    original = EpochBatches.__call__

    def interrupted(self, step):
        if self.batch_size == 8 and step == self.steps_per_epoch + 3:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(EpochBatches, "__call__", interrupted)
    assert main([*argv, "--out", str(part)]) == 130
    assert "--resume" in capsys.readouterr().err
    assert (part / "nlinear_H24" / "result.json").is_file()
    assert not (part / "dlinear_H24" / "result.json").exists()
    monkeypatch.undo()

    assert main(["run", "forecast", "--out", str(part), "--resume"]) == 0
    capsys.readouterr()

    def without_seconds(records: list[dict]) -> list[dict]:
        out = []
        for r in records:
            if "result" in r:
                r = {**r, "result": {k: v for k, v in r["result"].items() if k != "train_seconds"}}
            out.append(r)
        return out

    assert without_seconds(_records(part)) == without_seconds(_records(full))
    dlinear_steps = [r["step"] for r in RunDir(part / "dlinear_H24").read_metrics() if "loss" in r]
    assert dlinear_steps == [96, 192]  # epoch 1 continued from the checkpoint, epoch 0 not redone
    nlinear_steps = [r["step"] for r in RunDir(part / "nlinear_H24").read_metrics() if "loss" in r]
    assert nlinear_steps == [24, 48]  # finished before the interruption: only reloaded
    details = {p: json.loads((p / "details.json").read_text())["results"] for p in (full, part)}
    for name in ("nlinear", "dlinear"):
        for key in ("legacy", "all_windows", "epochs", "best_epoch", "val_mse"):
            assert details[part][name]["24"][key] == details[full][name]["24"][key], (name, key)


def test_dlinear_uses_its_first_release_settings():
    # Table 2's DLinear row: batch 8, run_longExp's default lr 1e-4, weights initialised to 1/L.
    st = settings_for("dlinear", 96, None)
    assert (st.lookback, st.lr, st.batch_size, st.epochs, st.patience) == (336, 1e-4, 8, 10, 3)
    assert st.model_kwargs == {"init": "average"}
    shared = settings_for("nlinear", 96, None)  # the shared Linear/etth1.sh script
    assert (shared.lr, shared.batch_size, shared.model_kwargs) == (0.005, 32, {})


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
