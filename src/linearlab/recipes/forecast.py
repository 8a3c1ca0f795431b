"""Recipe ``forecast``: linear forecasters on the ETT / LTSF protocol, next to the papers' tables.

``linearlab run forecast [--data PATH] [--models repeat,dlinear,...] [--horizons 96,192,...]
[--lookback L] [--set legacy_drop_last=true] [--out DIR]`` trains each model for each horizon
(Adam, early stopping on validation MSE, fixed seed, the papers' hyper-parameters) through the one
training loop, prints a table of MSE, MAE, parameter count and training seconds next to the
published numbers when the data set is ETTh1, and writes into the run directory:

* ``summary.json``: ``{"<model>": {"<horizon>": {"mse", "mae", "params", "train_seconds"}}}``
  (metrics under the protocol chosen by ``legacy_drop_last``; the CLI adds ``wall_seconds``);
* ``details.json``: both protocols' test metrics, validation MSE, epochs, settings, data borders;
* ``metrics.jsonl``: one line per epoch and one result line per (model, horizon);
  ``forecast_H<h>_L<l>.png``: forecasts against the truth;
* ``<model>_H<h>/``: that training's checkpoint and per-step log, so ``--resume`` continues an
  interrupted run (finished trainings are not repeated).

With no ``--data`` it runs on the embedded synthetic series. ``--lookback`` forces one L for every
model; by default (0) LTSF-Linear models use 336 and MixLinear / SWIFT 720, as in their papers.
Every field of :class:`ForecastConfig` can be set with ``--set name=value``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.models.forecast import FORECASTERS, LINEAR_INITS, Forecaster, create_forecaster
from linearlab.recipes import Flag, Recipe
from linearlab.runs import RunDir
from linearlab.tasks.forecasting import (
    EpochBatches,
    ForecastData,
    Series,
    evaluate,
    load_csv,
    prepare,
    rounded,
    synthetic_series,
)
from linearlab.train import TrainConfig, train

DEFAULT_MODELS = ("repeat", "linear", "nlinear", "dlinear", "mixlinear", "swift", "fourier")
DEFAULT_HORIZONS = (96, 192, 336, 720)

# Published ETTh1 numbers (MSE, MAE or None), see shared/notes/forecasting.md section 3.
# LTSF-Linear Table 2: L=336, test drop_last bug in effect.
PAPER_ETTH1: dict[str, dict[int, tuple[float, float | None]]] = {
    "repeat": {96: (1.295, 0.713), 192: (1.325, 0.733), 336: (1.323, 0.744), 720: (1.339, 0.756)},
    "linear": {96: (0.375, 0.397), 192: (0.418, 0.429), 336: (0.479, 0.476), 720: (0.624, 0.592)},
    "nlinear": {96: (0.374, 0.394), 192: (0.408, 0.415), 336: (0.429, 0.427), 720: (0.440, 0.453)},
    "dlinear": {96: (0.375, 0.399), 192: (0.405, 0.416), 336: (0.439, 0.443), 720: (0.472, 0.490)},
    # MixLinear appendix Table 5 (L=720, MSE only; second-hand quote, H=336/720 not recovered).
    "mixlinear": {96: (0.351, None), 192: (0.395, None)},
}
# After the drop_last fix: DLinear re-run in the FITS README (MSE only).
PAPER_ETTH1_FIXED: dict[str, dict[int, float]] = {
    "dlinear": {96: 0.384, 192: 0.443, 336: 0.446, 720: 0.504},
}
PAPER_SOURCE = {
    "repeat": "LTSF-Linear Table 2",
    "linear": "LTSF-Linear Table 2",
    "nlinear": "LTSF-Linear Table 2",
    "dlinear": "LTSF-Linear Table 2",
    "mixlinear": "MixLinear App. Table 5 (secondary)",
    "swift": "not recovered",
    "fourier": "no ETT table",
}

# MixLinear's official ETTh1 scripts: (lpf, alpha) per horizon.
MIXLINEAR_ETTH1 = {96: (1, 0.95), 192: (5, 0.95), 336: (2, 0.99), 720: (19, 0.99)}
# SWIFT's official ETTh1 script: (lr, batch) per horizon.
SWIFT_ETTH1 = {96: (0.02, 256), 192: (0.03, 256), 336: (0.01, 128), 720: (0.03, 256)}


@dataclass
class ForecastConfig:
    """Everything ``linearlab run forecast`` does; set a field with ``--set name=value`` (or its flag)."""

    data: str = ""  # CSV with a date column; empty: the embedded synthetic series
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    horizons: list[int] = field(default_factory=lambda: list(DEFAULT_HORIZONS))
    lookback: int = 0  # 0: each model's paper L (336; MixLinear and SWIFT 720)
    # score only the whole test batches of 32, as the published (buggy) test loader did: use it to
    # compare with the papers' tables; both protocols' numbers are in details.json either way
    legacy_drop_last: bool = False
    seed: int = 2021  # LTSF-Linear's fix_seed
    max_epochs: int = 0  # 0 = each model's own epoch budget
    plot_windows: int = 3
    synthetic_rows: int = 8000
    synthetic_channels: int = 3
    individual: bool = False  # per-channel weights for linear / nlinear / dlinear (the "-I" rows)
    # "auto": each model's published init (1/L weights for DLinear, nn.Linear's for Linear/NLinear);
    # "default" / "average" force one init on linear / nlinear / dlinear.
    linear_init: str = "auto"
    lr: float = 0.0  # 0 = each model's published learning rate
    batch_size: int = 0  # 0 = each model's published training batch size

    def __post_init__(self) -> None:
        # names (models) and the data file are checked by `check`, which needs the registry and disk
        if not self.models:
            raise ValueError("models: give at least one forecaster")
        if len(set(self.models)) != len(self.models):
            raise ValueError(f"models: each model once, got {self.models}")
        if not self.horizons or any(h < 1 for h in self.horizons):
            raise ValueError(f"horizons: expected positive integers, got {self.horizons}")
        if len(set(self.horizons)) != len(self.horizons):
            raise ValueError(f"horizons: each horizon once, got {self.horizons}")
        if self.lookback < 0:
            raise ValueError(
                f"lookback: expected 0 (each paper's) or a positive integer, got {self.lookback}"
            )
        if self.linear_init not in ("auto", *LINEAR_INITS):
            raise ValueError(
                f"linear_init: expected one of {('auto', *LINEAR_INITS)}, got {self.linear_init!r}"
            )
        if self.lr < 0 or not math.isfinite(self.lr):
            raise ValueError(f"lr: expected 0 (the paper's) or a positive finite rate, got {self.lr}")
        if self.batch_size < 0:
            raise ValueError(
                f"batch_size: expected 0 (the paper's) or a positive size, got {self.batch_size}"
            )
        if self.max_epochs < 0:
            raise ValueError(
                f"max_epochs: expected 0 (each model's) or a positive count, got {self.max_epochs}"
            )
        if self.plot_windows < 1:
            raise ValueError(f"plot_windows: expected a positive count, got {self.plot_windows}")
        if self.synthetic_rows < 10:
            raise ValueError(f"synthetic_rows: expected at least 10 rows, got {self.synthetic_rows}")
        if self.synthetic_channels < 1:
            raise ValueError(
                f"synthetic_channels: expected at least 1 channel, got {self.synthetic_channels}"
            )


def _smoke() -> ForecastConfig:
    """Seconds on one core: 1200 x 2 synthetic rows, H=24, L=48, two epochs per model."""
    return ForecastConfig(horizons=[24], lookback=48, max_epochs=2, synthetic_rows=1200, synthetic_channels=2)


@dataclass
class TrainSettings:
    """Per-model training settings (the papers' ETTh1 scripts)."""

    lookback: int
    lr: float
    batch_size: int
    epochs: int
    patience: int
    lradj: str  # "type1": halve every epoch after the first; "type3": x0.8 per epoch after the 4th
    model_kwargs: dict[str, Any]


def settings_for(name: str, horizon: int, lookback: int | None) -> TrainSettings:
    """The papers' training settings for ``name`` at ``horizon`` (ETTh1 scripts; used for any data)."""
    if name in ("mixlinear", "swift"):
        if name == "mixlinear":
            # lr 0.03, bs 256, 30 epochs, patience 10 (etth1_best.sh); lradj type3 is assumed from
            # its SparseTSF code base. Unlisted horizons take lpf 5, alpha 0.95.
            lpf, alpha = MIXLINEAR_ETTH1.get(horizon, (5, 0.95))
            lr, batch, patience, kwargs = 0.03, 256, 10, {"lpf": lpf, "alpha": alpha}
        else:
            lr, batch = SWIFT_ETTH1.get(horizon, (0.02, 256))
            patience, kwargs = 5, {"kernel_size": 13, "dropout": 0.4}
        L = lookback or 720
        if name == "mixlinear":
            kwargs["lpf"] = min(kwargs["lpf"], max(1, L // 24))
        return TrainSettings(L, lr, batch, 30, patience, "type3", kwargs)
    if name == "dlinear":
        # Table 2's DLinear row comes from DLinear's first release: its own ETTh1 script
        # (scripts/EXP-LongForecasting/DLinear/etth1.sh) passes batch 8 and keeps run_longExp's
        # default lr 1e-4, and that release's DLinear.py sets both weight matrices to 1/L. With the
        # later shared script (lr 0.005, batch 32, default init) DLinear lands 10-20% above the
        # table at H >= 192; see the README.
        return TrainSettings(lookback or 336, 1e-4, 8, 10, 3, "type1", {"init": "average"})
    # LTSF-Linear ETTh1 (scripts/EXP-LongForecasting/Linear/etth1.sh, also used for the Fourier
    # forecaster): lr 0.005, batch 32, 10 epochs, patience 3, lradj type1.
    return TrainSettings(lookback or 336, 0.005, 32, 10, 3, "type1", {})


def learning_rate(base: float, epoch: int, lradj: str) -> float:
    """Learning rate for 0-based ``epoch`` under the reference code's ``adjust_learning_rate``."""
    if lradj == "type1":
        return base * 0.5 ** max(0, epoch - 1)
    if lradj == "type3":
        return base if epoch <= 3 else base * 0.8 ** (epoch - 3)
    raise ValueError(f"lradj: expected 'type1' or 'type3', got {lradj!r}")


def _settings(cfg: ForecastConfig, name: str, horizon: int) -> TrainSettings:
    """The paper's settings for ``name`` at ``horizon`` with the config's overrides applied."""
    st = settings_for(name, horizon, cfg.lookback or None)
    if cfg.max_epochs:
        st.epochs = min(st.epochs, cfg.max_epochs)
    if name in ("linear", "nlinear", "dlinear"):
        if cfg.individual:
            st.model_kwargs["individual"] = True
        if cfg.linear_init != "auto":
            st.model_kwargs["init"] = cfg.linear_init
    if cfg.lr:
        st.lr = cfg.lr
    if cfg.batch_size:
        st.batch_size = cfg.batch_size
    return st


def _series(cfg: ForecastConfig) -> Series:
    if cfg.data:
        return load_csv(cfg.data)
    return synthetic_series(cfg.synthetic_rows, cfg.synthetic_channels, seed=cfg.seed)


def check(cfg: ForecastConfig) -> None:
    """Fail before anything is written: unknown models, a missing or malformed data file, a series
    too short for a (lookback, horizon), or a model that cannot be built at that (L, H)."""
    FORECASTERS.check(cfg.models)
    series = _series(cfg)  # the real loader: its errors name the file, column and row
    prepared: set[tuple[int, int]] = set()
    with torch.random.fork_rng(devices=[]):  # building the models must not move the global RNG
        for horizon in cfg.horizons:
            for name in cfg.models:
                st = _settings(cfg, name, horizon)
                if (st.lookback, horizon) not in prepared:
                    prepare(series, st.lookback, horizon)
                    prepared.add((st.lookback, horizon))
                try:
                    create_forecaster(name, st.lookback, horizon, series.values.shape[1], **st.model_kwargs)
                except ValueError as err:
                    raise ValueError(
                        f"models: {name} at horizon {horizon}, lookback {st.lookback}: {err}"
                    ) from None


def _loss(
    model: Forecaster, batch: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    return model.loss(x, y), {}


def fit(
    model: Forecaster,
    data: ForecastData,
    settings: TrainSettings,
    seed: int,
    folder: RunDir | None = None,
    progress: bool = False,
    desc: str = "train",
) -> dict[str, Any]:
    """Adam on ``model.loss`` with early stopping on validation MSE, through ``linearlab.train.train``.

    One epoch is ``steps_per_epoch`` steps of :class:`EpochBatches`; the learning rate follows
    ``settings.lradj`` per epoch; validation MSE is evaluated after every epoch, training stops after
    ``settings.patience`` epochs without improvement, and the best epoch's weights are restored.
    With a ``folder`` the training checkpoints every epoch and resumes from it (a finished training
    only restores its best weights). Call it right after building the model under
    ``torch.manual_seed(seed)``, as the reference code does.

    Returns ``{"epochs": run, "best_epoch": e, "val_mse": best}`` (0-based ``best_epoch``);
    parameter-free models are not trained (``{"epochs": 0, "best_epoch": None, ...}``).
    """
    if not any(p.requires_grad for p in model.parameters()):
        model.eval()
        return {"epochs": 0, "best_epoch": None, "val_mse": evaluate(model, data.val)["mse"]}
    batches = EpochBatches(data.train, settings.batch_size, seed)
    per_epoch = batches.steps_per_epoch
    cfg = TrainConfig(
        steps=settings.epochs * per_epoch,
        batch_size=settings.batch_size,
        lr=settings.lr,
        # Adam: AdamW without weight decay, no warm-up, no clipping (the reference code)
        optimizer="adamw",
        weight_decay=0.0,
        betas=(0.9, 0.999),
        warmup_steps=0,
        grad_clip=0.0,
        schedule="constant",
        monitor="val_mse",
        patience=settings.patience,
        eval_every=per_epoch,
        log_every=per_epoch,  # one record per epoch: its mean training loss
        checkpoint_every=per_epoch,
        # the global RNG was seeded before the model was built, as in the reference code, so
        # dropout (SWIFT) draws continue from where initialisation stopped: do not reseed
        seed=None,
        progress=progress,
    )
    result = train(
        model,
        batches,
        _loss,
        cfg,
        run_dir=folder,
        eval_fn=lambda m: {"val_mse": evaluate(m, data.val)["mse"]},
        resume=folder is not None,
        desc=desc,
        lr_fn=lambda step: learning_rate(settings.lr, step // per_epoch, settings.lradj),
    )
    model.eval()
    best_epoch = None if result.best_step is None else result.best_step // per_epoch - 1
    return {"epochs": result.steps // per_epoch, "best_epoch": best_epoch, "val_mse": result.best_metric}


def _epoch_records(folder: RunDir, epochs: int) -> list[dict[str, Any]]:
    """Per-epoch ``{"epoch", "lr", "train_loss", "val_mse"}`` from the training's own log.

    The loop logged the epoch's mean loss and then its evaluation at the epoch's last step; a
    resumed training may have logged a step twice, the later record wins.
    """
    train_log: dict[int, dict[str, Any]] = {}
    val_log: dict[int, float] = {}
    for record in folder.read_metrics():
        if "loss" in record:
            train_log[record["step"]] = record
        if "eval/val_mse" in record:
            val_log[record["step"]] = record["eval/val_mse"]
    ends = sorted(train_log)[:epochs]  # the last step of each epoch, in order
    return [
        {"epoch": e, "lr": train_log[s]["lr"], "train_loss": train_log[s]["loss"], "val_mse": val_log[s]}
        for e, s in enumerate(ends)
    ]


def _plot(run_dir: RunDir, data: ForecastData, predictions: dict[str, Forecaster], n_windows: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(data.test)
    picks = torch.linspace(0, n - 1, max(1, n_windows)).round().long().unique()
    fig, axes = plt.subplots(len(picks), 1, figsize=(9, 2.6 * len(picks)), squeeze=False)
    x, y = data.test.gather(picks)
    channel = data.n_channels - 1  # the target ("OT") column comes last
    for row, ax in enumerate(axes[:, 0]):
        L = x.shape[1]
        ax.plot(range(L), x[row, :, channel], color="0.5", lw=0.8, label="history")
        ax.plot(range(L, L + data.horizon), y[row, :, channel], color="k", lw=1.2, label="truth")
        for name, model in predictions.items():
            with torch.no_grad():
                ax.plot(
                    range(L, L + data.horizon), model(x[row : row + 1])[0, :, channel], lw=1.0, label=name
                )
        ax.set_title(
            f"{data.name} test window {int(picks[row])}, channel {data.columns[channel]}", fontsize=9
        )
        ax.set_xlim(max(0, L - 2 * data.horizon), L + data.horizon)
    axes[0, 0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    run_dir.save_figure(f"forecast_H{data.horizon}_L{data.lookback}.png", fig)


def _train_job(
    model: Forecaster,
    data: ForecastData,
    settings: TrainSettings,
    seed: int,
    run_dir: RunDir,
    job: str,
    progress: bool,
) -> tuple[dict[str, Any], float, list[dict[str, Any]]]:
    """:func:`fit` in the sub-folder ``run_dir/job`` (checkpoint, per-step log, ``result.json``).

    Returns the fit summary, the training seconds and the per-epoch records. A training finished by
    an earlier, interrupted call is not repeated: its best weights are reloaded and the seconds it
    took are read back from ``result.json``. Parameter-free models get no sub-folder.
    """
    if not any(p.requires_grad for p in model.parameters()):
        start = time.perf_counter()
        result = fit(model, data, settings, seed)
        return result, time.perf_counter() - start, []
    folder = RunDir.create("forecast", run_dir.path / job)
    done = folder.file("result.json")
    previous = json.loads(done.read_text(encoding="utf-8")) if done.exists() else None
    start = time.perf_counter()
    result = fit(model, data, settings, seed, folder=folder, progress=progress, desc=job)
    seconds = previous["train_seconds"] if previous else time.perf_counter() - start
    if previous is None:
        folder.write_text("result.json", json.dumps({"train_seconds": seconds}) + "\n")
    return result, seconds, _epoch_records(folder, result["epochs"])


def run(cfg: ForecastConfig, run_dir: RunDir) -> dict[str, Any]:
    """Train and evaluate every (model, horizon); returns the ``summary.json`` dict."""
    series = _series(cfg)
    progress = sys.stderr.isatty()
    # a resumed run does not log again what the interrupted one already logged
    logged = {(r.get("model"), r.get("horizon"), r.get("epoch", "result")) for r in run_dir.read_metrics()}

    def log(record: dict[str, Any]) -> None:
        key = (record["model"], record["horizon"], record.get("epoch", "result"))
        if key not in logged:
            run_dir.log_metrics(record)
            logged.add(key)

    summary: dict[str, Any] = {m: {} for m in cfg.models}
    details: dict[str, Any] = {
        "data": {
            "name": series.name,
            "source": series.source,
            "rows": series.values.shape[0],
            "channels": series.columns,
            "split": series.kind,
        },
        "legacy_drop_last": cfg.legacy_drop_last,
        "results": {m: {} for m in cfg.models},
    }
    datasets: dict[tuple[int, int], ForecastData] = {}
    for horizon in cfg.horizons:
        trained: dict[str, Forecaster] = {}
        for name in cfg.models:
            st = _settings(cfg, name, horizon)
            key = (st.lookback, horizon)
            if key not in datasets:
                datasets[key] = prepare(series, st.lookback, horizon)
            data = datasets[key]
            torch.manual_seed(cfg.seed)
            model = create_forecaster(name, st.lookback, horizon, data.n_channels, **st.model_kwargs)
            result, seconds, epochs = _train_job(
                model, data, st, cfg.seed, run_dir, f"{name}_H{horizon}", progress
            )
            for record in epochs:
                log({"model": name, "horizon": horizon, **record})

            legacy = evaluate(model, data.test, legacy_drop_last=True)
            every = evaluate(model, data.test, legacy_drop_last=False)
            chosen = legacy if cfg.legacy_drop_last else every
            summary[name][str(horizon)] = {
                "mse": chosen["mse"],
                "mae": chosen["mae"],
                "params": model.num_parameters(),
                "train_seconds": round(seconds, 2),
            }
            details["results"][name][str(horizon)] = {
                "lookback": st.lookback,
                "settings": dict(vars(st)),
                "real_params": model.num_real_parameters(),
                "legacy": legacy,
                "all_windows": every,
                **result,
            }
            log({"model": name, "horizon": horizon, "result": summary[name][str(horizon)]})
            trained[name] = model
        for L in sorted({m.lookback for m in trained.values()}):
            subset = {n: m for n, m in trained.items() if m.lookback == L}
            _plot(run_dir, datasets[(L, horizon)], subset, cfg.plot_windows)
    run_dir.write_text("details.json", json.dumps(details, indent=2, default=str) + "\n")
    text = format_table(summary, details)
    run_dir.write_text("table.txt", text + "\n")
    print(text)
    return summary


def _fmt(x: float | None) -> str:
    return "  -  " if x is None else f"{rounded(x):.3f}"


def format_table(summary: dict[str, Any], details: dict[str, Any]) -> str:
    """The printed table: ours (chosen protocol and every window) next to the papers' ETTh1 numbers."""
    is_etth1 = details["data"]["name"].lower() == "etth1"
    legacy = details["legacy_drop_last"]
    head = (
        f"{'model':10s} {'H':>4s} {'L':>4s} {'params':>8s} {'train s':>8s} "
        f"{'MSE':>6s} {'MAE':>6s} | {'all-win MSE':>11s} {'MAE':>6s}"
    )
    if is_etth1:
        head += f" | {'paper MSE':>9s} {'MAE':>6s} {'dMSE%':>6s} {'fixed MSE':>9s}  source"
    lines = [
        f"data: {details['data']['source']}  protocol: {'legacy drop_last (batch 32)' if legacy else 'every test window'}",
        head,
        "-" * len(head),
    ]
    for name, per_h in summary.items():
        for h, row in per_h.items():
            d = details["results"][name][h]
            line = (
                f"{name:10s} {int(h):4d} {d['lookback']:4d} {row['params']:8d} {row['train_seconds']:8.1f} "
                f"{_fmt(row['mse']):>6s} {_fmt(row['mae']):>6s} | "
                f"{_fmt(d['all_windows']['mse']):>11s} {_fmt(d['all_windows']['mae']):>6s}"
            )
            if is_etth1:
                paper = PAPER_ETTH1.get(name, {}).get(int(h))
                fixed = PAPER_ETTH1_FIXED.get(name, {}).get(int(h))
                delta = "" if paper is None else f"{100 * (row['mse'] - paper[0]) / paper[0]:+.1f}"
                line += (
                    f" | {_fmt(paper[0] if paper else None):>9s} {_fmt(paper[1] if paper else None):>6s} "
                    f"{delta:>6s} {_fmt(fixed):>9s}  {PAPER_SOURCE.get(name, '')}"
                )
            lines.append(line)
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Test MSE per model and horizon (under the run's protocol, see ``legacy_drop_last``)."""
    return {
        f"{name} MSE H={h}": row["mse"]
        for name, per_h in summary.items()
        if isinstance(per_h, dict)
        for h, row in per_h.items()
        if isinstance(row, dict) and "mse" in row
    }


def report(run_dir: RunDir) -> str:
    """Rebuild the table from ``summary.json`` and ``details.json``."""
    summary = {k: v for k, v in run_dir.read_summary().items() if isinstance(v, dict)}
    path = run_dir.file("details.json")
    if not path.is_file():
        raise ValueError(f"run_dir: {str(path)!r} not found: is this a finished forecast run?")
    return format_table(summary, json.loads(path.read_text(encoding="utf-8")))


RECIPE = Recipe(
    name="forecast",
    help="LTSF-Linear / MixLinear / SWIFT / Fourier-head forecasters on the ETT protocol",
    config=ForecastConfig,
    presets={"default": ForecastConfig, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    flags=(
        Flag("--data", "data", "CSV with a date column (default: the synthetic series)"),
        Flag("--models", "models", f"comma-separated model names (default {','.join(DEFAULT_MODELS)})"),
        Flag("--horizons", "horizons", "comma-separated horizons (default 96,192,336,720)"),
        Flag("--lookback", "lookback", "one L for all models (default 0: each paper's)"),
        Flag(
            "--legacy-drop-last",
            "legacy_drop_last",
            "the published test protocol (drop_last bug)",
            switch=True,
        ),
    ),
    check=check,
)

__all__ = [
    "RECIPE",
    "ForecastConfig",
    "TrainSettings",
    "check",
    "fit",
    "learning_rate",
    "settings_for",
]
