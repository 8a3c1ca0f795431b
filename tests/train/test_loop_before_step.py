"""The train loop's ``before_step`` hook: called after backward, before clipping and the optimizer step."""

from __future__ import annotations

import torch
from torch import nn

from linearlab.train.loop import TrainConfig, train


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def loss_fn(m, batch):
        return ((m(batch[0]) - batch[1]) ** 2).mean(), {}

    cfg = TrainConfig(steps=4, batch_size=16, lr=0.1, optimizer="sgd", weight_decay=0.0, warmup_steps=0,
                      schedule="constant", grad_clip=1.0, progress=False, checkpoint_every=0)  # fmt: skip
    return model, (lambda step: (x, y)), loss_fn, cfg


def test_before_step_sees_complete_gradients_and_runs_before_the_update():
    model, batch_fn, loss_fn, cfg = _setup()
    seen = []

    def hook(step, m):
        assert m is model
        seen.append(
            (step, [p.grad.clone() for p in m.parameters()], [p.detach().clone() for p in m.parameters()])
        )

    train(model, batch_fn, loss_fn, cfg, before_step=hook)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3]
    # the gradient it saw is the full backward's gradient of that step's weights
    ref, _, _, _ = _setup()
    ref.load_state_dict({k: v for k, v in zip(ref.state_dict(), seen[2][2])})
    ((ref(batch_fn(0)[0]) - batch_fn(0)[1]) ** 2).mean().backward()
    for p, g in zip(ref.parameters(), seen[2][1]):
        torch.testing.assert_close(p.grad, g)


def test_a_hook_that_zeroes_gradients_freezes_the_weights_and_no_hook_changes_nothing():
    model, batch_fn, loss_fn, cfg = _setup()
    start = [p.detach().clone() for p in model.parameters()]

    def zero(step, m):
        for p in m.parameters():
            p.grad.zero_()

    train(model, batch_fn, loss_fn, cfg, before_step=[zero])
    assert all(torch.equal(p, s) for p, s in zip(model.parameters(), start))
    a, *_ = _setup()
    b, *_ = _setup()
    train(a, batch_fn, loss_fn, cfg)
    train(b, batch_fn, loss_fn, cfg, before_step=())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, s) for p, s in zip(a.parameters(), start))
