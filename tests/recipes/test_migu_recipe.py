"""The ``migu`` recipe: its forgetting measure, and the CLI at smoke size."""

from __future__ import annotations

import json

import pytest

from linearlab.cli import main
from linearlab.recipes import migu


def test_forgetting_is_the_mean_drop_from_the_best_earlier_accuracy():
    acc = [[0.9, 0.1, 0.0], [0.5, 0.8, 0.1], [0.4, 0.6, 0.9]]
    # task 0: best 0.9, final 0.4 -> 0.5; task 1: best 0.8 (after task 1), final 0.6 -> 0.2
    assert migu.forgetting(acc) == pytest.approx((0.5 + 0.2) / 2)


def test_smoke_through_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "migu", "--smoke", "--out", str(out), "--set", "pretrain_steps=6", "--set", "steps_per_task=3",
            "--set", "eval_rows=8", "--set", "batch_size=8"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == set(migu.ARMS)
    assert s["arms"]["vanilla"]["updated_fraction"] == [1.0, 1.0, 1.0]
    for arm in ("migu", "random"):  # T = 0.7: about 30% of the rows updated (quantile ties aside)
        assert all(0.2 < f <= 0.31 for f in s["arms"][arm]["updated_fraction"]), s["arms"][arm]
    # every arm starts from the same first-task model
    assert len({json.dumps(res["acc"][0]) for res in s["arms"].values()}) == 1
    assert (out / "migu" / "task3_add" / "checkpoint.safetensors").exists()
    assert "forgetting" in capsys.readouterr().out
    assert main(["run", "migu", "--smoke", "--out", str(tmp_path / "bad"), "--set", "threshold=1.0"]) == 2
    assert "threshold: expected a quantile strictly between 0 and 1, got 1.0" in capsys.readouterr().err
