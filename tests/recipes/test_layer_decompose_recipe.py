"""The ``layer-decompose`` recipe through the real CLI at smoke size, its metrics, resume and report."""

import json

import torch

from linearlab.cli import main
from linearlab.recipes.layer_decompose import decomposition_metrics
from linearlab.tasks.layered import decomposition_batch


def test_metrics_of_the_true_layers_are_perfect_and_the_trivial_split_has_no_alpha():
    data = decomposition_batch(3, 16, seed=5)
    gt = decomposition_metrics(data["background"], data["foreground"], data, shift=2)
    assert gt["bg_psnr"] == gt["recomp_psnr"] == gt["edit_psnr"] == 100.0
    assert gt["alpha_iou"] == 1.0 and gt["alpha_mse"] == 0.0
    trivial = decomposition_metrics(data["image"], torch.zeros_like(data["foreground"]), data, shift=2)
    assert trivial["recomp_psnr"] == 100.0 and trivial["alpha_iou"] == 0.0 and trivial["bg_psnr"] < 40


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "layer-decompose", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    for v in ("supervised", "consistency"):
        job = s["jobs"][v]
        assert 0 <= job["alpha_iou"] <= 1 and job["bg_psnr"] > 5
        assert (out / "jobs" / v / "result.json").exists()
    assert (out / "layer_decompose.png").stat().st_size > 0
    assert "measured vs paper" in capsys.readouterr().out
    # a resume re-uses the finished jobs and writes the same summary
    assert main(["run", "layer-decompose", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["jobs"] == s["jobs"]
    assert main(["report", str(out)]) == 0
    assert "consistency - supervised" in capsys.readouterr().out
    assert (
        main(
            [
                "run",
                "layer-decompose",
                "--smoke",
                "--out",
                str(tmp_path / "bad"),
                "--set",
                "labelled_fraction=1.5",
            ]
        )
        == 2
    )
    assert "labelled_fraction: expected a fraction in (0, 1), got 1.5" in capsys.readouterr().err
