import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train
from linearlab.train.checkpoint import load_checkpoint, save_checkpoint
from linearlab.train.loop import lr_at, make_optimizer

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_tiny_train.py"
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
from _tiny_train import batch_fn_factory, loss_fn, make_model  # noqa: E402


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(HERE), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run_script(*args, **kw):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


def _weights(path):
    return load_file(str(path))


def test_lr_schedule_warmup_and_cosine():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    mid = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(mid, mid[1:]))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="train.steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="train.lr"):
        TrainConfig(lr=-1)


def test_checkpoint_roundtrip_restores_model_and_optimizer(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=8, lr=1e-2, warmup_steps=0, checkpoint_every=0, progress=False)
    model = make_model()
    train(model, batch_fn_factory(8, 0), loss_fn, cfg)
    opt = make_optimizer(model, cfg)
    loss, _ = loss_fn(model, batch_fn_factory(8, 0)(0))
    loss.backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, {"step": 7})
    model2 = make_model()
    opt2 = make_optimizer(model2, cfg)
    state = load_checkpoint(tmp_path / "c.safetensors", model2, opt2)
    assert state == {"step": 7}
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        s1, s2 = opt.state[p1], opt2.state[p2]
        assert torch.equal(s1["exp_avg"], s2["exp_avg"]) and torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
        assert float(s1["step"]) == float(s2["step"])


