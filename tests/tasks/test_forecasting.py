"""ETT / LTSF protocol: splits, scaler, windows, drop_last, bad-data errors, the Repeat golden test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from linearlab.tasks.forecasting import (
    EpochBatches,
    Windows,
    evaluate,
    legacy_window_count,
    load_csv,
    prepare,
    rounded,
    split_borders,
    synthetic_series,
)

# The shared data folder sits next to the repository: <repo>/../shared/data.


def write_csv(path: Path, n_rows: int, n_channels: int = 2, seed: int = 0) -> np.ndarray:
    """A small hourly CSV with an ``OT`` column first (the loader moves it last); returns values."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n_rows, n_channels)) * np.arange(1, n_channels + 1) + np.arange(n_channels)
    frame = pd.DataFrame(values, columns=["OT"] + [f"c{j}" for j in range(1, n_channels)])
    frame.insert(0, "date", pd.date_range("2021-01-01", periods=n_rows, freq="h").astype(str))
    frame.to_csv(path, index=False)
    return values


def test_custom_split_borders_scaler_and_window_counts(tmp_path):
    path = tmp_path / "small.csv"
    values = write_csv(path, 100)
    series = load_csv(path)
    assert series.kind == "custom"
    assert series.columns == ["c1", "OT"]  # OT moved to the last column
    np.testing.assert_array_equal(series.values, values[:, [1, 0]])

    L, H = 8, 4
    data = prepare(series, L, H)
    # n_train = int(0.7 * 100) = 70, n_test = int(0.2 * 100) = 20, val = the remaining 10 rows.
    assert data.borders == {"train": (0, 70), "val": (62, 80), "test": (72, 100)}
    assert (len(data.train), len(data.val), len(data.test)) == (70 - 12 + 1, 18 - 12 + 1, 28 - 12 + 1)
    # Scaler: train rows only, population std.
    train = series.values[:70]
    np.testing.assert_allclose(data.mean, train.mean(0))
    np.testing.assert_allclose(data.std, train.std(0, ddof=0))
    expected_test = (series.values[72:100] - train.mean(0)) / train.std(0)
    np.testing.assert_allclose(data.test.data.numpy(), expected_test, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.inverse(data.test.data).numpy(), series.values[72:100], rtol=1e-5)


def test_scaler_ignores_validation_and_test_rows(tmp_path):
    path = tmp_path / "small.csv"
    write_csv(path, 100)
    series = load_csv(path)
    before = prepare(series, 8, 4)
    series.values[70:] *= 1000.0  # change every val/test row
    after = prepare(series, 8, 4)
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.std, after.std)


def test_ett_hour_and_minute_borders():
    L = 336
    assert split_borders(17420, L, "ett_hour") == {
        "train": (0, 8640),
        "val": (8640 - L, 11520),
        "test": (11520 - L, 14400),
    }
    assert split_borders(69680, 96, "ett_minute") == {
        "train": (0, 34560),
        "val": (34560 - 96, 46080),
        "test": (46080 - 96, 57600),
    }


def test_ett_file_name_selects_the_month_split(tmp_path):
    path = tmp_path / "ETTh9.csv"
    write_csv(path, 14400 + 5, n_channels=1)
    data = prepare(load_csv(path), lookback=24, horizon=24)
    assert data.borders["test"] == (11520 - 24, 14400)
    assert len(data.test) == 2880 - 24 + 1  # every test window count is 2880 - H + 1, whatever L


def test_windows_content_and_batches():
    data = torch.arange(20.0).reshape(10, 2)
    windows = Windows(data, lookback=3, horizon=2)
    assert len(windows) == 10 - 5 + 1
    x, y = windows.gather(torch.tensor([0, 5]))
    torch.testing.assert_close(x[1], data[5:8])
    torch.testing.assert_close(y[1], data[8:10])
    seen = torch.cat(
        [x[:, 0, 0] for x, _ in windows.batches(4, shuffle=True, generator=torch.Generator().manual_seed(1))]
    )
    assert sorted(seen.tolist()) == [2.0 * i for i in range(6)]  # each window exactly once
    sizes = [x.shape[0] for x, _ in windows.batches(4, drop_last=True)]
    assert sizes == [4]
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        next(windows.batches(0))


