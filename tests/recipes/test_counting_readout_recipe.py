"""The ``counting-readout`` recipe through the real CLI at smoke size."""

import json

import pytest

from linearlab.analysis.readout_geometry import random_cos_baseline
from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "counting-readout", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["layers"] == ["embed", "block 0", "block 1"] and len(s["probe_r2"]) == 3
    # the embedding at the separator is the same for every count: nothing to decode
    assert s["probe_r2"][0] < 0.05
    assert s["random_baseline"] == pytest.approx(random_cos_baseline(32))
    assert all(0 <= c <= 1 for c in s["abs_cos_max"])
    # refitting the rows on the training split does not make held-out accuracy worse than chance
    assert s["constrained_acc_after"] >= s["chance"]
    assert (out / "counting_readout.png").stat().st_size > 0
    assert (out / "refit" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "constrained accuracy after" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "counting-readout", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["probe_r2"] == s["probe_r2"] and again["constrained_acc_after"] == s["constrained_acc_after"]


def test_bad_value_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "counting-readout", "--smoke", "--out", str(out), "--set", "probe_sequences=10"]) == 2
    assert "probe_sequences: expected >= 50" in capsys.readouterr().err
    assert not out.exists()
