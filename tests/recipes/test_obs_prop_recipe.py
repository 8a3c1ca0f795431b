"""The ``obs-prop`` recipe through the real CLI at smoke size."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "obs-prop", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    # the theorem-level facts hold whatever the (tiny) training reached
    assert s["min_cos_no_ln"] > 1 - 1e-9
    assert 0.5 < s["mean_cos_with_ln"] < 1 - 1e-6
    assert len(s["exactness"]["no_ln"]) == 8
    widths = s["widths"]
    assert widths[-1]["one_minus_cos"] < widths[0]["one_minus_cos"]
    assert s["coupling_max_abs_err_gaussian"] < 0.1
    assert (out / "obs_prop.png").stat().st_size > 0
    assert (out / "train" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "frozen-pattern grad" in capsys.readouterr().out
    # a resume reads every finished part back and gives the same summary
    (out / "summary.json").unlink()
    assert main(["run", "obs-prop", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in s.items() if k != "wall_seconds"
    }


def test_bad_width_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "obs-prop", "--smoke", "--out", str(out), "--set", "widths=[30]"]) == 2
    err = capsys.readouterr().err
    assert "widths/d_model: each width must split into num_heads=4 even head dims, got 30" in err
    assert not out.exists()
