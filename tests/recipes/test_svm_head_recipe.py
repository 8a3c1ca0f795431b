"""The ``svm-head`` recipe: digits as row sequences, and the CLI at smoke size (with resume)."""

from __future__ import annotations

import json

from linearlab.cli import main
from linearlab.layers.heads.svm import SVMHead
from linearlab.recipes import svm_head


def test_digit_splits_are_disjoint_row_sequences():
    data = svm_head.digits_sequences(0.3, seed=0)
    x_test, y_test = data["test"]
    assert x_test.shape[1:] == (8, 8) and 0 <= float(x_test.min()) and float(x_test.max()) <= 1
    n = sum(len(data[k][1]) for k in ("train", "val", "test"))
    assert n == 1797 and len(data["train+val"][1]) == len(data["train"][1]) + len(data["val"][1])
    rows = {tuple(r.flatten().tolist()) for r in data["train"][0]}
    assert sum(tuple(r.flatten().tolist()) in rows for r in x_test) < 5  # (the data has a few duplicates)
    model = svm_head.GRUClassifier(8, 16, 10, "svm")
    assert isinstance(model.head, SVMHead) and model(x_test[:3]).shape == (3, 10)


def test_smoke_through_the_cli_and_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = ["run", "svm-head", "--smoke", "--out", str(out), "--set", "epochs=1", "--set", "paper_epochs=1"]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["tuned"]) == {"softmax", "svm"} and all(
        0 <= s["tuned"][h]["test_acc"] <= 1 for h in s["tuned"]
    )
    assert len((out / "runs.jsonl").read_text().splitlines()) == 2 + 2 + 2
    assert "measured vs paper" in capsys.readouterr().out

    def no_train(*a, **k):
        raise AssertionError("resume retrained a finished run")

    monkeypatch.setattr(svm_head, "train_one", no_train)
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["tuned"] == s["tuned"]
    assert main(["report", str(out)]) == 0
