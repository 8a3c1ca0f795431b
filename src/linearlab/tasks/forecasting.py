"""Long-horizon forecasting data and metrics: the ETT / LTSF benchmark protocol.

The protocol follows Informer / Autoformer / LTSF-Linear (see ``shared/notes/forecasting.md``):

* **Splits.** ETT hourly files: 12/4/4 "months" of 30 days for train/val/test, i.e. rows
  ``[0, 8640)``, ``[8640 - L, 11520)``, ``[11520 - L, 14400)``; the minute files use the same
  borders times 4 (15-minute rows); rows after month 20 are never used. Any other CSV ("custom"):
  ``n_train = int(0.7 N)``, ``n_test = int(0.2 N)``, val is the rest. Val and test segments start L
  rows early so their first window has a full look-back.
* **Scaling.** One z-score per channel, fit on the training rows only (population std, ddof=0),
  applied to the whole series. Metrics are computed on the normalised scale.
* **Windows.** Stride 1: a segment of ``n`` rows has ``n - L - H + 1`` windows
  ``x = rows[t : t+L]``, ``y = rows[t+L : t+L+H]``.
* **Metrics.** MSE and MAE averaged over every test window x H x C. ``legacy_drop_last=True``
  reproduces the published numbers, which were computed with ``drop_last=True`` on a test loader
  of batch 32: the last ``n_windows % 32`` (latest) windows are silently dropped.
* **Training batches.** :class:`EpochBatches` reshuffles the training windows every epoch from one
  seeded generator and drops the ragged last batch, as the reference loaders do; it is a stateful
  batch source for :func:`linearlab.train.train` (its state goes into the checkpoints).

Example::

    series = load_csv("ETTh1.csv")
    data = prepare(series, lookback=336, horizon=96)
    x, y = next(data.test.batches(32))      # x: [32, 336, 7], y: [32, 96, 7]
    metrics = evaluate(lambda x: x[:, -1:].expand(-1, 96, -1), data.test, legacy_drop_last=True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from linearlab.io import check_input_path

#: Rows per 30-day "month" for hourly data; ETT minute files (15-minute rows) have 4x as many.
HOURS_PER_MONTH = 30 * 24
#: Batch size of the published (buggy) test loader; only used with ``legacy_drop_last``.
LEGACY_TEST_BATCH = 32
SPLITS = ("train", "val", "test")
SPLIT_KINDS = ("auto", "ett_hour", "ett_minute", "custom")


@dataclass
class Series:
    """A multichannel series read from a CSV (or generated): ``values: [T, C]`` float64, unscaled."""

    name: str
    values: np.ndarray
    columns: list[str]
    dates: pd.DatetimeIndex
    kind: str = "custom"
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise ValueError(f"values: expected a [T, C] array, got shape {tuple(self.values.shape)}")
        if self.kind not in SPLIT_KINDS[1:]:
            raise ValueError(f"kind: expected one of {SPLIT_KINDS[1:]}, got {self.kind!r}")


def _infer_kind(path: Path) -> str:
    stem = path.stem.lower()
    if stem.startswith("etth"):
        return "ett_hour"
    if stem.startswith("ettm"):
        return "ett_minute"
    return "custom"


def load_csv(path: str | os.PathLike, split: str = "auto", date_column: str = "date") -> Series:
    """Read a CSV with a date column and numeric channels (all other columns).

    Args:
        path: the CSV file. ``ETTh*``/``ETTm*`` file names select the ETT 12/4/4-month split when
            ``split="auto"``; any other name uses the 0.7/0.1/0.2 split.
        split: ``"auto"``, ``"ett_hour"``, ``"ett_minute"`` or ``"custom"``.
        date_column: name of the timestamp column.

    Returns:
        a :class:`Series` with ``values: [T, C]``. As in LTSF-Linear's custom loader an ``OT``
        (target) column, if present, is moved to the last position.

    Raises:
        ValueError naming the file, the column and the row (0-based data row and 1-based file
        line) for a missing date column, unparsable dates, non-numeric values or missing values.
    """
    if split not in SPLIT_KINDS:
        raise ValueError(f"split: expected one of {SPLIT_KINDS}, got {split!r}")
    p = check_input_path(path, kind="file", name="data")
    try:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ValueError(f"{p}: cannot be read as CSV ({err})") from err
    if date_column not in frame.columns:
        raise ValueError(
            f"{p}: no {date_column!r} column; columns are {list(frame.columns)} "
            f"(a date column and numeric channels are required)"
        )
    channels = [c for c in frame.columns if c != date_column]
    if not channels:
        raise ValueError(f"{p}: no numeric channel besides the {date_column!r} column")
    if "OT" in channels:
        channels = [c for c in channels if c != "OT"] + ["OT"]

    dates = pd.to_datetime(frame[date_column], errors="coerce")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if bad.size:
        row = int(bad[0])
        raise ValueError(
            f"{p}: column {date_column!r}, row {row} (line {row + 2}): cannot parse "
            f"{frame[date_column].iloc[row]!r} as a date"
        )
    values = np.empty((len(frame), len(channels)), dtype=np.float64)
    for j, col in enumerate(channels):
        text = frame[col].str.strip()
        missing = (text == "") | text.str.lower().isin(["nan", "na", "null", "none"])
        if missing.any():
            row = int(np.flatnonzero(missing.to_numpy())[0])
            raise ValueError(f"{p}: column {col!r}, row {row} (line {row + 2}): missing value (NaN)")
        numbers = pd.to_numeric(text, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() | ~np.isfinite(numbers.to_numpy(dtype=float)))
        if bad.size:
            row = int(bad[0])
            raise ValueError(
                f"{p}: column {col!r}, row {row} (line {row + 2}): non-numeric value {frame[col].iloc[row]!r}"
            )
        values[:, j] = numbers.to_numpy(dtype=np.float64)
    kind = _infer_kind(p) if split == "auto" else split
    return Series(p.stem, values, channels, pd.DatetimeIndex(dates), kind=kind, source=str(p))


def synthetic_series(
    n_rows: int = 4000, n_channels: int = 3, noise: float = 0.3, seed: int = 0, name: str = "synthetic"
) -> Series:
    """Hourly seasonal + trend + noise series, the embedded default data set.

    Each channel c is ``a_c sin(2 pi t / 24 + phi_c) + b_c sin(2 pi t / 168) + slope_c t / T + noise``
    (daily and weekly seasons, a linear trend, Gaussian noise of std ``noise``), so linear models
    have something to learn and the last-value baseline does not win. Uses the custom 0.7/0.1/0.2
    split. Returns ``values: [n_rows, n_channels]``.
    """
    if n_rows < 10:
        raise ValueError(f"n_rows: expected at least 10 rows, got {n_rows}")
    if n_channels < 1:
        raise ValueError(f"n_channels: expected at least 1 channel, got {n_channels}")
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)[:, None]
    daily = rng.uniform(0.5, 2.0, n_channels) * np.sin(
        2 * np.pi * t / 24 + rng.uniform(0, 2 * np.pi, n_channels)
    )
    weekly = rng.uniform(0.2, 1.0, n_channels) * np.sin(
        2 * np.pi * t / 168 + rng.uniform(0, 2 * np.pi, n_channels)
    )
    trend = rng.uniform(-2.0, 2.0, n_channels) * t / n_rows
    values = daily + weekly + trend + noise * rng.standard_normal((n_rows, n_channels))
    dates = pd.date_range("2020-01-01", periods=n_rows, freq="h")
    columns = [f"ch{c}" for c in range(n_channels - 1)] + ["OT"]
    return Series(name, values, columns, dates, kind="custom")


def split_borders(n_rows: int, lookback: int, kind: str) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of each split, val/test starting ``lookback`` rows early.

    ``kind`` is ``"ett_hour"`` / ``"ett_minute"`` (fixed 12/4/4-month borders) or ``"custom"``
    (0.7/0.1/0.2 of ``n_rows``). Training rows (for the scaler) are ``[0, borders["train"][1])``.
    """
    if kind in ("ett_hour", "ett_minute"):
        month = HOURS_PER_MONTH * (4 if kind == "ett_minute" else 1)
        ends = (12 * month, 16 * month, 20 * month)
    elif kind == "custom":
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        ends = (n_train, n_rows - n_test, n_rows)
    else:
        raise ValueError(f"kind: expected one of {SPLIT_KINDS[1:]}, got {kind!r}")
    starts = (0, ends[0] - lookback, ends[1] - lookback)
    return {name: (s, e) for name, s, e in zip(SPLITS, starts, ends)}


