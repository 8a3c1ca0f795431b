"""Interpolation barriers: the exact quadratic identity, HVPs vs the Hessian, layer-wise lines, errors."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linearlab.analysis.mode_connectivity import (
    interpolation_barrier,
    layer_blocks,
    quadratic_form,
    spawn_children,
)
from linearlab.train import TrainConfig


class Quadratic(nn.Module):
    """Two parameter blocks; the loss is an indefinite quadratic form of their concatenation."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.u = nn.Module()
        self.u.weight = nn.Parameter(torch.randn(3, generator=g, dtype=torch.float64))
        self.v = nn.Module()
        self.v.weight = nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))

    def flat(self) -> torch.Tensor:
        return torch.cat([self.u.weight, self.v.weight])


def _quadratic_loss():
    g = torch.Generator().manual_seed(7)
    M = torch.randn(5, 5, generator=g, dtype=torch.float64)
    Q = M + M.T - 1.0 * torch.eye(5, dtype=torch.float64)  # symmetric, indefinite
    c = torch.randn(5, generator=g, dtype=torch.float64)
    return Q, c, lambda m: 0.5 * (m.flat() - c) @ Q @ (m.flat() - c) + 0.3 * (m.flat() - c).sum()


def test_the_midpoint_barrier_of_a_quadratic_is_minus_one_eighth_delta_h_delta():
    Q, _, loss = _quadratic_loss()
    a, b = Quadratic(1), Quadratic(2)
    res = interpolation_barrier(a, b, loss, alphas=torch.linspace(0, 1, 21), layers=["u", "v"])
    delta = (a.flat() - b.flat()).detach()
    assert res.curvature == pytest.approx(float(delta @ Q @ delta), rel=1e-12)
    assert res.midpoint_barrier == pytest.approx(res.predicted_midpoint, rel=1e-10, abs=1e-12)
    # along the whole line the barrier of a quadratic is alpha (1 - alpha) * (-1/2) delta^T Q delta
    t = torch.tensor(res.alphas, dtype=torch.float64)
    torch.testing.assert_close(torch.tensor(res.barrier, dtype=torch.float64),
                               -0.5 * t * (1 - t) * float(delta @ Q @ delta), rtol=1e-9, atol=1e-12)  # fmt: skip
    # layer-wise: only the block moves, so only the block's Hessian counts
    for name, sl in (("u", slice(0, 3)), ("v", slice(3, 5))):
        d = torch.zeros(5, dtype=torch.float64)
        d[sl] = delta[sl]
        layer = res.layers[name]
        assert layer.curvature == pytest.approx(float(d @ Q @ d), rel=1e-12)
        assert layer.midpoint_barrier == pytest.approx(layer.predicted_midpoint, rel=1e-10, abs=1e-12)
        assert layer.barrier[0] == 0.0 and abs(layer.barrier[-1]) < 1e-12
    # the inputs are untouched
    assert torch.equal(a.flat(), Quadratic(1).flat()) and torch.equal(b.flat(), Quadratic(2).flat())


def _mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def test_quadratic_form_equals_the_explicit_hessian():
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    net = _mlp(0)

    def loss(m):
        return F.cross_entropy(m(x), y)

    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss_flat(flat):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[i : i + s.numel()].reshape(s)
            i += s.numel()
        return loss(lambda inp: torch.func.functional_call(net, params, (inp,)))

    H = torch.autograd.functional.hessian(loss_flat, flat0)
    v = torch.randn_like(flat0)
    direction, i = {}, 0
    for n, s in zip(names, shapes):
        direction[n] = v[i : i + s.numel()].reshape(s)
        i += s.numel()
    point = {n: p.detach() for n, p in net.named_parameters()}
    assert quadratic_form(net, loss, point, direction) == pytest.approx(float(v @ H @ v), rel=1e-10)
    # one block only: the block's diagonal Hessian block
    blk = {"2.weight": direction["2.weight"]}
    mask = torch.zeros_like(v)
    start = sum(s.numel() for s in shapes[:2])
    mask[start : start + 18] = 1
    vb = v * mask
    assert quadratic_form(net, loss, {"2.weight": point["2.weight"]}, blk) == pytest.approx(
        float(vb @ H @ vb), rel=1e-10
    )


