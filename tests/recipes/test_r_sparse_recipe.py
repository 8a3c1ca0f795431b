"""The ``r-sparse`` recipe at smoke size through the real CLI (tiny test bed in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "r-sparse", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = {r["arm"]: r for r in s["rows"]}
    assert set(rows) == {"teal", "sparse_only", "r_sparse", "low_rank", "r_sparse_search"}
    # every arm pays the same budget: half the multiply-adds (rank rounding may save a little more)
    for r in rows.values():
        assert 0.5 <= r["effective_sparsity"] < 0.6
    search = rows["r_sparse_search"]
    assert search["calib_loss_best"] <= search["calib_loss_uniform"]
    assert (out / "r_sparse.png").is_file() and len(list((out / "jobs").iterdir())) == 5
    # a resume reuses every finished job
    (out / "summary.json").unlink()
    assert main(["run", "r-sparse", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [r["bpb"] for r in again["rows"]] == [r["bpb"] for r in s["rows"]]
    assert main(["report", str(out)]) == 0
    assert "TEAL-like" in capsys.readouterr().out


def test_bad_arm_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "r-sparse", "--smoke", "--out", str(out), "--set", "arms=teal,magic"]) == 2
    assert "arms: expected names" in capsys.readouterr().err
    assert not out.exists()
