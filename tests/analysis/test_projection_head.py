"""Projection-head pieces: the loss against its definition and population form, the data, the weights."""

import pytest
import torch
from torch import nn

from linearlab.analysis.projection_head import (
    balanced_init_,
    feature_pairs,
    feature_weights,
    jacobian_feature_weights,
    probe_accuracy,
    spectral_contrastive_loss,
)
from linearlab.train import TrainConfig, train


def test_loss_matches_its_definition_by_loops():
    z1, z2 = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    pos = sum(float(z1[i] @ z2[i]) for i in range(6)) / 6
    neg = sum(float(z1[i] @ z2[j]) ** 2 for i in range(6) for j in range(6) if i != j) / 30
    assert float(spectral_contrastive_loss(z1, z2)) == pytest.approx(-2 * pos + neg, rel=1e-12)


def _population_loss(W, keep, noise):
    # E[x1 x2^T] = diag(keep^2, 0) (each view keeps a feature independently), E[x x^T] = diag(1, noise^2):
    # the loss is -2 tr(W A W^T) + ||W S W^T||_F^2
    f, d = len(keep), W.shape[1]
    kp = torch.tensor(keep, dtype=W.dtype) ** 2
    A = torch.diag(torch.cat([kp, torch.zeros(d - f, dtype=W.dtype)]))
    S = torch.diag(torch.cat([torch.ones(f, dtype=W.dtype), noise**2 * torch.ones(d - f, dtype=W.dtype)]))
    return -2 * torch.trace(W @ A @ W.T) + ((W @ S @ W.T) ** 2).sum()


def test_batch_loss_estimates_the_population_loss_whose_optimum_weights_are_keep():
    keep, d = [1.0, 0.5, 0.25], 8
    g = torch.Generator().manual_seed(0)
    W = 0.5 * torch.randn(4, d, generator=g, dtype=torch.float64)
    x1, x2, _ = feature_pairs(40000, keep, d, noise=0.7, generator=g)
    est = float(spectral_contrastive_loss(x1.double() @ W.T, x2.double() @ W.T))
    assert est == pytest.approx(float(_population_loss(W, keep, 0.7)), rel=0.03)
    # the optimum of the population loss: ||W e_j|| = keep_j, noise coordinates 0
    opt = torch.zeros(4, d, dtype=torch.float64)
    opt[:3, :3] = torch.diag(torch.tensor(keep, dtype=torch.float64))
    opt.requires_grad_(True)
    (grad,) = torch.autograd.grad(_population_loss(opt, keep, 0.7), opt)
    assert float(grad.abs().max()) < 1e-12
    torch.testing.assert_close(feature_weights(opt.detach(), 3), torch.tensor(keep, dtype=torch.float64))


def test_feature_pairs_keep_features_with_the_given_probability():
    g = torch.Generator().manual_seed(1)
    x1, x2, z = feature_pairs(20000, [1.0, 0.5, 0.0], dim=6, strengths=[2.0, 1.0, 1.0], generator=g)
    assert x1.shape == (20000, 6) and z.shape == (20000, 3)
    assert torch.equal(x1[:, 0], 2 * z[:, 0]) and torch.equal(x2[:, 0], 2 * z[:, 0])
    # both views agree when both kept (keep^2) or by chance otherwise
    agree = (x1[:, :3] == x2[:, :3]).float().mean(0)
    for a, k in zip(agree.tolist(), [1.0, 0.5, 0.0]):
        assert a == pytest.approx(k * k + (1 - k * k) / 2, abs=0.02)
    assert abs(float((x1[:, 3:] * x2[:, 3:]).mean())) < 0.02  # noise is redrawn per view
    with pytest.raises(ValueError, match=r"keep: expected 1..5 probabilities in \[0, 1\], got \[1.5\]"):
        feature_pairs(4, [1.5], dim=6)


def test_feature_weights_and_jacobian_weights_agree_on_a_linear_map():
    lin = nn.Linear(6, 3, bias=False)
    x = torch.randn(10, 6)
    torch.testing.assert_close(jacobian_feature_weights(lin, x, 4), feature_weights(lin.weight.detach(), 4))
    with pytest.raises(ValueError, match="features: expected 1..6 columns"):
        feature_weights(lin.weight, 7)


def test_balanced_init_is_exactly_balanced():
    first, second = nn.Linear(8, 5, bias=False).double(), nn.Linear(5, 4, bias=False).double()
    balanced_init_(first, second, 0.3, torch.Generator().manual_seed(0))
    w1, w2 = first.weight.detach(), second.weight.detach()
    torch.testing.assert_close(w1 @ w1.T, w2.T @ w2, rtol=0, atol=1e-12)
    assert float(w2.std()) == pytest.approx(0.3, rel=0.3)
    with pytest.raises(ValueError, match=r"first, second: expected W1 \[hid, dim\] with hid <= dim"):
        balanced_init_(nn.Linear(3, 5), nn.Linear(5, 2), 0.1)


def test_training_from_a_balanced_start_makes_pre_head_weights_square_roots():
    net = nn.Sequential(nn.Linear(8, 5, bias=False), nn.Linear(5, 4, bias=False)).double()
    balanced_init_(net[0], net[1], 0.3, torch.Generator().manual_seed(0))
    keep = [1.0, 0.25]  # optimum post-head weights 1 and 0.25: ratio 4, so 2 before the head

    def batch(step):
        g = torch.Generator().manual_seed(step)
        x1, x2, _ = feature_pairs(512, keep, 8, generator=g)
        return x1.double(), x2.double()

    cfg = TrainConfig(steps=800, batch_size=512, lr=0.05, optimizer="sgd", weight_decay=0.0, warmup_steps=0,
                      schedule="constant", grad_clip=0.0, progress=False, checkpoint_every=0, log_every=0)  # fmt: skip
    train(net, batch, lambda m, b: (spectral_contrastive_loss(m(b[0]), m(b[1])), {}), cfg)
    w1, w2 = net[0].weight.detach(), net[1].weight.detach()
    # gradient descent keeps the balance up to its step size, so sv(W1)^2 = sv(W2 W1)
    s1 = torch.linalg.svdvals(w1)[:2]
    s12 = torch.linalg.svdvals(w2 @ w1)[:2]
    torch.testing.assert_close(s1**2, s12, rtol=0.1, atol=0.0)
    pre, post = feature_weights(w1, 2), feature_weights(w2 @ w1, 2)
    assert float(post[0] / post[1]) == pytest.approx(4.0, rel=0.15)  # the optimum keep_0 / keep_1
    assert float(pre[0] / pre[1]) == pytest.approx(float(post[0] / post[1]) ** 0.5, rel=0.1)


def test_probe_accuracy_reads_a_linearly_decodable_label():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(400, 3, generator=g)
    y = (h[:, 1] > 0).long()
    assert probe_accuracy(h[:200], y[:200], h[200:], y[200:], C=10.0) > 0.95
