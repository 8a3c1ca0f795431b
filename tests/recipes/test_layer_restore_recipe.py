"""The ``layer-restore`` recipe through the CLI at smoke size."""

from __future__ import annotations

import json

from linearlab.cli import main


def test_smoke_sweeps_every_interval(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "layer-restore", "--smoke", "--out", str(out), "--set", "base_steps=8", "--set", "post_steps=4",
            "--set", "prompts=6", "--set", "samples=20"]  # fmt: skip
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert [(r["start"], r["end"]) for r in s["intervals"]] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (1, 1),
        (1, 2),
        (2, 2),
    ]
    assert all(0 <= r["validity"] <= 1 and 0 <= r["diversity"] <= 1 for r in s["intervals"])
    assert (out / "layer_restore.png").exists() and (out / "post" / "checkpoint.safetensors").exists()
    assert "selected interval" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
