"""The ``projection-head`` recipe through the real CLI at smoke size, its report, resume and errors."""

import json
import math

import pytest

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "projection-head", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    lin = s["results"]["linear"]
    assert len(lin["pre_weights"]) == len(lin["post_weights"]) == 4
    # the strongest feature is learned even at smoke size, close to its optimum weight keep_0 = 1
    assert lin["post_weights"][0] == pytest.approx(1.0, abs=0.05)
    assert s["sqrt_post_ratio"] == pytest.approx(math.sqrt(lin["post_ratio"]))
    assert 0.0 <= lin["relative_imbalance"] < 0.5
    for model in ("linear", "relu"):
        for probes in (s["results"][model]["probe_weak"], s["results"][model]["probe_strong"]):
            assert set(probes) == {"input", "pre-projection", "post-projection"}
    assert (out / "projection_head.png").stat().st_size > 0
    assert (out / "linear" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "strong/weak ratio pre-projection" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "projection-head", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in s.items() if k != "wall_seconds"
    }


def test_bad_keep_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "projection-head", "--smoke", "--out", str(out), "--set", "keep=[0.5,1.5]"]) == 2
    err = capsys.readouterr().err
    assert "keep: expected 1..19 probabilities in (0, 1], got [0.5, 1.5]" in err
    assert not out.exists()
