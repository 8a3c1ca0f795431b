"""The ``icl-algorithms`` recipe through the real CLI at smoke size."""

import json

import pytest
import torch
from safetensors.torch import load_file

from linearlab.cli import main
from linearlab.models.icl import ICLTransformer
from linearlab.tasks.icl import ICLTask

# Training losses of `linearlab run icl-algorithms --smoke` at steps 1-5 and 20 per noise level, and
# summary numbers of that run, recorded from the code before the recipe moved onto the shared spine
# (commit 7698775); every per-step loss of the port was bit-identical to it.
GOLDEN_LOSSES = {
    "sigma0": {0: 4.897278785705566, 1: 6.025660514831543, 2: 4.610639572143555, 3: 4.744970321655273,
               4: 5.371484756469727, 19: 4.983484745025635},
    "sigma0.5": {0: 5.161613941192627, 1: 6.2335734367370605, 2: 4.618330478668213, 3: 4.991769313812256,
                 4: 5.4609174728393555, 19: 5.2951884269714355},
}  # fmt: skip
GOLDEN_FINAL_TRAIN_LOSS = [5.00989420413971, 5.2522620677948]
GOLDEN_MODEL_MSE = [
    [1.0408032853018006, 0.9291985270595973, 0.909098481038242],
    [1.1261567302394702, 0.961437554821849, 0.9988928394599197],
]


def test_smoke_reproduces_the_pre_refactor_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "icl-algorithms", "--smoke", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["preset"] == "smoke"
    for tag, golden in GOLDEN_LOSSES.items():
        losses = [json.loads(line)["loss"] for line in (out / tag / "metrics.jsonl").read_text().splitlines()]
        assert len(losses) == 20 and (out / tag / "checkpoint.safetensors").exists()
        assert {i: losses[i] for i in golden} == pytest.approx(golden, rel=1e-6)
    s = json.loads((out / "summary.json").read_text())
    runs = s["runs"]
    assert [r["noise_std"] for r in runs] == [0.0, 0.5]
    assert [r["final_train_loss"] for r in runs] == pytest.approx(GOLDEN_FINAL_TRAIN_LOSS, rel=1e-6)
    for run, golden in zip(runs, GOLDEN_MODEL_MSE):
        assert run["mse"]["model"][:3] == pytest.approx(golden, rel=1e-6)
    noiseless, noisy = runs
    # the reference learners against their closed forms: OLS is exact from k = d = 5 examples on,
    # ridge with lam = sigma^2 is OLS when noiseless and better than OLS with noise
    assert noiseless["ols_theory"] == [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0, 0.0]
    assert max(noiseless["mse"]["ols"][5:]) < 1e-8
    assert noiseless["mse"]["ridge"] == noiseless["mse"]["ols"]
    assert noisy["mean_spd"]["ridge"] < noisy["mean_spd"]["ols"]
    for run in runs:
        assert set(run["spd"]) == {"ols", "ridge", "gd1", "gd_multi"}
        assert sorted(run["probe_r2"]) == sorted(
            f"{t}@{f}" for t in ("XtY", "w_ols", "control_noise") for f in ("query", "pooled")
        )
        assert all(len(v) == 3 for v in run["probe_r2"].values())  # embedding + 2 blocks
        assert run["closest"] == min(run["mean_spd"], key=run["mean_spd"].get)
    # the saved weights are the evaluated model: they reproduce its test error on the evaluation prompts
    model = ICLTransformer(5, 16, 2, 2, "builtin", max_points=8).eval()
    model.load_state_dict(load_file(str(out / "model_sigma0.safetensors")))
    b = ICLTask(5, 8, 0.0, seed=50_000).sample(64)
    with torch.no_grad():
        pred = model(b.x, b.y).double()
    mse = (((pred - b.y.double()) ** 2).mean(0) / 5).tolist()
    assert mse == pytest.approx(noiseless["mse"]["model"], rel=1e-9)
    assert main(["report", str(out)]) == 0
    assert "closest algorithm" in capsys.readouterr().out


def test_a_registered_mixer_trains_through_the_recipe(tmp_path):
    out = tmp_path / "gla"
    args = ["run", "icl-algorithms", "--smoke", "--out", str(out), "--set", "mixer=gla",
            "--set", 'mixer_kwargs={"num_heads": 2}', "--set", "noise_stds=0.0", "--set", "steps=5"]  # fmt: skip
    assert main(args) == 0
    (run,) = json.loads((out / "summary.json").read_text())["runs"]
    assert len(run["mse"]["model"]) == 8 and all(0 < v < 10 for v in run["mse"]["model"])
    weights = load_file(str(out / "model_sigma0.safetensors"))
    # the GLA mixer, not the built-in attention
    assert any(k.startswith("blocks.0.mixer.") for k in weights) and not any(".qkv." in k for k in weights)


def test_unknown_mixer_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["run", "icl-algorithms", "--smoke", "--out", str(out), "--set", "mixer=nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mixer: unknown mixer 'nope'; choose 'builtin' or one of:" in err
    assert not out.exists()