def _epochs_of_batches(windows: Windows, batch_size: int, seed: int, epochs: int) -> list[torch.Tensor]:
    """The reference loop's batches: ``windows.batches`` once per epoch with one persistent generator."""
    generator = torch.Generator().manual_seed(seed)
    drop_last = len(windows) >= batch_size
    return [
        x
        for _ in range(epochs)
        for x, _ in windows.batches(batch_size, shuffle=True, drop_last=drop_last, generator=generator)
    ]


@pytest.mark.parametrize(("n_rows", "batch_size"), [(30, 4), (30, 5), (12, 16)])
def test_epoch_batches_are_the_reference_loops_batches(n_rows, batch_size):
    # 30 rows, L=3, H=2: 26 windows -> 6 batches of 4 (the ragged 2 dropped) or 5 of 5;
    # 12 rows: 8 windows, fewer than a batch -> one short batch per epoch.
    windows = Windows(torch.arange(float(n_rows))[:, None], lookback=3, horizon=2)
    source = EpochBatches(windows, batch_size, seed=7)
    expected = _epochs_of_batches(windows, batch_size, seed=7, epochs=3)
    assert source.steps_per_epoch * 3 == len(expected)
    for step, want in enumerate(expected):
        x, y = source(step)
        torch.testing.assert_close(x, want, rtol=0, atol=0)
        assert y.shape == (x.shape[0], 2, 1)


def test_epoch_batches_resume_from_a_json_state_mid_epoch():
    windows = Windows(torch.arange(40.0)[:, None], lookback=3, horizon=2)  # 36 windows, 4 batches of 8
    source = EpochBatches(windows, 8, seed=3)
    for step in range(6):  # into the second epoch
        source(step)
    state = json.loads(json.dumps(source.state_dict()))  # stored in the checkpoint's JSON metadata
    rest = [source(step)[0] for step in range(6, 13)]
    resumed = EpochBatches(windows, 8, seed=999)  # the seed is overridden by the state
    resumed.load_state_dict(state)
    for step, want in zip(range(6, 13), rest):
        torch.testing.assert_close(resumed(step)[0], want, rtol=0, atol=0)
    fresh = EpochBatches(windows, 8, seed=3)
    fresh.load_state_dict(json.loads(json.dumps(EpochBatches(windows, 8, seed=3).state_dict())))
    torch.testing.assert_close(fresh(0)[0], EpochBatches(windows, 8, seed=3)(0)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="steps must come in order"):
        fresh(20)
    with pytest.raises(ValueError, match="batch_size: expected a positive integer, got 0"):
        EpochBatches(windows, 0, seed=0)


