"""Smoke tests of the lab recipes through the real CLI (tiny sizes)."""

import json

import pytest

from linearlab.cli import main
from linearlab.recipes._lab import parse_variants


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
        assert all(0.0 <= a <= 1.0 for a in r["accuracy"].values())
        assert r["state_size"] > 0 and r["params"] > 0
    sizes = {r["label"]: r["state_size"] for r in summary["results"]}
    assert sizes["softmax"] > sizes["gla"]  # a KV cache over L=32 is larger than GLA's state
    assert (out / "mqar_accuracy_vs_state.png").stat().st_size > 1000
    assert (out / "softmax-d32-L32-lr0.01" / "checkpoint.safetensors").exists()
    # rebuilding the report from the run directory alone
    assert main(["report", str(out), "--recipe", "mqar"]) == 0
    assert "deltanet" in capsys.readouterr().out
    # an existing run is not overwritten by accident
    with pytest.raises(ValueError, match="--resume"):
        main(["run", "mqar", "--smoke", "--out", str(out)])


def test_mqar_resume_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "m"
    args = ["run", "mqar", "--smoke", "--out", str(out), "--mixers", "gla", "--set", "workers=1"]
    assert main(args) == 0
    first = json.loads((out / "summary.json").read_text())["results"][0]
    assert main([*args, "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())["results"][0]
    assert again == first


def test_mqar_rejects_impossible_settings(tmp_path):
    with pytest.raises(ValueError, match="num_kv_pairs"):
        main(["run", "mqar", "--smoke", "--out", str(tmp_path / "x"), "--set", 'settings=[{"seq_len": 32, "train_kv": [9], "test_kv": [9]}]'])  # fmt: skip


def test_unknown_mixer_label_lists_known_ones():
    with pytest.raises(ValueError, match="unknown \\['nope'\\]; choose from softmax"):
        parse_variants("softmax,nope")


def test_lm_smoke_through_cli(tmp_path, capsys):
    out = tmp_path / "lm"
    assert main(["run", "lm", "--smoke", "--out", str(out), "--set", "workers=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for r in summary["results"]:
        assert 0 < r["val_bpb"] < 9 and 0 < r["val_bpb_at_4x"] < 9  # bytes: 8 bits is the uniform guess
        assert r["train_tokens_per_second"] > 0
    assert (out / "lm_bits_per_byte.png").exists()


def test_lm_data_path_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        main(["run", "lm", "--smoke", "--out", str(tmp_path / "o"), "--data", str(tmp_path / "missing.txt")])


def test_run_jobs_starts_dear_jobs_first_and_keeps_result_order():
    from linearlab.recipes._lab import run_jobs

    started = []

    def job(name):
        started.append(name)
        return {"name": name}

    out = run_jobs(job, [("a",), ("b",), ("c",)], workers=1, desc="t", costs=[1.0, 3.0, 2.0])
    assert started == ["b", "c", "a"]
    assert [r["name"] for r in out] == ["a", "b", "c"]
