"""The ``lmc-landscape`` recipe through the real CLI at smoke size, its report, resume and errors."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "lmc-landscape", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["k"] for r in s["spawns"]] == [0, 300]
    for r in s["spawns"]:
        # the barrier is zero at both ends of the line, so its maximum is never negative
        assert r["max_barrier"] >= 0.0 and r["max_barrier"] >= r["midpoint_barrier"]
        assert set(r["layers"]) == {"0", "2", "4"}
        assert r["distance"] > 0
    assert (out / "lmc_landscape.png").stat().st_size > 0
    assert (out / "parent" / "step300.safetensors").exists()
    assert (out / "spawn300" / "child1" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "Spearman" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "lmc-landscape", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in s.items() if k != "wall_seconds"
    }


def test_bad_alphas_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "lmc-landscape", "--smoke", "--out", str(out), "--set", "alphas=4"]) == 2
    err = capsys.readouterr().err
    assert "alphas: expected an odd count >= 3 (so 1/2 is a point), got 4" in err
    assert not out.exists()
