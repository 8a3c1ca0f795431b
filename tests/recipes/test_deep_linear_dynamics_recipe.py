"""The ``deep-linear-dynamics`` recipe: its full-batch GD on the shared loop, and the CLI at smoke size."""

import json
import math

import pytest
import torch

from linearlab.analysis.deep_linear_theory import half_time, half_time_index, strength_closed_form, teacher
from linearlab.cli import main
from linearlab.models.deep_linear import DeepLinearNet
from linearlab.recipes import deep_linear_dynamics
from linearlab.recipes.deep_linear_dynamics import full_batch_gd
from linearlab.runs import RunDir

# Numbers of `linearlab run deep-linear-dynamics --smoke`, recorded from the code before the recipe
# moved onto the shared training loop (commit 7698775). The port matches them to ~1e-13: plain SGD
# updates with one fused multiply-add where the old loop rounded ``lr * grad`` first.
GOLDEN_T_HALF = [134.57833763145405, 249.53824440416858, 462.29321862191347, 853.3082103109984]
GOLDEN_DEEP_T_HALF = [
    [22.432126548952596, 37.05365306067427, 59.14544072967773, 87.99851020300159],
    [42.52349238525971, 80.43780566496122, 149.01654066541522, 260.7497452606473],
]
GOLDEN_SWEEP = {
    ("decoupled", 2): 19.0, ("decoupled", 4): 14.0, ("orthogonal", 2): 98.0, ("orthogonal", 4): math.inf,
    ("gaussian", 2): 119.0, ("gaussian", 4): math.inf, ("small", 2): 195.0, ("small", 4): math.inf,
}  # fmt: skip


def _hand_gd(net, target, lr, steps):
    """The textbook loop: record the product, then step every weight by -lr * grad."""
    products, losses = [], []
    for t in range(steps + 1):
        net.zero_grad(set_to_none=True)
        p = net.product()
        loss = 0.5 * ((target - p) ** 2).sum()
        products.append(p.detach().clone())
        losses.append(float(loss.detach()))
        if t == steps:
            break
        loss.backward()
        with torch.no_grad():
            for w in net.weights:
                w -= lr * w.grad
    return torch.stack(products), torch.tensor(losses, dtype=torch.float64)


def test_full_batch_gd_is_plain_gd_with_the_state_before_each_update(tmp_path):
    T, U, V = teacher(4, 4, [2.0, 1.0], seed=1)
    products, hand_losses = _hand_gd(DeepLinearNet([4, 4, 4], init="small", scale=0.1, seed=3), T, 0.05, 40)
    net = DeepLinearNet([4, 4, 4], init="small", scale=0.1, seed=3)
    losses, strengths = full_batch_gd(net, T, 0.05, 40, RunDir.create("t", tmp_path / "gd"), modes=(U, V, 2))
    assert losses.shape == (41,) and strengths.shape == (41, 2)
    torch.testing.assert_close(losses, hand_losses, rtol=1e-12, atol=0)
    expected = torch.einsum("ia,tij,ja->ta", U[:, :2], products, V[:, :2])
    torch.testing.assert_close(strengths, expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(net.product().detach(), products[-1], rtol=1e-12, atol=1e-15)
    assert losses[-1] < 0.2 * losses[0]


def test_full_batch_gd_from_a_decoupled_start_follows_the_sigmoid(tmp_path):
    s_values = [2.0, 1.0]
    T, U, V = teacher(4, 4, s_values, seed=1)
    net = DeepLinearNet.decoupled(U, V, depth=2, u0=1e-3)
    _, traj = full_batch_gd(net, T, 0.02, 300, RunDir.create("t", tmp_path / "gd"), modes=(U, V, 2))
    for i, s in enumerate(s_values):
        assert half_time_index(traj[:, i], s) == pytest.approx(half_time(s, 1e-3, 50.0), rel=0.03)
        closed = strength_closed_form(torch.arange(301.0), s, 1e-3, 50.0)
        assert float((traj[:, i] - closed).abs().max()) < 0.06 * s


def test_full_batch_gd_resumes_an_interrupted_training_exactly(tmp_path, monkeypatch):
    T, U, V = teacher(4, 4, [2.0, 1.0], seed=1)
    whole = full_batch_gd(DeepLinearNet([4, 4, 4], init="small", scale=0.1, seed=3), T, 0.05, 40,
                          RunDir.create("t", tmp_path / "whole"), modes=(U, V, 2), checkpoint_every=10)  # fmt: skip
    real_train = deep_linear_dynamics.train
    monkeypatch.setattr(
        deep_linear_dynamics, "train", lambda *a, **kw: real_train(*a, stop_after=25, **kw)
    )  # killed after step 25; the last checkpoint is at step 20
    folder = RunDir.create("t", tmp_path / "cut")
    with pytest.raises(ValueError, match=r"no record of step\(s\) \[26, 27"):
        full_batch_gd(DeepLinearNet([4, 4, 4], init="small", scale=0.1, seed=3), T, 0.05, 40, folder,
                      modes=(U, V, 2), checkpoint_every=10)  # fmt: skip
    monkeypatch.setattr(deep_linear_dynamics, "train", real_train)
    # a fresh net: the checkpoint restores the weights of step 20
    resumed = full_batch_gd(DeepLinearNet([4, 4, 4], init="small", scale=0.1, seed=3), T, 0.05, 40, folder,
                            modes=(U, V, 2), checkpoint_every=10)  # fmt: skip
    assert torch.equal(resumed[0], whole[0]) and torch.equal(resumed[1], whole[1])


def test_smoke_reproduces_the_pre_refactor_run_and_the_theory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "deep-linear-dynamics", "--smoke", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["preset"] == "smoke"
    s = json.loads((out / "summary.json").read_text())
    modes = s["two_layer"]["modes"]
    assert [m["t_half_measured"] for m in modes] == pytest.approx(GOLDEN_T_HALF, rel=1e-9)
    for deep, golden in zip(s["deep_decoupled"], GOLDEN_DEEP_T_HALF):
        assert deep["t_half_measured"] == pytest.approx(golden, rel=1e-9)
    assert {(r["init"], r["depth"]): r["median"] for r in s["sweep"]} == GOLDEN_SWEEP
    # the theory: half times within 2% of the closed form, slope tau/2 = 50 within 1%
    assert all(abs(m["rel_err"]) < 0.02 for m in modes)
    assert s["two_layer"]["slope_measured"] == pytest.approx(50.0, rel=0.01)
    assert all(r["max_abs_rel_err"] < 0.05 for r in s["deep_decoupled"])
    assert s["sweep_depth_ratio"]["decoupled"] < 1 and s["sweep_depth_ratio"]["small"] == math.inf
    assert (out / "two_layer" / "decoupled" / "checkpoint.safetensors").exists()
    assert len(list((out / "sweep").iterdir())) == 8
    assert main(["report", str(out)]) == 0
    assert "time to half strength" in capsys.readouterr().out


def test_bad_values_are_one_line_errors_and_leave_nothing(tmp_path, capsys):
    for extra, message in [
        (["--set", "sweep_scales=1.0"], "sweep_scales: expected one positive scale per init (4)"),
        (
            ["--set", "sweep_inits=decoupled,xavier", "--set", "sweep_scales=1,1"],
            "sweep_inits: expected names",
        ),
        (["--set", "u0=0.3"], "u0: expected 0 < u0 < min(singular_values)/2 = 0.25"),
        (["--set", "singular_values=[]"], "singular_values: expected at least one"),
    ]:
        out = tmp_path / "x"
        assert main(["run", "deep-linear-dynamics", "--smoke", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
        assert not out.exists()
