"""The ``icl-one-step-gd`` recipe through the real CLI at smoke size, and its exact resume."""

import json

import pytest

from linearlab.analysis.icl_theory import optimal_one_step_lr, optimal_one_step_mse
from linearlab.cli import main
from linearlab.recipes import icl_one_step_gd

# Training losses of `linearlab run icl-one-step-gd --smoke` at steps 1-5, 101 and 200 (index 0-4, 100,
# 199), recorded from the code before the recipe moved onto the shared spine (commit 7698775); every
# per-step loss of the port was bit-identical to it. A refactor that changes what the recipe computes
# changes these.
GOLDEN_LOSSES = {
    "isotropic": {
        0: 5.019220352172852, 1: 5.1264238357543945, 2: 4.9724345207214355, 3: 5.1987457275390625,
        4: 5.271621227264404, 100: 1.047454595565796, 199: 1.2928571701049805,
    },
    "anisotropic": {
        0: 12.819820404052734, 1: 13.114381790161133, 2: 12.783036231994629, 3: 12.489072799682617,
        4: 13.46118450164795, 100: 5.774076461791992, 199: 4.874342918395996,
    },
}  # fmt: skip
# summary of the same pre-refactor smoke run
GOLDEN_SUMMARY = {
    "test_mse": 1.0810675621032715,
    "gd_opt_mse_same_prompts": 1.081540822982788,
    "slope_vs_gd": 0.7738227760869425,
    "r2_vs_gd": 0.9986295011474491,
    "gamma_rel_err_vs_eta_I": 0.029342049428380007,
    "aniso_cos_gamma_vs_theory": 0.9302676558404698,
    "aniso_cos_gamma_vs_identity": 0.9155413324472267,
    "aniso_test_mse": 4.377345085144043,
}


def _losses(folder):
    by_step = {}
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step[record["step"]] = record["loss"]
    return [by_step[s] for s in sorted(by_step)]


def _summary(out):
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_seconds")
    return summary


def test_smoke_reproduces_the_pre_refactor_run_and_the_theory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "icl-one-step-gd", "--smoke", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "icl-one-step-gd" and config["preset"] == "smoke"
    assert config["config"]["steps"] == 200 and config["config"]["lr"] == 0.01
    for tag, golden in GOLDEN_LOSSES.items():
        losses = _losses(out / tag)
        assert len(losses) == 200 and (out / tag / "checkpoint.safetensors").exists()
        assert {i: losses[i] for i in golden} == pytest.approx(golden, rel=1e-6)
    s = json.loads((out / "summary.json").read_text())
    assert {k: s[k] for k in GOLDEN_SUMMARY} == pytest.approx(GOLDEN_SUMMARY, rel=1e-6)
    # the theory: after 200 steps the LSA already predicts eta* times one GD step, and it scores what
    # the optimal one-step GD scores on the same prompts
    assert s["theory_slope"] == pytest.approx(optimal_one_step_lr(20, 5))
    assert s["theory_mse"] == pytest.approx(optimal_one_step_mse(20, 5))
    assert abs(s["slope_vs_gd"] - s["theory_slope"]) < 0.01 and s["r2_vs_gd"] > 0.99
    assert s["test_mse"] == pytest.approx(s["gd_opt_mse_same_prompts"], rel=0.01)
    assert s["aniso_cos_gamma_vs_theory"] > s["aniso_cos_gamma_vs_identity"]
    assert (out / "one_step_gd.png").stat().st_size > 1000
    assert main(["report", str(out)]) == 0
    assert "slope of LSA on 1-step GD" in capsys.readouterr().out


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, capsys, monkeypatch):
    args = ["run", "icl-one-step-gd", "--smoke", "--set", "anisotropic=false", "--set", "checkpoint_every=25"]
    whole = tmp_path / "whole"
    assert main([*args, "--out", str(whole)]) == 0
    real_train = icl_one_step_gd.train

    def interrupted(*a, **kw):  # as if Ctrl-C came after step 60 (last checkpoint: step 50)
        real_train(*a, stop_after=60, **kw)
        raise KeyboardInterrupt

    cut = tmp_path / "cut"
    monkeypatch.setattr(icl_one_step_gd, "train", interrupted)
    assert main([*args, "--out", str(cut)]) == 130
    assert "--resume" in capsys.readouterr().err and not (cut / "summary.json").exists()
    assert len(_losses(cut / "isotropic")) == 60
    monkeypatch.setattr(icl_one_step_gd, "train", real_train)
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    # the prompt stream and the optimizer continue where the checkpoint left them: same numbers
    assert _losses(cut / "isotropic") == _losses(whole / "isotropic")
    assert _summary(cut) == _summary(whole)
    # resuming a finished run trains nothing again and gives the same summary
    lines = (cut / "isotropic" / "metrics.jsonl").read_text().count("\n")
    assert main(["run", "icl-one-step-gd", "--out", str(cut), "--resume"]) == 0
    assert (cut / "isotropic" / "metrics.jsonl").read_text().count("\n") == lines
    assert _summary(cut) == _summary(whole)
    capsys.readouterr()
    # a changed config is refused with the key named; checkpoint_every may change
    assert main([*args, "--out", str(cut), "--resume", "--set", "steps=300"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "steps: stored 200, now 300" in err
    assert main([*args[:-1], "checkpoint_every=50", "--out", str(cut), "--resume"]) == 0


def test_bad_values_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    for extra, message in [
        (["--set", "n=0"], "n: must be >= 1, got 0"),
        (["--set", "cov_min=5"], "cov_min, cov_max: expected 0 < cov_min <= cov_max"),
        (["--set", "lr=-1"], "lr: must be > 0"),
    ]:
        out = tmp_path / "x"
        assert main(["run", "icl-one-step-gd", "--smoke", "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not out.exists()
