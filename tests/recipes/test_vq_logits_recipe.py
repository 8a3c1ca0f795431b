"""The ``vq-logits`` recipe at smoke size through the real CLI (tiny BPE test bed in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_runs_resumes_and_reports(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "vq-logits", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    rows = {r["arm"]: r for r in s["rows"]}
    assert set(rows) == {"full", "vq16", "vq16+bias"} and s["vocab"] == 512
    assert rows["full"]["head_params"] == 512 * 32 and rows["vq16"]["head_params"] == 16 * 32
    assert rows["vq16+bias"]["head_params"] == 16 * 32 + 512
    assert all(r["bits_per_token"] > 0 for r in rows.values())
    assert set(s["timings"]) == {
        "full_logits",
        "full_loss",
        "vq_code_logits",
        "vq_scatter_loss",
        "vq_ok_loss",
    }
    assert (out / "vq_logits.png").is_file() and (out / "jobs" / "vq16" / "checkpoint.safetensors").is_file()
    (out / "summary.json").unlink()
    assert main(["run", "vq-logits", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert [r["bits_per_token"] for r in again["rows"]] == [r["bits_per_token"] for r in s["rows"]]
    assert main(["report", str(out)]) == 0
    assert "params saved" in capsys.readouterr().out


def test_codebook_larger_than_vocab_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "vq-logits", "--smoke", "--out", str(out), "--set", "codes=600"]) == 2
    assert "codes: expected codebook sizes in [1, bed_vocab=512]" in capsys.readouterr().err
    assert not out.exists()
