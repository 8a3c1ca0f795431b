"""The ``mgno`` recipe through the real CLI at smoke size: jobs, budget-matched CNN, resume, report."""

import json

import torch

from linearlab.cli import main
from linearlab.recipes.mgno import Config, boundary_share, build_model


def test_boundary_share_counts_the_end_nodes():
    target = torch.zeros(1, 1, 10)
    pred = target.clone()
    pred[..., 0] = 1.0
    pred[..., 5] = 1.0
    assert boundary_share(pred, target, 2) == 0.5
    assert boundary_share(target, target, 2) == 0.0


def test_cnn_is_sized_to_mgno():
    cfg = Config()
    n = {m: sum(p.numel() for p in build_model(cfg, m).parameters()) for m in ("mgno", "cnn", "fno")}
    assert abs(n["cnn"] - n["mgno"]) / n["mgno"] < 0.05 and n["fno"] > 3 * n["mgno"]


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "mgno", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["jobs"]) == {"mgno", "fno", "cnn"}
    for j in s["jobs"].values():
        assert j["test_rel_l2"] > 0 and 0 <= j["boundary_share"] <= 1
    assert len(list((out / "data").glob("darcy1d_*.safetensors"))) == 1
    assert (out / "mgno.png").stat().st_size > 0
    assert main(["run", "mgno", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["jobs"] == s["jobs"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "measured vs paper" in capsys.readouterr().out
    assert main(["run", "mgno", "--smoke", "--out", str(tmp_path / "bad"), "--set", "models=mgno,unet"]) == 2
    assert "models: expected names from" in capsys.readouterr().err
