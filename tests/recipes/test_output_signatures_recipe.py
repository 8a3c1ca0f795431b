"""The ``output-signatures`` recipe through the real CLI at smoke size (test-bed LM in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "output-signatures", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["auroc"]) == {"mean log-prob", "Min-20%", "-mean entropy", "zlib ratio", "LOS-Net"}
    assert all(0 <= v <= 1 for v in s["auroc"].values())
    scores = json.loads((out / "scores.json").read_text())
    assert sum(scores["labels"]) == 32 and len(scores["labels"]) == 64
    assert (out / "finetune" / "checkpoint.safetensors").exists()
    assert (out / "los_net" / "fold1" / "checkpoint.safetensors").exists()
    assert (out / "output_signatures.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "LOS-Net - best baseline" in capsys.readouterr().out
    (out / "summary.json").unlink()
    assert main(["run", "output-signatures", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["auroc"] == s["auroc"]


def test_bad_folds_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "output-signatures", "--smoke", "--out", str(out), "--set", "folds=1"]) == 2
    assert "folds: expected 2 <= folds <= n_texts=32, got 1" in capsys.readouterr().err
    assert not out.exists()
