"""The ``mobilenetv2`` recipe: the spiral recoverability measure, the digits net, and the CLI at smoke size."""

import json

import pytest
import torch

from linearlab.cli import main
from linearlab.recipes.mobilenetv2 import (
    DigitsMobileNet,
    plain_inverse_error,
    recoverable_fraction,
    spiral,
)


def test_recoverable_fraction_counts_points_with_two_independent_active_rows():
    x = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    T = torch.eye(2, dtype=torch.float64)  # only the first quadrant keeps both coordinates
    assert recoverable_fraction(x, T) == pytest.approx(1 / 3)
    T4 = torch.cat([T, -T])  # +-e1, +-e2: every point has two independent active rows
    assert recoverable_fraction(x, T4) == 1.0
    err, xh = plain_inverse_error(x, T4)  # T^+ ReLU(T x) = x / 2 for this T: exact after rescaling
    assert err == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(xh, x)


def test_spiral_recoverability_rises_with_the_embedding_dimension():
    x = spiral(300)
    g = torch.Generator().manual_seed(0)
    low = (
        sum(recoverable_fraction(x, torch.randn(2, 2, generator=g, dtype=torch.float64)) for _ in range(10))
        / 10
    )
    high = (
        sum(recoverable_fraction(x, torch.randn(30, 2, generator=g, dtype=torch.float64)) for _ in range(10))
        / 10
    )
    assert low < 0.6 and high > 0.99


def test_digits_net_maps_8x8_images_to_10_logits():
    net = DigitsMobileNet(4, None, expand=2, stem=8)
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "mobilenetv2", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["n"] for r in s["spiral"]] == [2, 15]
    assert s["spiral"][0]["recoverable_mean"] < s["spiral"][1]["recoverable_mean"]
    assert len(s["jobs"]) == 4 and all(0 <= j["test_acc"] <= 1 for j in s["jobs"])
    assert (out / "mobilenetv2.png").exists()
    assert main(["report", str(out)]) == 0
    assert "linear vs ReLU6" in capsys.readouterr().out
    # resume reuses the finished jobs' results
    assert main(["run", "mobilenetv2", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["jobs"] == s["jobs"]


def test_bad_values_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "mobilenetv2", "--smoke", "--out", str(out), "--set", "spiral_dims=[1,2]"]) == 2
    assert "spiral_dims: expected embedding dimensions >= 2" in capsys.readouterr().err
    assert not out.exists()
