"""Per-module weight quantization through torchao, our fake quant where torchao cannot, assign_bits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.convert.linear_swap import convert_, replaced_modules
from linearlab.convert.quantize import (
    FakeQuantLinear,
    WeightQuantConfig,
    assign_bits,
    expand_to_linears,
    fake_quantize_activation_int8,
    fake_quantize_weight,
    load_quantized,
    quantize_,
    save_quantized,
)
from linearlab.models import MixerLM, ModelConfig


def _lm() -> MixerLM:
    torch.manual_seed(0)
    return MixerLM(ModelConfig(d_model=64, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2})).eval()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quant_is_bit_identical_to_torchao(bits):
    torch.manual_seed(bits)
    lin = nn.Linear(96, 24)
    ao = WeightQuantConfig(bits=bits).replace(lin, "x")
    assert type(ao).__name__ == "Linear" and type(ao.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert torch.equal(ao.weight.dequantize(), fake_quantize_weight(lin.weight.detach(), bits, 32))
    # distinct integer levels per group: at most 2^bits
    w = fake_quantize_weight(lin.weight.detach(), bits, 32).reshape(24, 3, 32)
    assert max(len(torch.unique(g)) for g in w.reshape(-1, 32)) <= 2**bits
    x = torch.randn(5, 96)
    a8 = WeightQuantConfig(bits=bits, act_bits=8).replace(lin, "x")
    torch.testing.assert_close(a8(x), FakeQuantLinear(lin, bits, 32, act_bits=8)(x), atol=1e-5, rtol=1e-5)


def test_int8_activation_fake_quant_error_is_within_half_a_step():
    x = torch.randn(4, 50) * 3
    q = fake_quantize_activation_int8(x)
    step = (x.amax(-1, keepdim=True).clamp(min=0) - x.amin(-1, keepdim=True).clamp(max=0)) / 255
    assert ((q - x).abs() <= step / 2 + 1e-6).all()


def test_assign_bits_follows_importance_and_meets_the_budget():
    scores = {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.3}
    assert assign_bits(scores, 3.0, (2, 4)) == {"a": 4, "b": 2, "c": 4, "d": 2}
    assert assign_bits(scores, 3.0, (2, 4), higher_is_important=False) == {"a": 2, "b": 4, "c": 2, "d": 4}
    assert assign_bits(scores, 3.5, (2, 4)) == {"a": 4, "b": 2, "c": 4, "d": 4}
    for target in (8, 7, 6.5, 5, 4, 3.25, 2.5, 2):
        bits = assign_bits(scores, target, (2, 4, 8))
        mean = sum(bits.values()) / 4
        assert mean <= target + 1e-9 and target - mean < 1.5  # the step of one layer is at most 6/4
        ranked = sorted(scores, key=scores.get)
        assert [bits[k] for k in ranked] == sorted(bits[k] for k in ranked)  # monotone in importance
    with pytest.raises(ValueError, match=r"target_avg_bits: must be within the choices \[2, 4\], got 5"):
        assign_bits(scores, 5, (2, 4))
    with pytest.raises(ValueError, match="choices: integer weight bit-widths 1..8 are supported, got 16"):
        assign_bits(scores, 4, (4, 16))
    with pytest.raises(ValueError, match="scores: expected at least one"):
        assign_bits({}, 4)


def test_quantize_mixed_bits_uses_torchao_and_fake_quant_where_groups_do_not_divide(tmp_path):
    model = _lm()
    ids = torch.randint(0, 256, (2, 16))
    ref = model(ids).logits
    bits = expand_to_linears(model, {"blocks.0": 2, "blocks.1": 8})
    assert len(bits) == 8
    backend = quantize_(model, bits)
    # fc_out takes the GLU hidden width 171, which groups of 32 do not divide
    assert backend["blocks.0.mlp.fc_out"] == "fake" and backend["blocks.0.mlp.fc_in"] == "torchao"
    assert isinstance(model.blocks[0].mlp.fc_out, FakeQuantLinear)
    assert type(model.blocks[1].mixer.qkv_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"
    out = model(ids).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    # safetensors round trip: a model quantized the same way loads the file and gives the same logits
    save_quantized(model, tmp_path / "q.safetensors")
    fresh = _lm()
    quantize_(fresh, bits)
    load_quantized(fresh, tmp_path / "q.safetensors")
    assert torch.equal(fresh(ids).logits, out)
    with pytest.raises(FileNotFoundError, match="path: "):
        load_quantized(fresh, tmp_path / "missing.safetensors")


def test_errors_name_the_argument():
    model = _lm()
    with pytest.raises(ValueError, match="bits: integer weight bit-widths 1..8 are supported, got 16"):
        quantize_(model, 16)
    with pytest.raises(ValueError, match="act_bits: only None"):
        quantize_(model, 4, act_bits=4)
    with pytest.raises(ValueError, match="filter_fn: matched none"):
        quantize_(model, 4, filter_fn=lambda m, f: False)
    with pytest.raises(ValueError, match=r"bits: \['nope'\] are not nn.Linear layers"):
        quantize_(model, {"nope": 4})
    with pytest.raises(ValueError, match="bits_by_prefix: 'embed' holds no nn.Linear"):
        expand_to_linears(model, {"embed": 4})
    with pytest.raises(ValueError, match="group_size: must be a positive integer"):
        WeightQuantConfig(group_size=0)
    with pytest.raises(ValueError, match="has no nn.Linear layers to quantize"):
        quantize_(nn.Sequential(nn.ReLU()), 4)


def test_weight_quant_config_drops_into_mixer_lm_and_hf_llama_via_convert():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = _lm()
    ids = torch.randint(0, 256, (2, 10))
    convert_(model, WeightQuantConfig(bits=4, act_bits=8), filter_fn=lambda m, f: f.startswith("blocks.1."))
    assert isinstance(model.blocks[1].mlp.fc_out, FakeQuantLinear)  # 171 inputs: our fake quant
    assert type(model.blocks[1].mlp.fc_in.weight).__name__ == "IntxUnpackedToInt8Tensor"
    assert type(model.blocks[0].mlp.fc_in.weight) is nn.Parameter
    assert torch.isfinite(model(ids).logits).all()
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    hf = LlamaForCausalLM(cfg).eval()
    ref = hf(ids % 64).logits
    convert_(hf, WeightQuantConfig(bits=4), filter_fn=lambda m, f: "lm_head" not in f)
    assert type(hf.lm_head.weight) is nn.Parameter
    assert type(hf.model.layers[0].mlp.down_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"
    out = hf(ids % 64).logits
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
    assert not replaced_modules(hf, FakeQuantLinear)  # every width divides by 32 here