def test_same_seed_gives_identical_runs(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for out, name in ((a, "ra"), (b, "rb")):
        r = _run_script("--run-dir", tmp_path / name, "--steps", 15, "--out", out)
        assert r.returncode == 0, r.stderr
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    full = tmp_path / "full.safetensors"
    r = _run_script("--run-dir", tmp_path / "full", "--steps", 60, "--out", full)
    assert r.returncode == 0, r.stderr

    run = tmp_path / "killed"
    out = tmp_path / "resumed.safetensors"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--run-dir",
            str(run),
            "--steps",
            "60",
            "--delay",
            "0.05",
            "--out",
            str(out),
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ckpt = run / "checkpoint.safetensors"
    deadline = time.time() + 60
    while time.time() < deadline and not (
        ckpt.exists() and RunDir(run).read_metrics() and RunDir(run).read_metrics()[-1]["step"] >= 17
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "the run finished before it could be killed"
    steps_logged = RunDir(run).read_metrics()[-1]["step"]
    assert 17 <= steps_logged < 60
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")], "a temporary file was left behind"

    r = _run_script("--run-dir", run, "--steps", 60, "--resume", "--out", out)
    assert r.returncode == 0, r.stderr
    w_full, w_res = _weights(full), _weights(out)
    assert all(torch.equal(w_full[k], w_res[k]) for k in w_full)


def test_torchrun_two_processes_match_one_process(tmp_path):
    one = tmp_path / "one.safetensors"
    r = _run_script("--run-dir", tmp_path / "one", "--steps", 8, "--checkpoint-every", 0, "--out", one)
    assert r.returncode == 0, r.stderr
    two = tmp_path / "two.safetensors"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(SCRIPT), "--run-dir", str(tmp_path / "two"), "--steps", "8", "--checkpoint-every", "0", "--out", str(two),
    ]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    w1, w2 = _weights(one), _weights(two)
    for k in w1:
        err = (w1[k] - w2[k]).abs().max().item()
        assert err < 1e-5, (k, err)
    # training moved the weights, so the comparison is not trivially true
    init = make_model().state_dict()
    assert all((init[k] - w1[k]).abs().max() > 1e-3 for k in w1)


def test_nonfinite_loss_is_reported():
    model = torch.nn.Linear(2, 1)

    def batch_fn(step):
        return torch.ones(4, 2)

    def loss_fn(m, x):
        return m(x).sum() * math.inf, {}

    with pytest.raises(FloatingPointError, match="step 0"):
        train(model, batch_fn, loss_fn, TrainConfig(steps=2, progress=False, checkpoint_every=0))


class _EpochBatches:
    """A stateful batch source: reshuffles 24 rows every epoch of 3 batches from its own generator."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(99)
        self.x = torch.randn(24, 6, generator=g)
        self.y = self.x.sum(-1, keepdim=True)
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = None

    def __call__(self, step: int):
        if step % 3 == 0:
            self.perm = torch.randperm(24, generator=self.gen)
        idx = self.perm[(step % 3) * 8 : (step % 3 + 1) * 8]
        return self.x[idx], self.y[idx]

    def state_dict(self):
        return {"gen": self.gen.get_state().tolist(), "perm": self.perm.tolist()}

    def load_state_dict(self, state):
        self.gen.set_state(torch.tensor(state["gen"], dtype=torch.uint8))
        self.perm = torch.tensor(state["perm"])


def _epoch_cfg(**kw):
    base = dict(steps=30, batch_size=8, lr=5e-2, warmup_steps=0, weight_decay=0.0, grad_clip=0,
                progress=False, checkpoint_every=3, eval_every=3, monitor="val", patience=2)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _noisy_eval():
    """A validation metric that improves, then worsens: early stopping must stop and restore the best."""
    values = iter([5.0, 4.0, 3.0, 3.5, 3.2, 3.1, 9.0, 9.0, 9.0, 9.0])
    return lambda model: {"val": next(values)}


def test_early_stopping_restores_the_best_weights_and_stops_after_patience(tmp_path):
    snapshots = {}

    def remember(step, model):
        snapshots[step] = {k: v.clone() for k, v in model.state_dict().items()}

    model = make_model()
    result = train(model, _EpochBatches(), loss_fn, _epoch_cfg(), eval_fn=_noisy_eval(), on_step=remember)
    # evaluations at steps 3, 6, 9, 12, 15: best 3.0 at step 9, then two without improvement
    assert result.stopped_early and result.steps == 15
    assert result.best_step == 9 and result.best_metric == 3.0
    assert len(result.losses) == 15
    assert all(torch.equal(v, snapshots[9][k]) for k, v in model.state_dict().items())
    assert not torch.equal(snapshots[15]["0.weight"], snapshots[9]["0.weight"])


def test_stateful_batches_and_early_stopping_resume_exactly(tmp_path):
    full = make_model()
    train(
        full,
        _EpochBatches(),
        loss_fn,
        _epoch_cfg(patience=0, steps=21),
        run_dir=RunDir(tmp_path / "a"),
        eval_fn=_noisy_eval(),
    )
    part = make_model()
    cfg = _epoch_cfg(patience=0, steps=21)
    train(
        part,
        _EpochBatches(),
        loss_fn,
        cfg,
        run_dir=RunDir(tmp_path / "b"),
        eval_fn=_noisy_eval(),
        stop_after=10,
    )
    # a new process would build a fresh batch source and model: resume restores both
    evals = _noisy_eval()
    for _ in range(3):  # the evaluations at steps 3, 6, 9 already happened
        evals(None)
    resumed = make_model()
    r = train(
        resumed, _EpochBatches(), loss_fn, cfg, run_dir=RunDir(tmp_path / "b"), eval_fn=evals, resume=True
    )
    assert r.resumed_from == 9  # the last checkpoint before the interruption at step 10
    assert r.best_step == 9
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_sgd_constant_schedule_is_plain_gradient_descent():
    torch.manual_seed(0)
    w = torch.nn.Linear(3, 1, bias=False)
    start = w.weight.detach().clone()
    x = torch.randn(5, 3)
    cfg = TrainConfig(steps=1, lr=0.1, optimizer="sgd", weight_decay=0.0, schedule="constant", warmup_steps=0,
                      grad_clip=0, progress=False, checkpoint_every=0)  # fmt: skip
    train(w, lambda s: x, lambda m, b: ((m(b) ** 2).mean(), {}), cfg)
    grad = 2 * ((x @ start.T) * x).mean(0, keepdim=True)
    assert torch.allclose(w.weight, start - 0.1 * grad, atol=1e-7)


def test_advance_schedules_runs_once_per_optimizer_step_and_hooks_see_the_step():
    class Counting(torch.nn.Linear):
        advanced = 0

        def advance_schedules(self):
            self.advanced += 1

    model = Counting(2, 1)
    seen = []
    cfg = TrainConfig(steps=4, progress=False, checkpoint_every=0, warmup_steps=0)
    train(
        model,
        lambda s: torch.ones(2, 2),
        lambda m, b: (m(b).pow(2).mean(), {}),
        cfg,
        on_step=lambda s, m: seen.append(s),
    )
    assert model.advanced == 4 and seen == [1, 2, 3, 4]


def test_lr_fn_replaces_the_schedule(tmp_path):
    run = RunDir(tmp_path)
    cfg = TrainConfig(steps=4, lr=1.0, log_every=1, progress=False, checkpoint_every=0)
    train(torch.nn.Linear(2, 1), lambda s: torch.ones(2, 2), lambda m, b: (m(b).mean(), {}), cfg, run_dir=run,
          lr_fn=lambda step: 0.5**step)  # fmt: skip
    assert [r["lr"] for r in run.read_metrics()] == [1.0, 0.5, 0.25, 0.125]


def test_bad_train_config_values_name_the_field():
    for kw, msg in (
        ({"optimizer": "lion"}, "train.optimizer"),
        ({"schedule": "step"}, "train.schedule"),
        ({"patience": 2}, "needs train.monitor"),
        ({"monitor": "val"}, "train.eval_every"),
        ({"patience": -1}, "train.patience"),
    ):
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**kw)


def test_a_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path):
    cfg = TrainConfig(steps=3, progress=False, checkpoint_every=1, warmup_steps=0)
    run = RunDir(tmp_path)
    train(make_model(), batch_fn_factory(8, 0), loss_fn, cfg, run_dir=run)
    ckpt = run.file("checkpoint.safetensors")
    # another architecture: names and shapes differ
    other = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    with pytest.raises(
        ValueError, match=r"another architecture than Sequential \(other shape: 0.bias, 0.weight, 2.weight"
    ):
        train(other, batch_fn_factory(8, 0), loss_fn, cfg, run_dir=run, resume=True)
    # a truncated file
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        train(make_model(), batch_fn_factory(8, 0), loss_fn, cfg, run_dir=run, resume=True)
    with pytest.raises(ValueError, match="has no trainable parameters"):
        train(torch.nn.Identity(), batch_fn_factory(8, 0), loss_fn, cfg)
