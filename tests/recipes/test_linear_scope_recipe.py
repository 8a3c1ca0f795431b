"""The ``linear-scope`` recipe through the real CLI at smoke size, its report, resume and errors."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "linear-scope", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    # exact identities, whatever the (tiny) training reached
    assert s["reconstruction_max_abs_err"] < 1e-5 * max(1.0, s["max_abs_output"])
    assert s["jacobian_max_abs_err"] < 1e-5
    assert 0.0 <= s["bias_share_mean"] <= 1.0
    assert s["test_accuracy"] > 0.3  # well above chance (0.1) after 60 steps
    assert (out / "linear_scope.png").stat().st_size > 0
    assert (out / "train" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "max |A - autograd J|" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "linear-scope", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in s.items() if k != "wall_seconds"
    }


def test_bad_channels_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "linear-scope", "--smoke", "--out", str(out), "--set", "channels=[8]"]) == 2
    err = capsys.readouterr().err
    assert "channels: expected two positive channel counts, got [8]" in err
    assert not out.exists()
