"""The ``response-selection`` recipe through the real CLI at smoke size."""

import json

from linearlab.cli import main


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "response-selection", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["strategies"]) == ["direct", "restate", "verbose"]
    for r in s["strategies"].values():
        assert 0 <= r["alignment"] <= 1 and r["nll"] > 0 and 0 <= r["accuracy"] <= 1
        assert r["self_aligned_nll"] > 0 and r["self_aligned_nll"] != r["nll"]
    assert s["selected_by_self_aligned"] in s["strategies"] and s["demonstrations"] >= 1
    # the target was pretrained on the direct style: it is the most familiar one to it
    assert s["selected_by_perplexity"] == "direct"
    assert (out / "finetune" / "verbose" / "checkpoint.safetensors").exists()
    assert (out / "response_selection.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Spearman(alignment, accuracy)" in text and "Spearman(-self-aligned NLL, accuracy)" in text
    (out / "summary.json").unlink()
    assert main(["run", "response-selection", "--smoke", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "summary.json").read_text())["strategies"] == s["strategies"]


def test_unknown_strategy_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "x"
    assert (
        main(
            [
                "run",
                "response-selection",
                "--smoke",
                "--out",
                str(out),
                "--set",
                "strategies=direct,cot,verbose",
            ]
        )
        == 2
    )
    assert "strategies: expected at least 3 names from" in capsys.readouterr().err
    assert not out.exists()


def test_pretraining_rows_pack_several_problems_and_score_only_responses():
    from linearlab.recipes.response_selection import _batch
    from linearlab.tasks.addition_styles import encode

    ids, tgt = _batch([(1, 2), (30, 4), (5, 6), (7, 8)], "direct", pack=2)
    assert ids.shape[0] == 2  # four problems, two to a row
    first = encode("Q:1+2 A:3;Q:30+4 A:34;")
    assert ids[0, : len(first) - 1].tolist() == first[:-1]
    scored = [chr(t) for t in tgt[0].tolist() if t != -100]
    assert "".join(scored) == "3;34;"  # the answers, never the prompts
    single_ids, _ = _batch([(1, 2)], "direct")
    assert single_ids.shape == (1, 32)  # one problem a row: the fixed width fine-tuning uses
