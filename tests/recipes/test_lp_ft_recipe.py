"""The ``lp-ft`` recipe through the real CLI at smoke size, its report, resume and errors."""

import json

import pytest

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "lp-ft", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    r = s["results"]
    assert set(r) == {"FT", "LP", "LP-FT"}
    # LP leaves the features alone; LP-FT starts from the probed head
    assert r["LP"]["feature_change_id"] == 0.0
    assert s["ntk_at_ft_start"]["LP-FT"]["head_norm"] == pytest.approx(s["lp_head_norm_first_last"][1])
    # the head term does not depend on the head; the feature term scales with ||V||^2 only roughly
    ntk = s["ntk_at_ft_start"]
    assert ntk["FT"]["head_term"] == pytest.approx(ntk["LP-FT"]["head_term"], rel=1e-6)
    # ECE is a fraction, the fitted temperature positive
    assert all(0.0 <= v["ece"] <= 1.0 and v["temperature"] > 0 for v in r.values())
    assert (out / "lp_ft.png").stat().st_size > 0
    assert (out / "lp" / "norms.json").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "feature change FT / LP-FT" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "lp-ft", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in s.items() if k != "wall_seconds"
    }


def test_bad_minor_dims_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "lp-ft", "--smoke", "--out", str(out), "--set", "minor_dims=20"]) == 2
    err = capsys.readouterr().err
    assert "minor_dims: expected 0 <= minor_dims < d_in=20, got 20" in err
    assert not out.exists()
