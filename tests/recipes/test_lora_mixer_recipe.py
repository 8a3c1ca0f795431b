"""The ``lora-mixer`` recipe through the CLI at smoke size, and its resume."""

from __future__ import annotations

import json

from linearlab.cli import main
from linearlab.recipes import lora_mixer
from linearlab.tasks.synthetic_seq import TASKS


def test_smoke_through_the_cli_and_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "lora-mixer", "--smoke", "--out", str(out), "--set", "pretrain_steps=6", "--set", "lora_steps=4",
            "--set", "router_steps=4", "--set", "eval_rows=8", "--set", "batch_size=8"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["arms"]) == set(lora_mixer.ARMS) and set(s["experts"]) == set(TASKS)
    for arm in lora_mixer.ARMS:
        for col in ("top1", "top2", "top3", "dense"):
            assert all(0 <= v <= 1 for v in s["arms"][arm][col].values())
            load = s["arms"][arm][f"{col}_routing"]["load"]
            assert abs(sum(load) - 1) < 1e-6
    # the uniform arm's router is zero: every token's distribution is uniform (entropy ln 4)
    assert abs(s["arms"]["uniform"]["dense_routing"]["entropy"] - 1.3862943611198906) < 1e-5
    for stage in ("base", "lora_copy", "router_rsl", "router_switch"):
        assert (out / stage / "checkpoint.safetensors").exists(), stage
    assert (out / "lora_mixer.png").exists()
    assert "route acc" in capsys.readouterr().out

    # a resumed finished run retrains nothing: each stage's loop starts at its last step
    steps_run = []
    real_train = lora_mixer.train
    monkeypatch.setattr(lora_mixer, "train", lambda *a, **k: steps_run.append(r := real_train(*a, **k)) or r)
    assert main([*args, "--resume"]) == 0
    assert steps_run and all(r.resumed_from == r.steps for r in steps_run)
    assert json.loads((out / "summary.json").read_text())["arms"] == s["arms"]
    assert main(["report", str(out)]) == 0
