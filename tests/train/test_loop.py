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
