"""The ``layerwise-quant`` recipe at smoke size through the real CLI (tiny test bed in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "layerwise-quant", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["mean_increase"]) == {"lim", "zd", "reverse", "random"}
    for r in s["rows"]:
        assert r["mean_bits"] <= r["budget"] + 1e-9
    # at the top budget every order keeps every block at 4 bits: the same model, the same bpb
    top = {r["bpb"] for r in s["rows"] if r["budget"] == 4.0}
    assert len(top) == 1
    # LIM and its reverse give the low width to different blocks at 3 bits
    lim3 = next(r for r in s["rows"] if r["arm"] == "lim" and r["budget"] == 3.0)
    rev3 = next(r for r in s["rows"] if r["arm"] == "reverse" and r["budget"] == 3.0)
    assert lim3["bits"] == rev3["bits"][::-1] and lim3["bits"] != rev3["bits"]
    assert (out / "layerwise_quant.png").is_file()
    (out / "summary.json").unlink()
    assert main(["run", "layerwise-quant", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["rows"] == s["rows"]
    assert main(["report", str(out)]) == 0
    assert "validation bpb vs average bits" in capsys.readouterr().out


def test_bad_budget_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "layerwise-quant", "--smoke", "--out", str(out), "--set", "budgets=5"]) == 2
    assert "budgets: expected average bits within [2, 4]" in capsys.readouterr().err
    assert not out.exists()