def test_barrier_on_a_network_scans_loss_and_error():
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (30,))
    a, b = _mlp(0), _mlp(1)
    res = interpolation_barrier(
        a, b, lambda m: F.cross_entropy(m(x), y), alphas=[0.0, 0.25, 0.5, 0.75, 1.0],
        layers=layer_blocks(a), metric_fn=lambda m: float((m(x).argmax(1) != y).double().mean()),
    )  # fmt: skip
    assert layer_blocks(a) == ["0", "2"] and set(res.layers) == {"0", "2"}
    assert res.losses[0] == pytest.approx(float(F.cross_entropy(a(x), y).detach()), rel=1e-12)
    assert res.losses[-1] == pytest.approx(float(F.cross_entropy(b(x), y).detach()), rel=1e-12)
    assert res.barrier[0] == 0.0 and abs(res.barrier[-1]) < 1e-12
    assert res.max_barrier == max(res.barrier) and res.midpoint_barrier == res.barrier[2]
    assert len(res.errors) == 5 and res.max_error_barrier == max(res.error_barrier)
    # the layer-"2" line ends at model A with B's last layer
    hybrid = copy.deepcopy(a)
    hybrid[2].load_state_dict(b[2].state_dict())
    assert res.layers["2"].losses[-1] == pytest.approx(
        float(F.cross_entropy(hybrid(x), y).detach()), rel=1e-12
    )


def test_mismatched_models_and_bad_arguments_are_clear_errors():
    a = _mlp(0)
    with pytest.raises(
        ValueError, match=r"model_b: parameter '2.weight' has shape \(4, 6\), model_a has \(3, 6\)"
    ):
        interpolation_barrier(
            a, nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4)).double(), lambda m: 0
        )
    other = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3)).double()
    with pytest.raises(ValueError, match=r"differ in parameter names \(only in model_a: \['2.bias'"):
        interpolation_barrier(a, other, lambda m: 0)
    with pytest.raises(ValueError, match="alphas: must contain 0 and 1"):
        interpolation_barrier(
            a, _mlp(1), lambda m: m(torch.ones(1, 4, dtype=torch.float64)).sum(), alphas=[0.0, 0.5]
        )
    with pytest.raises(ValueError, match=r"layers: 'fc' names no parameters.*\['0', '2'\]"):
        interpolation_barrier(
            a, _mlp(1), lambda m: m(torch.ones(1, 4, dtype=torch.float64)).sum(), layers=["fc"]
        )


def test_spawn_children_differ_only_by_batch_order():
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    parent = _mlp(0)
    before = copy.deepcopy(parent.state_dict())

    def order(seed):
        perm = torch.randperm(64, generator=torch.Generator().manual_seed(seed))
        return lambda step: (x[perm[(step * 8) % 64 :][:8]], y[perm[(step * 8) % 64 :][:8]])

    def loss(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1]), {}

    cfg = TrainConfig(steps=20, batch_size=8, lr=0.1, optimizer="sgd", weight_decay=0.0, warmup_steps=0,
                      progress=False, checkpoint_every=0, log_every=0)  # fmt: skip
    c1, c2, c3 = spawn_children(parent, [order(1), order(2), order(1)], loss, cfg)
    for k, v in parent.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(torch.equal(c1.state_dict()[k], c3.state_dict()[k]) for k in before)
    assert not torch.equal(c1[0].weight, c2[0].weight) and not torch.equal(c1[0].weight, parent[0].weight)
    with pytest.raises(ValueError, match="batch_fns: expected at least two"):
        spawn_children(parent, [order(1)], loss, cfg)
