"""Recipe ``quantvla``: QuantVLA's ATM + OHB calibration after post-training quantization (arXiv 2602.20309).

On the shared test-bed LM (:func:`linearlab.lab.testbed.pretrained_lm`), every linear layer of the blocks
is quantized (torchao symmetric per-group weights, dynamic per-token int8 activations: W4A8 and W8A8, and
optionally weight-only), then calibrated on a few unlabeled training windows with
:func:`~linearlab.convert.quantvla.quantvla_calibrate_`: attention temperature matching (per-head query
scale) and then output head balancing (per-layer attention-output scale). Measured: validation bits per
byte for naive PTQ, + ATM, + ATM + OHB, and how far the logit std / output RMS ratios sit from 1.

Each (precision, arm) result is a file in ``jobs/`` (``--resume`` skips it).

    linearlab run quantvla [--smoke] [--set precisions=w4a8]
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from linearlab.config import require_at_least_one
from linearlab.convert.quantize import quantize_
from linearlab.convert.quantvla import quantvla_calibrate_
from linearlab.io import atomic_write_json
from linearlab.lab.tables import format_table
from linearlab.lab.testbed import TestbedFields, bits_per_byte, pretrained_lm, val_windows
from linearlab.recipes import Recipe
from linearlab.runs import RunDir

NAME = "quantvla"
PRECISIONS = {"w4a8": (4, 8), "w8a8": (8, 8), "w4": (4, None), "w3a8": (3, 8)}
ARMS = ("naive", "atm", "atm_ohb")


@dataclass
class Config(TestbedFields):
    """What ``linearlab run quantvla`` measures; ``bed_*`` fields choose the shared test-bed LM."""

    precisions: list[str] = field(default_factory=lambda: ["w4a8", "w8a8"])
    group_size: int = 32
    calib_windows: int = 8
    eval_windows: int = 32

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown or not self.precisions:
            raise ValueError(f"precisions: expected names from {list(PRECISIONS)}, got {self.precisions}")
        require_at_least_one(self, "group_size", "calib_windows", "eval_windows")


def _smoke() -> Config:
    return Config(
        precisions=["w4a8"],
        calib_windows=2,
        eval_windows=2,
        bed_d_model=32,
        bed_n_layers=2,
        bed_num_heads=2,
        bed_seq_len=64,
        bed_batch_size=4,
        bed_steps=20,
        bed_max_bytes=200_000,
    )


def _drift(ratios: dict) -> float:
    """Mean |log ratio| over layers (and heads): 0 = the quantized scale matches the float one."""
    values = []
    for r in ratios.values():
        values += [abs(math.log(float(v))) for v in (r.flatten().tolist() if hasattr(r, "flatten") else [r])]
    return sum(values) / len(values)


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    bed = pretrained_lm(cfg.bed())
    model, data = bed.model, bed.data
    windows = val_windows(data, cfg.bed_seq_len, cfg.eval_windows)
    calib = data.train[: cfg.calib_windows * cfg.bed_seq_len].reshape(cfg.calib_windows, -1).long()
    fp_bpb = bits_per_byte(model, windows, data.bytes_per_token)
    jobs = run_dir.path / "jobs"
    jobs.mkdir(exist_ok=True)
    rows = []
    for prec in cfg.precisions:
        w_bits, a_bits = PRECISIONS[prec]
        for arm in ARMS:
            path = jobs / f"{prec}_{arm}.json"
            if path.is_file():
                rows.append(json.loads(path.read_text()))
                continue
            q = copy.deepcopy(model)
            quantize_(q, w_bits, group_size=cfg.group_size, act_bits=a_bits,
                      filter_fn=lambda m, fqn: fqn.startswith("blocks."))  # fmt: skip
            res = quantvla_calibrate_(model, q, calib.split(4), atm=arm != "naive", ohb=arm == "atm_ohb")
            row = {
                "precision": prec,
                "arm": arm,
                "bpb": bits_per_byte(q, windows, data.bytes_per_token),
                "logit_std_drift_before": _drift(res.std_ratio_before),
                "logit_std_drift": _drift(res.std_ratio_after),
                "rms_drift_before": _drift(res.rms_ratio_before),
                "rms_drift": _drift(res.rms_ratio_after),
                "alpha": {k: v.tolist() for k, v in res.alpha.items()},
                "beta": res.beta,
            }
            atomic_write_json(path, row)
            rows.append(row)
    summary = {"fp_bpb": fp_bpb, "testbed_val_bpb": bed.val_bpb, "testbed": asdict(bed.config), "rows": rows}
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precs = list(dict.fromkeys(r["precision"] for r in s["rows"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(ARMS)
    for i, arm in enumerate(ARMS):
        vals = [next(r["bpb"] for r in s["rows"] if r["precision"] == p and r["arm"] == arm) for p in precs]
        ax.bar([j + i * width for j in range(len(precs))], vals, width, label=arm)
    ax.axhline(s["fp_bpb"], color="k", ls=":", label="float")
    ax.set_xticks([j + width for j in range(len(precs))], precs)
    lo = min([s["fp_bpb"], *[r["bpb"] for r in s["rows"]]])
    ax.set_ylim(lo * 0.98, None)
    ax.set(ylabel="validation bits per byte", title="QuantVLA calibration after PTQ")
    ax.legend()
    run_dir.save_figure("quantvla.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    header = ["precision", "arm", "bpb", "+bpb vs float", "logit-std drift", "out-RMS drift"]
    rows = [
        [r["precision"], r["arm"], r["bpb"], r["bpb"] - s["fp_bpb"], r["logit_std_drift"], r["rms_drift"]]
        for r in s["rows"]
    ]
    return (
        f"quantvla: PTQ then ATM / OHB calibration (float bpb {s['fp_bpb']:.4f}); drift = mean |log(quant/float)|\n"
        + format_table(header, rows)
        + "\npaper (abstract): W4A8 with ATM+OHB exceeds the full-precision task success on LIBERO "
        "(pi0.5, GR00T N1.5); a VLA benchmark, not perplexity, so only the direction compares."
    )


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """bpb increase over float of each precision and arm."""
    out = {f"{r['precision']} {r['arm']} +bpb": r["bpb"] - summary["fp_bpb"] for r in summary["rows"]}
    out["float bpb"] = summary["fp_bpb"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="QuantVLA: attention temperature matching + output head balancing after W4A8 / W8A8 PTQ",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
