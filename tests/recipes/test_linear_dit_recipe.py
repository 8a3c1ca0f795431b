"""The ``linear-dit`` recipe: its sample metrics, and the CLI at smoke size."""

import json
import math

import pytest
import torch

from linearlab.cli import main
from linearlab.recipes.linear_dit import sliced_wasserstein, steps_to_quality


def test_sliced_wasserstein_is_zero_on_the_same_cloud_and_exact_for_a_translation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 6, generator=g)
    assert sliced_wasserstein(a, a, 32) == pytest.approx(0.0, abs=1e-12)
    c = torch.tensor([1.0, -2.0, 0.0, 0.5, 0.0, 0.0])
    # a translation by c moves every projection on u by c.u: SW2 = sqrt(mean_u (c.u)^2)
    dirs = torch.randn(6, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    expected = float(((c.double() @ dirs) ** 2).mean().sqrt())
    assert sliced_wasserstein(a + c, a, 32) == pytest.approx(expected, rel=1e-9)


def test_steps_to_quality():
    curve = [{"step": 200, "acc": 0.5}, {"step": 100, "acc": 0.2}, {"step": 300, "acc": 0.9}]
    assert steps_to_quality(curve, 0.45) == 200
    assert steps_to_quality(curve, 0.95) == math.inf
    # 127/200 reaches 137/200 - 0.05 even when both were stored as float32 means
    f32 = [{"step": 50, "acc": float(torch.tensor(127 / 200, dtype=torch.float32))}]
    assert steps_to_quality(f32, float(torch.tensor(137 / 200, dtype=torch.float32)) - 0.05) == 50
    assert steps_to_quality(f32, 0.64) == math.inf


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "linear-dit", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["jobs"]) == {
        "teacher",
        "lit_distill",
        "linfusion_distill",
        "lit_h1",
        "lit_h2",
        "linfusion",
        "linfusion_sum",
    }
    # LinFusion's distillation trains only the attention modules
    assert s["jobs"]["linfusion_distill"]["trained_params"] < s["jobs"]["lit_distill"]["trained_params"]
    assert {(r["model"], r["size"]) for r in s["cross_res"]} == {
        (m, z) for m in ("teacher", "linfusion", "linfusion_sum", "linfusion_distill") for z in (16, 32)
    }
    assert all(0 <= r["acc"] <= 1 and r["swd"] >= 0 for r in s["cross_res"])
    assert (out / "linear_dit.png").exists()
    assert main(["report", str(out)]) == 0
    assert "generation at higher resolution" in capsys.readouterr().out
    assert main(["run", "linear-dit", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["jobs"] == s["jobs"]


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "linear-dit", "--smoke", "--out", str(out), "--set", "cross_sizes=[33]"]) == 2
    assert "cross_sizes: 33 is not a positive multiple of patch_size=4" in capsys.readouterr().err
    assert main(["run", "linear-dit", "--smoke", "--out", str(out), "--set", "image_size=15"]) == 2
    assert "image_size: 15 is not divisible by patch_size=4" in capsys.readouterr().err
    assert main(["run", "linear-dit", "--smoke", "--out", str(out), "--set", "beta_schedule=cosine"]) == 2
    assert (
        "beta_schedule: expected one of ('linear', 'squaredcos_cap_v2'), got 'cosine'"
        in capsys.readouterr().err
    )
    assert main(["run", "linear-dit", "--smoke", "--out", str(out), "--set", "distill_lr=0"]) == 2
    assert "distill_lr: must be > 0, got 0" in capsys.readouterr().err
    assert not out.exists()
