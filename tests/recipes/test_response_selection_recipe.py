"""The ``response-selection`` recipe through the real CLI at smoke size."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "response-selection", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["strategies"]) == ["direct", "restate", "verbose"]
    for r in s["strategies"].values():
        assert 0 <= r["alignment"] <= 1 and r["nll"] > 0 and 0 <= r["accuracy"] <= 1
    # the target was pretrained on the direct style: it is the most familiar one to it
    assert s["selected_by_perplexity"] == "direct"
    assert (out / "finetune" / "verbose" / "checkpoint.safetensors").exists()
    assert (out / "response_selection.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "Spearman(alignment, accuracy)" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "response-selection", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["strategies"] == s["strategies"]


def test_unknown_strategy_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert (
        main(
            [
                "run",
                "response-selection",
                "--smoke",
                "--out",
                str(out),
                "--set",
                "strategies=direct,cot,verbose",
            ]
        )
        == 2
    )
    assert "strategies: expected at least 3 names from" in capsys.readouterr().err
    assert not out.exists()
