"""The ``lm`` recipe through the real CLI at tiny sizes."""

import json

import pytest

from linearlab.cli import main

# First five training losses of `linearlab run lm --smoke --set workers=1`, recorded from the code
# before the recipe moved onto the shared spine (commit 7698775).
GOLDEN_FIRST_LOSSES = {
    "softmax": [
        5.482712745666504,
        5.436707019805908,
        5.4321370124816895,
        5.355453014373779,
        5.217228412628174,
    ],
    "gla": [5.518431663513184, 5.4648895263671875, 5.472290992736816, 5.422425270080566, 5.350863933563232],
}


def test_lm_smoke_through_cli(tmp_path, capsys):
    out = tmp_path / "lm"
    assert main(["run", "lm", "--smoke", "--out", str(out), "--set", "workers=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["label"] for r in summary["results"]] == ["softmax", "gla"]
    for r in summary["results"]:
        assert r["first_losses"] == pytest.approx(GOLDEN_FIRST_LOSSES[r["label"]], rel=1e-5)
        # 8 bits per byte is what an untrained model (uniform over 256 bytes) scores; 8 steps on
        # Python source must already beat it clearly
        assert r["val_bpb"] < 7.8 and r["val_bpb_at_4x"] < 7.8
        assert r["train_tokens_per_second"] > 0
    assert (out / "lm_bits_per_byte.png").exists()


def test_lm_missing_data_file_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["run", "lm", "--smoke", "--out", str(out), "--data", str(tmp_path / "missing.txt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.txt" in err and "does not exist" in err
    assert not out.exists()
