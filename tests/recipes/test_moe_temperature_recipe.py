"""The ``moe-temperature`` recipe: its Gaussian-MoE likelihood, and the CLI at smoke size (with resume)."""

from __future__ import annotations

import json
import math

import torch

from linearlab.cli import main
from linearlab.recipes import moe_temperature as mt


def test_gate_and_likelihood_match_the_formulas():
    theta = mt._unconstrained([1.5, 0.5, 0.5, -1.0, 0.5, 1.5, -0.5, 0.3, 0.2])
    x = torch.linspace(-2, 2, 7, dtype=torch.float64)
    y = torch.linspace(-1, 3, 7, dtype=torch.float64)
    g = mt.gate_probs("tanh", theta, x)
    logits = torch.stack([torch.tanh(1.5 * x + 0.5) / 0.5, torch.zeros_like(x)], -1)
    torch.testing.assert_close(g, logits.softmax(-1))
    dens = sum(
        g[:, i] * torch.exp(-((y - (a * x + b)) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)
        for i, (a, b, v) in enumerate([(-1.0, 0.5, 0.3), (1.5, -0.5, 0.2)])
    )
    torch.testing.assert_close(mt.nll("tanh", theta, x, y), -dens.log().mean())


def test_linear_gate_likelihood_depends_on_beta_over_tau_only():
    gen = torch.Generator().manual_seed(0)
    truth = [1.5, 0.5, 0.5, -1.0, 0.5, 1.5, -0.5, 0.3, 0.3]
    x, y = mt.sample("identity", truth, 500, gen)
    theta = mt._unconstrained(truth)
    scaled = theta.clone()
    scaled[0] *= 3.0
    scaled[1] *= 3.0
    scaled[2] += math.log(3.0)
    torch.testing.assert_close(mt.nll("identity", theta, x, y), mt.nll("identity", scaled, x, y))
    assert abs(float(mt.nll("tanh", theta, x, y) - mt.nll("tanh", scaled, x, y))) > 1e-3


def test_smoke_through_the_cli_and_resume_reuses_the_fits(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "moe-temperature", "--smoke", "--out", str(out), "--set", "ns=100,400", "--set", "reps=2"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["gates"]) == {"identity", "tanh"}
    assert len((out / "fits.jsonl").read_text().splitlines()) == 2 * 2 * 2
    assert (out / "moe_temperature.png").stat().st_size > 0
    assert "b / tau" in capsys.readouterr().out

    def no_refit(*a, **k):
        raise AssertionError("resume refitted a finished job")

    monkeypatch.setattr(mt, "_job", no_refit)
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["gates"] == s["gates"]
    assert main(["report", str(out)]) == 0
