"""Output signatures: exact probabilities and baselines, AUROC, LOS-Net learning a known rule."""

import pytest
import torch

from linearlab.analysis.output_signatures import (
    LOSNet,
    OutputSignature,
    auroc,
    output_signature,
    train_los_net,
    zlib_ratio,
)
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM


def test_signature_holds_the_models_probabilities():
    model = MixerLM(
        ModelConfig(mixer="softmax", d_model=32, n_layers=1, mixer_kwargs={"num_heads": 2}, vocab_size=50)
    ).eval()
    ids = torch.randint(0, 50, (3, 9))
    sig = output_signature(model, ids, top_k=5, batch_size=2)
    p = torch.softmax(model(ids).logits.double(), -1)[:, :-1]
    torch.testing.assert_close(sig.atp, p.gather(-1, ids[:, 1:, None]).squeeze(-1))
    torch.testing.assert_close(sig.topk, p.sort(-1, descending=True).values[..., :5])
    torch.testing.assert_close(sig.entropy, -(p * p.log()).sum(-1))
    assert sig.features().shape == (3, 8, 7)
    logp = sig.atp.log()
    torch.testing.assert_close(sig.mean_log_prob(), logp.mean(-1))
    torch.testing.assert_close(sig.min_k_percent(0.25), logp.sort(-1).values[:, :2].mean(-1))
    assert zlib_ratio(ids, sig).shape == (3,)
    with pytest.raises(ValueError, match="top_k: expected 1 <= top_k <= vocabulary size 50, got 51"):
        output_signature(model, ids, top_k=51)


def test_auroc_matches_pair_counting_with_ties():
    assert auroc(torch.tensor([0.9, 0.8, 0.1, 0.2]), torch.tensor([1, 1, 0, 0])) == 1.0
    assert auroc(torch.tensor([0.1, 0.2, 0.9, 0.8]), torch.tensor([1, 1, 0, 0])) == 0.0
    assert auroc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5
    # 1 positive (0.6) over negatives (0.5, 0.6, 0.7): 1 win, 1 tie, 1 loss -> 0.5
    assert auroc(torch.tensor([0.6, 0.5, 0.6, 0.7]), torch.tensor([1, 0, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="labels: expected both classes"):
        auroc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1]))


def test_los_net_learns_a_rule_the_mean_log_prob_cannot_see():
    # positives have a sharp distribution early and a flat one late; negatives the reverse, with the
    # same mean top-1 probability: a position-aware reader separates them, the mean does not
    g = torch.Generator().manual_seed(0)
    n, p, k = 256, 12, 4
    labels = torch.arange(n) % 2
    sharp = torch.tensor([0.85, 0.05, 0.05, 0.05])
    flat = torch.tensor([0.25, 0.25, 0.25, 0.25])
    first = torch.where(labels[:, None, None] == 1, sharp, flat).expand(n, p // 2, k)
    second = torch.where(labels[:, None, None] == 1, flat, sharp).expand(n, p // 2, k)
    topk = torch.cat([first, second], 1) + 0.01 * torch.rand(n, p, k, generator=g)
    atp = topk[..., 0].clone()
    sig = OutputSignature(topk.double(), atp.double(), torch.zeros(n, p, dtype=torch.float64))
    assert abs(auroc(sig.mean_log_prob(), labels) - 0.5) < 0.1
    net = train_los_net(sig.features()[:192], labels[:192], steps=150, lr=3e-3, d_model=16)
    with torch.no_grad():
        assert auroc(net(sig.features()[192:]), labels[192:]) > 0.95
    with pytest.raises(ValueError, match=r"x: expected \[N, P <= 12, 6\] signature features"):
        LOSNet(6, 12)(torch.zeros(2, 13, 6))
