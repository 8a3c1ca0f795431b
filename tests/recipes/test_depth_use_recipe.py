"""The ``depth-use`` recipe through the real CLI at smoke size (test-bed LMs in a temporary cache)."""

import json

from linearlab.cli import main


def test_smoke_run_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LINEARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    assert main(["run", "depth-use", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["shallow"]["layers"] == 2 and s["deep"]["layers"] == 4
    assert len(s["alignment"]["r2"]) == 2 and len(s["alignment"]["r2"][0]) == 4
    assert s["expected_argmax"] == [1, 3]
    assert s["expected_argmax_shallow"] == [0, 0, 1, 1] and len(s["alignment"]["argmax_shallow"]) == 4
    # both LMs were trained (side by side, in worker processes) into the cache
    assert len(list((tmp_path / "cache" / "testbed").glob("*/result.json"))) == 2
    for part in ("shallow", "deep"):
        p = s[part]
        assert p["max_future"][-1] == 0.0  # nothing follows the last layer
        assert all(k >= 0 for k in p["kl"]) and all(r > 0 for r in p["relative"])
    assert (out / "depth_use.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "best linear map shallow -> deep" in text and "which shallow layer predicts it best" in text


def test_deep_must_be_deeper(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "depth-use", "--smoke", "--out", str(out), "--set", "deep_layers=2"]) == 2
    assert "deep_layers: expected more layers than shallow_layers=2, got 2" in capsys.readouterr().err
    assert not out.exists()
