"""The ``memoryformer`` recipe at smoke size through the real CLI."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "memoryformer", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = {r["arm"]: r for r in s["rows"]}
    assert set(rows) == {"linear", "memory_mlp", "memory_all"}
    assert rows["linear"]["memory_layers"] == 0 and rows["memory_mlp"]["memory_layers"] == 2
    assert rows["memory_all"]["memory_layers"] == 4
    # tau = 4: each memory layer does 1/4 of the projection multiply-adds (up to padding of d_in)
    lin, mem = rows["linear"]["macs"], rows["memory_all"]["macs"]
    assert 3.5 < lin["projections"] / mem["projections"] <= 4.0
    assert mem["attention"] == lin["attention"] and mem["head"] == lin["head"]
    assert all(r["bpb"] < 8.5 for r in rows.values())
    assert (out / "memoryformer.png").is_file() and (
        out / "jobs" / "memory_all" / "checkpoint.safetensors"
    ).is_file()
    (out / "summary.json").unlink()
    assert main(["run", "memoryformer", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [r["bpb"] for r in again["rows"]] == [r["bpb"] for r in s["rows"]]
    assert main(["report", str(out)]) == 0
    assert "proj saving" in capsys.readouterr().out


def test_bad_code_length_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "memoryformer", "--smoke", "--out", str(out), "--set", "code_length=20"]) == 2
    assert "code_length: expected an int in [1, 16], got 20" in capsys.readouterr().err
    assert not out.exists()