def test_legacy_drop_last_evaluates_only_whole_batches_of_32():
    torch.manual_seed(0)
    windows = Windows(torch.randn(80, 1), lookback=4, horizon=3)  # 74 windows -> 64 with drop_last
    assert len(windows) == 74 and legacy_window_count(74) == 64

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 3, 1)

    legacy = evaluate(predict, windows, legacy_drop_last=True, batch_size=10)
    every = evaluate(predict, windows, batch_size=7)
    _, y = windows.gather(torch.arange(74))
    assert legacy["windows"] == 64 and every["windows"] == 74
    assert legacy["mse"] == pytest.approx(float(y[:64].double().square().mean()), rel=1e-12)
    assert every["mae"] == pytest.approx(float(y.double().abs().mean()), rel=1e-12)
    with pytest.raises(ValueError, match=r"predict: expected output shape \(10, 3, 1\), got \(10, 2, 1\)"):
        evaluate(lambda x: torch.zeros(x.shape[0], 2, 1), windows, batch_size=10)
    with pytest.raises(ValueError, match="no window to evaluate"):
        evaluate(predict, Windows(torch.randn(20, 1), 4, 3), legacy_drop_last=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,a\n2021-01-01,1\n", r"no 'date' column; columns are \['time', 'a'\]"),
        (
            "date,a,b\n2021-01-01,1,2\n2021-01-02,3,x7\n",
            r"column 'b', row 1 \(line 3\): non-numeric value 'x7'",
        ),
        ("date,a\n2021-01-01,1\n2021-01-02,\n", r"column 'a', row 1 \(line 3\): missing value \(NaN\)"),
        ("date,a\n2021-01-01,NaN\n", r"column 'a', row 0 \(line 2\): missing value \(NaN\)"),
        (
            "date,a\n2021-01-01,1\nnot-a-date,2\n",
            r"column 'date', row 1 \(line 3\): cannot parse 'not-a-date'",
        ),
        ("date\n2021-01-01\n", r"no numeric channel besides the 'date' column"),
    ],
)
def test_bad_csv_errors_name_file_column_and_row(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_csv(path)
    assert str(path) in str(info.value)


def test_missing_file_and_too_short_series(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        load_csv(tmp_path / "absent.csv")
    path = tmp_path / "short.csv"
    write_csv(path, 30)  # val rows [21 - 8, 24): 11 rows < L + H = 12
    with pytest.raises(ValueError, match=r"short.csv: too short for lookback 8 \+ horizon 4: the val split"):
        prepare(load_csv(path), lookback=8, horizon=4)
    ett = tmp_path / "ETTh1.csv"
    write_csv(ett, 500)
    with pytest.raises(
        ValueError, match=r"ETTh1.csv: 500 rows is too short for the ett_hour split, which needs 14400"
    ):
        prepare(load_csv(ett), lookback=8, horizon=4)
    with pytest.raises(ValueError, match="split: expected one of"):
        load_csv(ett, split="weekly")
    with pytest.raises(ValueError, match="lookback: expected a positive integer, got 0"):
        prepare(load_csv(ett), lookback=0, horizon=4)


def test_synthetic_series_is_seeded_and_learnable():
    a, b, c = (
        synthetic_series(500, 3, seed=1),
        synthetic_series(500, 3, seed=1),
        synthetic_series(500, 3, seed=2),
    )
    assert a.values.shape == (500, 3) and a.columns[-1] == "OT" and a.kind == "custom"
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.allclose(a.values, c.values)
    # The daily season: a channel correlates more with itself a day back than half a day back.
    v = a.values
    for ch in range(3):
        day = np.corrcoef(v[24:, ch], v[:-24, ch])[0, 1]
        half_day = np.corrcoef(v[12:, ch], v[:-12, ch])[0, 1]
        assert day > 0.3 > half_day
    with pytest.raises(ValueError, match="n_rows: expected at least 10 rows, got 3"):
        synthetic_series(3)


def test_rounded_is_half_away_from_zero():
    assert rounded(0.0125) == 0.013 and rounded(-0.0125) == -0.013 and rounded(1.2944) == 1.294


def test_repeat_baseline_on_etth1_equals_ltsf_linear_table2(etth1_csv):
    series = load_csv(etth1_csv)
    assert series.values.shape == (17420, 7) and series.kind == "ett_hour"
    data = prepare(series, 336, 96)
    assert str(series.dates[data.borders["test"][0] + 336]) == "2017-10-24 00:00:00"
    assert str(series.dates[data.borders["val"][0] + 336]) == "2017-06-26 00:00:00"
    paper = {96: (1.295, 0.713), 192: (1.325, 0.733), 336: (1.323, 0.744), 720: (1.339, 0.756)}
    corrected = {96: (1.294, 0.713), 192: (1.325, 0.733), 336: (1.330, 0.746), 720: (1.335, 0.755)}
    counts = {96: 2785, 192: 2689, 336: 2545, 720: 2161}
    for horizon in paper:
        data = prepare(series, 336, horizon)
        assert len(data.test) == counts[horizon]

        def repeat(x: torch.Tensor, h: int = horizon) -> torch.Tensor:
            return x[:, -1:].expand(-1, h, -1)

        legacy = evaluate(repeat, data.test, legacy_drop_last=True)
        every = evaluate(repeat, data.test)
        assert (rounded(legacy["mse"]), rounded(legacy["mae"])) == paper[horizon]
        assert (rounded(every["mse"]), rounded(every["mae"])) == corrected[horizon]
