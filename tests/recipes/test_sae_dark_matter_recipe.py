"""The ``sae-dark-matter`` recipe through the real CLI at smoke size (test-bed LM in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_run_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "sae-dark-matter", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    for part in ("synthetic", "lm"):
        rows = s[part]["rows"]
        assert [r["width"] for r in rows] == ([32, 64] if part == "synthetic" else [64, 128])
        for r in rows:
            # the linear part of the error is a share of it, and its fit generalises
            assert 0 < r["linear_share"] <= 1 and r["vector_r2"] > 0
            assert set(r["norm_r2"]) == {"x", "sae", "error", "linear_error", "nonlinear_error"}
        assert len(s[part]["error_norm_corr"]) == 2
    # synthetic data has a dense subspace and unlearned features: a large linear part
    assert s["synthetic"]["rows"][0]["vector_r2"] > 0.3
    assert (out / "sae_dark_matter.png").stat().st_size > 0
    assert (out / "lm" / "w64" / "checkpoint.safetensors").exists()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "vector R2" in capsys.readouterr().out


def test_a_hook_the_lm_lacks_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert (
        main(
            [
                "run",
                "sae-dark-matter",
                "--smoke",
                "--out",
                str(out),
                "--set",
                "lm_hook=blocks.9.hook_resid_pre",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "lm_hook: 'blocks.9.hook_resid_pre' is not a hook of a 2-layer LM; valid: hook_embed" in err
    assert not out.exists()