@dataclass
class Windows:
    """All stride-1 windows of one split segment.

    ``data: [n_rows, C]`` float32 (scaled); window ``i`` is ``x = data[i : i+L]``,
    ``y = data[i+L : i+L+H]``.
    """

    data: torch.Tensor
    lookback: int
    horizon: int

    def __len__(self) -> int:
        return max(0, self.data.shape[0] - self.lookback - self.horizon + 1)

    def gather(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows at ``index: [B]`` -> ``(x: [B, L, C], y: [B, H, C])``."""
        span = torch.arange(self.lookback + self.horizon)
        block = self.data[index[:, None] + span]
        return block[:, : self.lookback], block[:, self.lookback :]

    def batches(
        self,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x: [B, L, C], y: [B, H, C])`` in order (or shuffled); ``drop_last`` skips a short tail."""
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.gather(order[start : min(start + batch_size, stop)])


class EpochBatches:
    """Training batches for :func:`linearlab.train.train`: a fresh shuffle of ``windows`` every epoch.

    ``batches(step)`` is batch ``step % steps_per_epoch`` of epoch ``step // steps_per_epoch``; each
    epoch's order is ``torch.randperm`` drawn from one persistent generator seeded with ``seed``, so
    the batches are exactly those of ``windows.batches(batch_size, shuffle=True, drop_last=...,
    generator=g)`` called once per epoch with the same ``g`` (the reference loaders' loop). As
    there, the ragged last batch is dropped, unless the split holds fewer windows than one batch:
    then every epoch is that one short batch.

    The generator is stateful, so a resumed run needs its state: ``state_dict()`` (JSON values,
    stored by the training loop in every checkpoint) and ``load_state_dict(state)``. Steps must be
    asked for in order (a resume may continue from any step the state was saved at).

    Shapes: ``batches(step) -> (x: [B, L, C], y: [B, H, C])``.
    """

    def __init__(self, windows: Windows, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
        if len(windows) == 0:
            raise ValueError("windows: no training window to draw batches from")
        self.windows = windows
        self.batch_size = batch_size
        self.drop_last = len(windows) >= batch_size
        self.steps_per_epoch = len(windows) // batch_size if self.drop_last else 1
        self._generator = torch.Generator().manual_seed(seed)
        self._epoch = -1  # the epoch whose order is drawn (-1: none yet)
        self._order = torch.empty(0, dtype=torch.long)
        # the generator's state before drawing the current epoch's order, to redraw it on resume
        self._state_before = self._generator.get_state()

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            if epoch != self._epoch + 1:
                raise RuntimeError(
                    f"EpochBatches: step {step} is in epoch {epoch}, but the last drawn epoch is "
                    f"{self._epoch}; steps must come in order"
                )
            self._draw(epoch)
        start = index * self.batch_size
        return self.windows.gather(self._order[start : start + self.batch_size])

    def _draw(self, epoch: int) -> None:
        self._state_before = self._generator.get_state()
        self._order = torch.randperm(len(self.windows), generator=self._generator)
        self._epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state: the current epoch and the generator state before its shuffle."""
        return {"epoch": self._epoch, "generator": self._state_before.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()`` output: redraw the saved epoch's order from the saved state."""
        self._generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        epoch = int(state["epoch"])
        if epoch >= 0:
            self._draw(epoch)
        else:
            self._epoch, self._state_before = -1, self._generator.get_state()


@dataclass
class ForecastData:
    """A scaled series cut into train/val/test :class:`Windows` for one (L, H)."""

    name: str
    lookback: int
    horizon: int
    columns: list[str]
    mean: np.ndarray
    std: np.ndarray
    borders: dict[str, tuple[int, int]]
    train: Windows
    val: Windows
    test: Windows
    source: str = "<memory>"
    dates: pd.DatetimeIndex | None = field(default=None, repr=False)

    @property
    def n_channels(self) -> int:
        return len(self.columns)

    def split(self, name: str) -> Windows:
        if name not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {name!r}")
        return getattr(self, name)

    def inverse(self, values: torch.Tensor) -> torch.Tensor:
        """Undo the scaling: ``values: [..., C]`` -> original units."""
        mean = torch.as_tensor(self.mean, dtype=values.dtype)
        std = torch.as_tensor(self.std, dtype=values.dtype)
        return values * std + mean


def prepare(series: Series, lookback: int = 336, horizon: int = 96) -> ForecastData:
    """Split, scale (train rows only) and window ``series`` for look-back L and horizon H.

    Raises:
        ValueError naming the source file when the series is too short for the split borders or
        leaves a split without a single ``L + H`` window.
    """
    if lookback < 1:
        raise ValueError(f"lookback: expected a positive integer, got {lookback}")
    if horizon < 1:
        raise ValueError(f"horizon: expected a positive integer, got {horizon}")
    n_rows = series.values.shape[0]
    borders = split_borders(n_rows, lookback, series.kind)
    if borders["test"][1] > n_rows:
        raise ValueError(
            f"{series.source}: {n_rows} rows is too short for the {series.kind} split, which needs "
            f"{borders['test'][1]} rows (20 months of 30 days)"
        )
    for name, (start, end) in borders.items():
        if start < 0 or end - start < lookback + horizon:
            raise ValueError(
                f"{series.source}: too short for lookback {lookback} + horizon {horizon}: the {name} split "
                f"has rows [{start}, {end}) ({n_rows} rows in total), which leaves no full window"
            )
    train_rows = series.values[: borders["train"][1]]
    mean = train_rows.mean(axis=0)
    std = train_rows.std(axis=0)  # population std (ddof=0), as sklearn's StandardScaler
    std = np.where(std > 0, std, 1.0)  # a constant channel is left unscaled, as sklearn does
    scaled = torch.from_numpy((series.values - mean) / std).float()
    windows = {
        name: Windows(scaled[start:end].clone(), lookback, horizon) for name, (start, end) in borders.items()
    }
    return ForecastData(
        name=series.name,
        lookback=lookback,
        horizon=horizon,
        columns=list(series.columns),
        mean=mean,
        std=std,
        borders=borders,
        source=series.source,
        dates=series.dates,
        **windows,
    )


def legacy_window_count(n_windows: int, batch_size: int = LEGACY_TEST_BATCH) -> int:
    """Windows the published protocol evaluates: ``drop_last=True`` keeps whole batches only."""
    return (n_windows // batch_size) * batch_size


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    windows: Windows,
    legacy_drop_last: bool = False,
    batch_size: int = 256,
) -> dict[str, float]:
    """MSE and MAE of ``predict(x: [B, L, C]) -> [B, H, C]`` over the windows of a split.

    With ``legacy_drop_last`` only the first ``legacy_window_count(len(windows))`` windows count
    (the published test loader: batch 32, ``drop_last=True``). Sums are accumulated in float64.

    Returns:
        ``{"mse": ..., "mae": ..., "windows": n}``.
    """
    n = legacy_window_count(len(windows)) if legacy_drop_last else len(windows)
    if n == 0:
        raise ValueError(
            f"windows: no window to evaluate ({len(windows)} windows, legacy_drop_last={legacy_drop_last})"
        )
    sq = ab = 0.0
    count = 0
    for start in range(0, n, batch_size):
        x, y = windows.gather(torch.arange(start, min(start + batch_size, n)))
        pred = predict(x)
        if pred.shape != y.shape:
            raise ValueError(f"predict: expected output shape {tuple(y.shape)}, got {tuple(pred.shape)}")
        err = (pred - y).double()
        sq += float(err.square().sum())
        ab += float(err.abs().sum())
        count += err.numel()
    return {"mse": sq / count, "mae": ab / count, "windows": n}


def rounded(x: float, digits: int = 3) -> float:
    """Round half away from zero, the way tables print (Python's round() is half-to-even)."""
    scale = 10**digits
    return math.floor(abs(x) * scale + 0.5) / scale * (1 if x >= 0 else -1)
