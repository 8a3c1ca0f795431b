"""LP / FT / LP-FT on the shared loop, the NTK split (exact identities), ECE and temperature scaling."""

import copy

import pytest
import torch
from torch import nn

from linearlab.analysis.lp_ft import (
    ProbedModel,
    expected_calibration_error,
    feature_change,
    finetune,
    fit_temperature,
    head_norm,
    linear_probe,
    lp_ft,
    ntk_split,
)
from linearlab.train import TrainConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return ProbedModel(
        nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh()), nn.Linear(6, 3)
    ).double()


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return x, y


def _cfg(steps=30):
    return TrainConfig(steps=steps, batch_size=64, lr=0.05, optimizer="sgd", weight_decay=0.0, warmup_steps=0,
                       schedule="constant", grad_clip=0.0, progress=False, checkpoint_every=0, log_every=0)  # fmt: skip


def test_ntk_terms_sum_to_the_full_ntk_and_the_head_term_is_the_feature_gram():
    m = _model()
    x, _ = _data()
    x, x2 = x[:4], x[4:7]
    head, feat = ntk_split(m, x, x2)
    assert head.shape == feat.shape == (4, 3, 3, 3)
    # the full NTK from the Jacobian of every parameter at once
    params = {k: v.detach() for k, v in m.named_parameters()}

    def flat_jac(inp):
        jac = torch.func.jacrev(lambda p: torch.func.functional_call(m, p, (inp,)))(params)
        return torch.cat([j.reshape(inp.shape[0], 3, -1) for j in jac.values()], 2)

    full = torch.einsum("acp,bdp->abcd", flat_jac(x), flat_jac(x2))
    torch.testing.assert_close(head + feat, full, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        gram = m.features(x) @ m.features(x2).T + 1.0
    torch.testing.assert_close(
        head, gram[:, :, None, None] * torch.eye(3, dtype=torch.float64), rtol=1e-12, atol=1e-12
    )
    # the feature term scales with the head's norm squared; the head term does not change
    with torch.no_grad():
        m.head.weight.mul_(3.0)
    head3, feat3 = ntk_split(m, x, x2)
    torch.testing.assert_close(feat3, 9.0 * feat, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(head3, head, rtol=0, atol=0)


def test_linear_probe_moves_only_the_head_and_finetune_moves_everything():
    x, y = _data()
    m = _model()
    b0 = copy.deepcopy(m.backbone)
    norms = linear_probe(m, lambda s: (x, y), _cfg())
    assert len(norms) == 31 and norms[-1] == head_norm(m) and norms[-1] != norms[0]
    assert all(torch.equal(p, q) for p, q in zip(m.backbone.parameters(), b0.parameters()))
    assert feature_change(b0, m.backbone, x) == 0.0
    assert all(p.requires_grad for p in m.parameters())  # unfrozen again
    finetune(m, lambda s: (x, y), _cfg())
    assert feature_change(b0, m.backbone, x) > 0.0
    # lp_ft is the two in a row
    m2 = _model()
    lp, ft = lp_ft(m2, lambda s: (x, y), _cfg(), _cfg())
    assert lp == norms and torch.equal(m2.head.weight, m.head.weight)
    assert ft[0] == lp[-1]


def test_cross_entropy_probing_grows_the_head_norm_on_separable_data():
    x, _ = _data()
    y = (x[:, 0] > 0).long() * 2  # separable by one coordinate, which tanh features keep
    m = _model()
    norms = linear_probe(m, lambda s: (x, y), _cfg(300))
    assert norms[-1] > 2 * norms[0]
    assert all(b >= a - 1e-9 for a, b in zip(norms[100:], norms[101:]))


def test_feature_change_is_the_mean_row_distance():
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    x = torch.randn(7, 3)
    expected = (b(x) - a(x)).norm(dim=1).mean()
    assert feature_change(a, b, x) == pytest.approx(float(expected.detach()), rel=1e-6)


def test_ece_by_hand_and_temperature_recovers_a_known_scale():
    logits = torch.log(torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.3, 0.7]], dtype=torch.float64))
    labels = torch.tensor([0, 1, 0, 1])
    # bins (0.8667, 0.9333]: {0.9 correct}; (0.5333, 0.6]: {0.6 wrong}; (0.7333, 0.8]: {0.8 ok}; {0.7 ok}
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.8) + abs(1 - 0.7)) / 4
    assert expected_calibration_error(logits, labels, n_bins=15) == pytest.approx(expected, rel=1e-9)
    assert expected_calibration_error(logits, labels, n_bins=1) == pytest.approx(abs(0.75 - 0.75), abs=1e-12)
    # labels drawn from softmax(z): the logits 3 z are fixed by T = 3
    g = torch.Generator().manual_seed(0)
    z = 2.0 * torch.randn(20000, 4, generator=g, dtype=torch.float64)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(3.0 * z, y)
    assert t == pytest.approx(3.0, rel=0.05)
    assert expected_calibration_error(3.0 * z / t, y) < expected_calibration_error(3.0 * z, y)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(TypeError, match="head: expected an nn.Linear"):
        ProbedModel(nn.Identity(), nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(TypeError, match="model: expected a ProbedModel"):
        ntk_split(nn.Linear(2, 2), torch.randn(2, 2))
    with pytest.raises(
        ValueError, match=r"logits, labels: expected \[N, C\] and \[N\], got \(3,\) and \(3,\)"
    ):
        expected_calibration_error(torch.randn(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="n_bins: must be >= 1, got 0"):
        expected_calibration_error(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), n_bins=0)
