"""The ``quantvla`` recipe at smoke size through the real CLI (tiny test bed in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "quantvla", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = {r["arm"]: r for r in s["rows"]}
    assert set(rows) == {"naive", "atm", "atm_ohb"}
    # ATM brings the per-head logit std closer to the float model's, OHB the output RMS
    assert rows["atm"]["logit_std_drift"] <= rows["naive"]["logit_std_drift"]
    assert rows["atm_ohb"]["rms_drift"] <= rows["atm"]["rms_drift"]
    assert (out / "quantvla.png").is_file() and len(list((out / "jobs").iterdir())) == 3
    (out / "summary.json").unlink()
    assert main(["run", "quantvla", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["rows"] == s["rows"]
    assert main(["report", str(out)]) == 0
    assert "ATM / OHB" in capsys.readouterr().out


def test_bad_precision_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "quantvla", "--smoke", "--out", str(out), "--set", "precisions=w2a2"]) == 2
    assert "precisions: expected names" in capsys.readouterr().err
    assert not out.exists()
