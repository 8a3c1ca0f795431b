"""LIM and ZD layer-importance scores (layer-wise quantization, arXiv 2406.17415)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.analysis.layer_importance import find_blocks, lim_scores, zd_scores
from linearlab.models import MixerLM, ModelConfig


class _Scale(nn.Module):
    """A block that returns ``a * x + b * (x rotated by one channel)``: known cosine with its input."""

    def __init__(self, a: float, b: float, d: int) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        return self.a * x + self.b * x.roll(1, dims=-1)


class _Stack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def test_lim_is_one_minus_cosine_of_block_input_and_output():
    torch.manual_seed(0)
    model = _Stack([_Scale(1.0, 0.0, 8), _Scale(0.0, 1.0, 8), _Scale(-2.0, 0.0, 8)])
    x = torch.randn(3, 5, 8)
    lim = lim_scores(model, x)
    assert lim["blocks.0"] == pytest.approx(0.0, abs=1e-12)  # identity: cos 1
    assert lim["blocks.2"] == pytest.approx(2.0, abs=1e-12)  # negation: cos -1
    # the middle block: a channel roll; compare with the flattened cosine computed by hand
    h = x.double()
    expected = 1 - torch.nn.functional.cosine_similarity(h.flatten(), h.roll(1, -1).flatten(), dim=0)
    assert lim["blocks.1"] == pytest.approx(float(expected), rel=1e-9)
    per_tok = lim_scores(model, [x[:1], x[1:]], per_token=True)
    expected_tok = 1 - torch.nn.functional.cosine_similarity(h, h.roll(1, -1), dim=-1).mean()
    assert per_tok["blocks.1"] == pytest.approx(float(expected_tok), rel=1e-9)


def test_zd_counts_weights_beyond_one_sigma():
    block = _Scale(1.0, 0.0, 4)
    w = torch.tensor([0.0] * 14 + [10.0, -10.0])
    block.proj.weight.data = w.reshape(4, 4)
    model = _Stack([block])
    z = (w - w.mean()) / w.std()
    assert zd_scores(model)["blocks.0"] == pytest.approx(float((z.abs() > 1).double().mean()))
    assert zd_scores(model, two_sided=False)["blocks.0"] == pytest.approx(float((z > 1).double().mean()))
    # a Gaussian matrix: about 31.7% beyond one sigma
    torch.manual_seed(0)
    block.proj = nn.Linear(300, 300)
    nn.init.normal_(block.proj.weight)
    assert zd_scores(model)["blocks.0"] == pytest.approx(0.317, abs=0.01)


def test_scores_on_mixer_lm_and_hf_llama_and_errors():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    lm = MixerLM(ModelConfig(d_model=32, n_layers=3, mixer="softmax", mixer_kwargs={"num_heads": 2}))
    ids = torch.randint(0, 256, (2, 12))
    assert list(lim_scores(lm, ids)) == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(0 <= v <= 1 for v in zd_scores(lm).values())
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    scores = lim_scores(hf, ids % 64)
    assert list(scores) == ["model.layers.0", "model.layers.1"] and all(0 < v < 2 for v in scores.values())
    assert list(zd_scores(hf)) == list(find_blocks(hf))
    with pytest.raises(ValueError, match="model: Sequential has no nn.ModuleList named 'blocks' or 'layers'"):
        find_blocks(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="batches: expected at least one batch"):
        lim_scores(lm, [])
    with pytest.raises(ValueError, match="has no nn.Linear layers to score"):
        zd_scores(_Stack([nn.ReLU()]))
