"""The ``reversible-unet`` recipe: synthetic volumes, Dice, budget arithmetic, and the CLI at smoke size."""

import json

import pytest
import torch

from linearlab.cli import main
from linearlab.recipes.reversible_unet import dice, largest_side, sphere_volumes


def test_sphere_volumes_are_deterministic_and_hold_spheres():
    x, m = sphere_volumes(3, 12, seed=5)
    x2, m2 = sphere_volumes(3, 12, seed=5)
    assert x.shape == (3, 1, 12, 12, 12) and m.shape == (3, 12, 12, 12)
    assert torch.equal(x, x2) and torch.equal(m, m2)
    frac = m.float().mean((1, 2, 3))
    assert ((frac > 0) & (frac < 0.6)).all()
    assert x[:, 0][m == 1].mean() > x[:, 0][m == 0].mean() + 0.5  # spheres are brighter on average


def test_dice():
    mask = torch.tensor([[0, 1, 1, 0]])
    perfect = torch.stack([1 - mask, mask], dim=1).float()
    assert dice(perfect, mask) == 1.0
    half = torch.stack([1 - torch.tensor([[0, 1, 0, 1]]), torch.tensor([[0, 1, 0, 1]])], dim=1).float()
    assert dice(half, mask) == pytest.approx(0.5)


def test_largest_side():
    assert largest_side(1.0, 27 * 8**3, 4) == 24  # 27x the voxels of 8^3 is 24^3
    assert largest_side(1.0, 26 * 8**3, 4) == 20


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "reversible-unet", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    ex = s["exactness"]
    assert all(r["inversion_error_fp64"] < 1e-12 and r["inversion_error_fp32"] < 1e-4 for r in ex)
    assert all(r["grad_rel_diff_fp64"] < 1e-9 for r in ex)
    assert ex[0]["saved_bytes_reversible"] == ex[1]["saved_bytes_reversible"] < ex[0]["saved_bytes_standard"]
    mem = s["memory"]
    assert mem["by_depth"][0]["reversible"] == mem["by_depth"][1]["reversible"]
    assert mem["volume_ratio_at_budget"] > 1
    dices = [r["dice"] for r in s["segmentation"]]
    assert dices[0] == pytest.approx(dices[1], abs=1e-3)  # same function, same init, same batches
    assert (out / "reversible_unet.png").exists()
    assert main(["report", str(out)]) == 0
    assert "segmentation of noisy spheres" in capsys.readouterr().out
    assert main(["run", "reversible-unet", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["segmentation"] == s["segmentation"]


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "reversible-unet", "--smoke", "--out", str(out), "--set", "base=5"]) == 2
    assert "base: must be even" in capsys.readouterr().err
    assert not out.exists()
