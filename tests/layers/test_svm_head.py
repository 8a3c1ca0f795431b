"""SVMHead + squared_hinge_loss (``layers/heads/svm.py``): the one-vs-rest L2-SVM against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.svm import LinearSVC
from torch import nn

from linearlab.layers.heads.svm import SVMHead, squared_hinge_loss, svm_targets


def test_loss_is_the_one_vs_rest_squared_hinge_with_the_weight_penalty():
    torch.manual_seed(0)
    scores = torch.randn(6, 4, dtype=torch.float64)
    target = torch.tensor([0, 3, 1, 1, 2, 0])
    W = torch.randn(4, 5, dtype=torch.float64)
    total = 0.0
    for i in range(6):
        for c in range(4):
            y = 1.0 if target[i] == c else -1.0
            total += max(0.0, 1 - y * float(scores[i, c])) ** 2
    penalty = 0.5 * float((W**2).sum())
    got_sum = squared_hinge_loss(scores, target, C=0.5, weight=W, reduction="sum")
    got_mean = squared_hinge_loss(scores, target, C=0.5, reduction="mean")
    assert float(got_sum) == pytest.approx(penalty + 0.5 * total, rel=1e-12)
    assert float(got_mean) == pytest.approx(0.5 * total / 6, rel=1e-12)


def test_gradient_is_minus_two_c_y_times_the_hinge():
    torch.manual_seed(1)
    scores = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.randint(3, (5,))
    squared_hinge_loss(scores, target, C=0.7, reduction="sum").backward()
    y = svm_targets(target, 3, torch.float64)
    expected = -2 * 0.7 * y * torch.clamp(1 - y * scores.detach(), min=0)
    torch.testing.assert_close(scores.grad, expected)
    assert (scores.grad == 0).any() and (scores.grad != 0).any()  # both sides of the hinge occur


def test_minimiser_matches_scikit_learns_linear_svc():
    # LinearSVC(loss="squared_hinge", fit_intercept=False) minimises exactly
    # 1/2 ||w_c||^2 + C sum_i max(0, 1 - y_ic w_c.x_i)^2 per class: a strictly convex problem
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 5))
    labels = (X @ rng.normal(size=(5, 3)) + 0.5 * rng.normal(size=(90, 3))).argmax(1)
    svc = LinearSVC(C=0.3, loss="squared_hinge", fit_intercept=False, tol=1e-12, max_iter=100_000, dual=False)
    svc.fit(X, labels)
    head = SVMHead(5, 3, bias=False).double()
    x, t = torch.from_numpy(X), torch.from_numpy(labels)
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=500, tolerance_grad=1e-13, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = head.loss(head(x), t, C=0.3, reduction="sum")
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    torch.testing.assert_close(head.weight.detach(), torch.from_numpy(svc.coef_), rtol=1e-5, atol=1e-6)
    assert torch.equal(head.predict(x), torch.from_numpy(svc.predict(X)))


def test_head_is_an_nn_linear_with_the_papers_init():
    torch.manual_seed(0)
    head = SVMHead(256, 5)
    assert isinstance(head, nn.Linear) and head.num_classes == 5
    assert set(head.state_dict()) == {"weight", "bias"}
    assert torch.all(head.bias == 0.1) and abs(float(head.weight.detach().std()) - 0.01) < 0.001
    h = torch.randn(2, 7, 256)
    assert head(h).shape == (2, 7, 5) and torch.equal(head.predict(h), head(h).argmax(-1))


def test_bad_inputs_are_named():
    s = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"target: class ids must be in \[0, 3\)"):
        squared_hinge_loss(s, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="scores/target"):
        squared_hinge_loss(s, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="C: must be > 0"):
        squared_hinge_loss(s, torch.tensor([0, 1, 2, 0]), C=0)
    with pytest.raises(ValueError, match="reduction: expected one of"):
        squared_hinge_loss(s, torch.tensor([0, 1, 2, 0]), reduction="none")
    with pytest.raises(TypeError, match="target: expected integer class ids"):
        squared_hinge_loss(s, torch.zeros(4))
    with pytest.raises(ValueError, match="num_classes: expected an int >= 2"):
        SVMHead(4, 1)
