"""The ``mqar`` recipe through the real CLI at tiny sizes."""

import json

import pytest

from linearlab.cli import main
from linearlab.lab.mixer_variants import parse_variants
from linearlab.registry import UnknownNameError

# First five training losses per mixer of `linearlab run mqar --smoke --set workers=1`, recorded from
# the code before the recipe moved onto the shared spine (commit 7698775); a refactor that changes
# what the recipe computes changes these.
GOLDEN_FIRST_LOSSES = {
    "softmax": [5.560762405395508, 5.57007360458374, 5.54533576965332, 5.552073001861572, 5.56477165222168],
    "gla": [5.540825366973877, 5.548084259033203, 5.5591325759887695, 5.542374610900879, 5.567925453186035],
    "deltanet": [
        5.562941074371338,
        5.576661109924316,
        5.547929286956787,
        5.524921417236328,
        5.561793327331543,
    ],
}


def test_mqar_smoke_through_cli(tmp_path, capsys):
    out = tmp_path / "mqar"
    assert main(["run", "mqar", "--smoke", "--out", str(out), "--set", "workers=1"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().splitlines()[-1] == str(out)  # the run directory is printed last
    summary = json.loads((out / "summary.json").read_text())
    labels = [r["label"] for r in summary["results"]]
    assert labels == ["softmax", "gla", "deltanet"]
    for r in summary["results"]:
        assert set(r["accuracy"]) == {"2", "4"}
        assert r["first_losses"] == pytest.approx(GOLDEN_FIRST_LOSSES[r["label"]], rel=1e-5)
    sizes = {r["label"]: r["state_size"] for r in summary["results"]}
    # a KV cache over L=32 (2 x 32 positions x d=32 per layer) is larger than GLA's d_k x d_v state
    assert sizes["softmax"] == 2112 and sizes["gla"] == 320
    assert (out / "mqar_accuracy_vs_state.png").stat().st_size > 1000
    assert (out / "softmax-d32-L32-lr0.01" / "checkpoint.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "mqar" and config["preset"] == "smoke" and config["config"]["steps"] == 12
    assert {"linearlab_version", "torch_version", "git_commit", "threads"} <= set(config)
    # rebuilding the report from the run directory alone
    assert main(["report", str(out)]) == 0
    assert "deltanet" in capsys.readouterr().out
    # an existing run is not overwritten by accident
    assert main(["run", "mqar", "--smoke", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_mqar_softmax_learns_recall_on_an_easy_setting(tmp_path):
    """Above chance (1/32 for a value drawn from half of a 64-token vocabulary) by a wide margin:
    a model whose mixer cannot look back at the keys stays at chance."""
    out = tmp_path / "easy"
    args = ["run", "mqar", "--smoke", "--out", str(out), "--mixers", "softmax", "--set", "workers=1",
            "--set", "vocab_size=64", "--set", 'settings=[{"seq_len": 16, "train_kv": [2], "test_kv": [2]}]',
            "--set", "steps=150", "--set", "train_examples=2048", "--set", "lrs=3e-3",
            "--set", "test_examples=128"]  # fmt: skip
    assert main(args) == 0
    (result,) = json.loads((out / "summary.json").read_text())["results"]
    assert result["accuracy"]["2"] > 0.15


def test_mqar_resume_reuses_finished_runs_and_refuses_a_changed_config(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["run", "mqar", "--smoke", "--out", str(out), "--mixers", "gla", "--set", "workers=1"]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())["results"][0]
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())["results"][0]
    assert again == first
    # `--resume --out D` alone continues with the stored config
    assert main(["run", "mqar", "--out", str(out), "--resume"]) == 0
    capsys.readouterr()
    # a different config is refused, naming the key and both values; nothing is touched
    before = (out / "summary.json").read_text()
    assert main([*args, "--resume", "--set", "steps=13"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps: stored 12, now 13" in err
    assert (out / "summary.json").read_text() == before
    # workers does not change results, so a resume may change it
    assert main([*args[:-1], "workers=2", "--resume"]) == 0


def test_mqar_bad_inputs_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    cases = [
        (["--set", 'settings=[{"seq_len": 32, "train_kv": [9], "test_kv": [9]}]'], "num_kv_pairs"),
        (["--mixers", "softmax,nope"], "unknown mixer variant(s) ['nope']"),
        (["--set", "steps=abc"], "--set steps=abc: expected an integer"),
        (["--set", "steps=0"], "steps: must be >= 1"),
        (["--set", "nope=1"], "no field 'nope'"),
        (["--set", 'lrs=[0.1, "x"]'], "expected a number"),
        (["--preset", "zoology", "--smoke"], "choose one"),
    ]
    for extra, message in cases:
        out = tmp_path / "x"
        assert main(["run", "mqar", "--smoke", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (extra, err)
        assert not out.exists(), extra


def test_unknown_mixer_label_lists_known_ones():
    with pytest.raises(
        UnknownNameError, match=r"unknown mixer variant\(s\) \['nope'\]; choose from: deltanet"
    ):
        parse_variants("softmax,nope")


def test_learning_rate_is_chosen_on_validation_not_test():
    from linearlab.recipes.mqar import _best_over_lr

    def record(lr, val, test):
        return {"label": "gla", "d_model": 64, "seq_len": 64, "lr": lr, "val_accuracy": {"4": val}, "accuracy": {"4": test}}  # fmt: skip

    # lr 1e-3 is better on validation, lr 1e-2 on test: the choice must follow validation
    chosen = _best_over_lr([record(1e-2, 0.5, 0.9), record(1e-3, 0.6, 0.7)])
    assert [r["lr"] for r in chosen] == [1e-3]


def test_validation_examples_differ_from_test_examples():
    from linearlab.recipes.mqar import MQARExperiment, MQARSetting, _make_data

    exp = MQARExperiment(train_examples=64, test_examples=32, val_examples=32)
    _, _, test, val = _make_data(exp, MQARSetting(seq_len=32, train_kv=[4], test_kv=[4]))
    tx, vx = test[4][0], val[4][0]
    assert tx.shape == vx.shape
    shared = {tuple(r) for r in tx.tolist()} & {tuple(r) for r in vx.tolist()}
    assert not shared
