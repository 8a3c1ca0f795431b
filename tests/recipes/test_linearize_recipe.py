"""The ``linearize`` recipe through the real CLI at tiny sizes, and its input checks."""

import json

import pytest

from linearlab.cli import main


def test_linearize_smoke_through_cli(tmp_path):
    out = tmp_path / "lin"
    assert (
        main(
            [
                "run",
                "linearize",
                "--smoke",
                "--out",
                str(out),
                "--methods",
                "elu1,hedgehog,lolcats,still,liger",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    teacher = summary["teacher"]
    # an untrained byte model scores 8 bits per byte; the teacher's 30 steps must beat that clearly
    assert teacher["bpb"] < 7.5
    rows = {r["label"]: r for r in summary["results"]}
    assert list(rows) == ["elu1", "hedgehog", "lolcats", "still", "liger"]
    assert "stage1" not in rows["elu1"] and "stage2" not in rows["elu1"] and "stage1" in rows["lolcats"]
    for r in rows.values():
        assert 0 <= r.get("recall_stage2", r["recall_swap"]) <= 1
        # constant-size states beat the teacher's KV cache at the decode context
        assert 0 < r["state_bytes"] < teacher["state_bytes"]
        assert r.get("bpb_stage2", r["bpb_swap"]) < 8.0
        if "stage2" in r:
            assert r["stage2"]["trainable"] < r["params"] * 0.5
    assert (out / "linearize_bits_per_byte.png").exists()
    assert 0 <= teacher["recall"] <= 1
    assert (out / "lolcats" / "model" / "config.json").exists()  # the linearised model is saved
    # a finished run resumes without redoing anything and reports the same table
    assert main(["run", "linearize", "--resume", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["results"] == summary["results"]


def _teacher_folder(tmp_path, **config):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    return folder


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "bert", "architectures": ["BertForMaskedLM"]}, "expected a causal LM of type llama"),
        ({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 100}, "vocab_size 100"),
    ],
)
def test_bad_teacher_is_one_line_and_writes_nothing(tmp_path, capsys, config, message):
    folder = _teacher_folder(tmp_path, **config)
    out = tmp_path / "o"
    assert main(["run", "linearize", "--smoke", "--out", str(out), "--teacher", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--teacher" in err and message in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--teacher", "/nonexistent/llama"], "does not exist"),
        (["--methods", "performer"], "unknown linearize variant(s) ['performer']"),
        (["--set", "window_size=0"], "window_size: must be in [1, seq_len=64], got 0"),
    ],
)
def test_bad_arguments_fail_before_training(tmp_path, capsys, args, message):
    out = tmp_path / "o"
    assert main(["run", "linearize", "--smoke", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()
