"""The ``quartet`` recipe at smoke size through the real CLI."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "quartet", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == {"fp32", "quartet", "rtn", "quartet_no_hadamard"}
    assert s["arms"]["fp32"]["gap_to_fp32"] == 0.0
    # the quantized arms train differently from fp32 (same seed and batches)
    assert len({round(r["val_bpb"], 9) for r in s["arms"].values()}) == 4
    assert all(
        r["val_bpb"] < 8.5 for r in s["arms"].values()
    )  # below uniform over 256 bytes (8 bits) + slack
    assert (out / "quartet.png").is_file() and (out / "quartet" / "result.json").is_file()
    (out / "summary.json").unlink()
    assert main(["run", "quartet", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["arms"] == s["arms"]
    assert main(["report", str(out)]) == 0
    assert "measured vs paper" in capsys.readouterr().out


def test_bad_arm_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "quartet", "--smoke", "--out", str(out), "--set", "arms=fp32,fp8"]) == 2
    assert "arms: expected names" in capsys.readouterr().err
    assert not out.exists()
