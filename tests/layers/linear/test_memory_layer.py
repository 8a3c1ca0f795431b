"""MemoryFormer memory layer: parity with a per-token loop, the corner-softmax score, gradients, surgery."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from linearlab.convert.linear_swap import convert_, replaced_modules
from linearlab.layers.linear.memory_layer import MemoryLayer, MemoryLayerConfig
from linearlab.models import MixerLM, ModelConfig


def _naive(layer: MemoryLayer, x: torch.Tensor) -> torch.Tensor:
    """Token by token, table by table, bit by bit, with the paper's formula for the score."""
    tau, K = layer.code_length, layer.num_tables
    tables = layer.tables.view(K, 2**tau, layer.out_features)
    flat = x.reshape(-1, layer.in_features)
    out = []
    for row in flat:
        padded = torch.cat([row, row.new_zeros(K * tau - layer.in_features)])
        y = layer.bias.clone() if layer.bias is not None else row.new_zeros(layer.out_features)
        for k in range(K):
            z = padded[k * tau : (k + 1) * tau]
            code = sum(int(z[i] >= 0) << (tau - 1 - i) for i in range(tau))
            p = torch.exp(z.abs().sum()) / torch.prod(torch.exp(z) + torch.exp(-z))
            if layer.score == "repo":
                p = p * z.abs().sum()
            y = y + p * tables[k, code]
        out.append(y)
    return torch.stack(out).view(*x.shape[:-1], layer.out_features)


@pytest.mark.parametrize("score", ["paper", "repo"])
@pytest.mark.parametrize("shape", [(12, 5, 4), (10, 3, 4)])  # 10 = 3 chunks of 4 with padding
def test_forward_and_gradients_match_the_per_token_loop(score, shape):
    d_in, d_out, tau = shape
    layer = MemoryLayer(d_in, d_out, code_length=tau, score=score).double()
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, d_in, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    ref = _naive(layer, x)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-12)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [x, layer.tables, layer.bias], g)
    want = torch.autograd.grad(ref, [x, layer.tables, layer.bias], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    # only the retrieved rows learn: at most (tokens x tables) rows get a gradient
    touched = (got[1].abs().sum(1) > 0).sum().item()
    assert 0 < touched <= 6 * layer.num_tables


def test_score_is_the_softmax_probability_of_the_hashed_corner():
    layer = MemoryLayer(3, 1, code_length=3).double()
    z = torch.randn(5, 1, 3, dtype=torch.float64)
    corners = torch.tensor(list(itertools.product([1.0, -1.0], repeat=3)), dtype=torch.float64)  # [8, 3]
    probs = torch.softmax(z[:, 0] @ corners.T, dim=-1)
    own = (corners.unsqueeze(0) == torch.where(z[:, 0] >= 0, 1.0, -1.0).unsqueeze(1)).all(-1)
    torch.testing.assert_close(layer.scores(z)[:, 0], probs[own], rtol=1e-12, atol=0)
    # ... and the hash indexes the corner: bit i set iff z_i >= 0 (first entry = most significant bit)
    code = layer.hash_codes(torch.tensor([[[0.5, -1.0, 0.0]]]))
    assert code.item() == 0b101


def test_a_memory_layer_learns_a_linear_map():
    torch.manual_seed(0)
    target = nn.Linear(16, 8)
    layer = MemoryLayer(16, 8, code_length=4)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x = torch.randn(512, 16)
    with torch.no_grad():
        y = target(x)
        start = ((layer(x) - y) ** 2).mean().item()
    for _ in range(150):
        opt.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * start


def test_state_dict_round_trips_through_safetensors(tmp_path):
    layer = MemoryLayer(20, 6, code_length=8)
    save_file(layer.state_dict(), tmp_path / "m.safetensors")
    assert set(layer.state_dict()) == {"tables", "bias"}
    fresh = MemoryLayer(20, 6, code_length=8)
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    x = torch.randn(4, 20)
    assert torch.equal(fresh(x), layer(x))


def test_costs_and_errors():
    layer = MemoryLayer(128, 64, code_length=8)
    assert layer.num_tables == 16 and layer.tables.shape == (16 * 256, 64)
    assert layer.macs_per_token() * 8 == 128 * 64
    with pytest.raises(ValueError, match="code_length: expected an int in \\[1, 16\\]"):
        MemoryLayer(8, 8, code_length=17)
    with pytest.raises(ValueError, match="score: expected one of"):
        MemoryLayerConfig(score="l2")
    with pytest.raises(ValueError, match="x: expected last dim 128"):
        layer(torch.randn(2, 127))
    assert math.isfinite(layer(torch.zeros(1, 128)).sum().item())


def test_drop_in_for_mixer_lm_mlp_and_attention_projections():
    torch.manual_seed(0)
    model = MixerLM(ModelConfig(d_model=32, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2}))
    ids = torch.randint(0, 256, (2, 10))
    convert_(model, MemoryLayerConfig(code_length=4), filter_fn=lambda m, fqn: fqn.startswith("blocks.0."))
    swapped = replaced_modules(model, MemoryLayer)
    assert sorted(swapped) == ["blocks.0.mixer.o_proj", "blocks.0.mixer.qkv_proj", "blocks.0.mlp.fc_in",
                               "blocks.0.mlp.fc_out"]  # fmt: skip
    assert isinstance(model.blocks[1].mlp.fc_in, nn.Linear)
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    assert all(m.tables.grad is not None and m.tables.grad.abs().sum() > 0 for m in swapped.values())


def test_drop_in_for_hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 64, (2, 8))
    convert_(model, MemoryLayerConfig(code_length=8), filter_fn=lambda m, fqn: "mlp" in fqn)
    assert sorted(replaced_modules(model, MemoryLayer)) == [
        "model.layers.0.mlp.down_proj", "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"
    ]  # fmt: skip
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 8, 64) and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="filter_fn: matched none"):
        convert_(model, MemoryLayerConfig(), filter_fn=lambda m, fqn: "nothing" in fqn)
