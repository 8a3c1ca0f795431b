"""Looped linear self-attention: the hand-set block runs GD; the loss over the last loops."""

import pytest
import torch

from linearlab.analysis.icl_learners import gd
from linearlab.models.looped import LoopedLSA, looped_loss
from linearlab.tasks.icl import ICLTask


def _prompts(d=4, n=10, m=3, batch=8, seed=0):
    b = ICLTask(d, n + m, seed=seed, dtype=torch.float64).sample(batch)
    return b.x[:, :n], b.y[:, :n], b.x[:, n:]


def test_looped_block_set_by_hand_runs_k_gd_steps():
    x, y, _ = _prompts(d=5, n=15)
    basis = torch.eye(5, dtype=torch.float64).expand(8, 5, 5)
    for p in (None, torch.diag(torch.tensor([1.0, 0.5, 2.0, 1.0, 0.7]))):
        model = LoopedLSA.from_gd(5, lr=0.4, n_loops=20, preconditioner=p)
        w_loop = model(x, y, basis).detach()  # querying e_1..e_d reads the implicit weights
        w_gd = gd(x, y, 20, 0.4, preconditioner=None if p is None else p.double(), return_trajectory=True)[1:]
        assert w_loop.shape == (20, 8, 5)
        assert float((w_loop - w_gd).abs().max()) < 1e-6


def test_looped_loss_uses_the_last_loops():
    preds = torch.stack([torch.full((2, 3), v) for v in (3.0, 2.0, 1.0)])
    target = torch.zeros(2, 3)
    assert float(looped_loss(preds, target, last=1)) == pytest.approx(1.0)
    assert float(looped_loss(preds, target)) == pytest.approx((9 + 4 + 1) / 3)
    with pytest.raises(ValueError, match=r"last: expected an integer in \[1, 3\], got 4"):
        looped_loss(preds, target, last=4)
    with pytest.raises(ValueError, match=r"preds: expected \[b, \*y_query.shape\]"):
        looped_loss(preds, torch.zeros(3, 2))


def test_bad_loops():
    with pytest.raises(ValueError, match="n_loops: expected an integer >= 1, got 0"):
        LoopedLSA(3, 0)
    x, y, xq = _prompts()
    with pytest.raises(ValueError, match="n_loops: expected an integer >= 1, got 0"):
        LoopedLSA(4, 2)(x.float(), y.float(), xq.float(), n_loops=0)
