"""QuantVLA's ATM / OHB calibration after post-training quantization."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from linearlab.convert.quantize import quantize_
from linearlab.convert.quantvla import (
    ChannelScale,
    atm_alpha,
    attention_output_rms,
    head_logit_std,
    ohb_beta,
    quantvla_calibrate_,
)
from linearlab.models import MixerLM, ModelConfig


def _lm() -> MixerLM:
    torch.manual_seed(0)
    return MixerLM(ModelConfig(d_model=64, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2})).eval()


def test_head_logit_std_matches_a_direct_computation():
    model = _lm()
    ids = torch.randint(0, 256, (2, 9))
    attn = model.blocks[0].mixer
    captured = {}
    handle = attn.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    stds = head_logit_std(model, ids)
    handle.remove()
    q, k, _ = attn.qkv_proj(captured["x"]).chunk(3, dim=-1)
    q, k = (attn.rotary(t.unflatten(-1, (2, 32))) for t in (q, k))
    logits = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(32)
    mask = torch.ones(9, 9, dtype=torch.bool).tril()
    expected = logits[..., mask].std(-1).mean(0)
    torch.testing.assert_close(stds["blocks.0.mixer"], expected, rtol=1e-5, atol=1e-6)


def test_alpha_and_beta_rules():
    alpha = atm_alpha(torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([0.5, 2.0, 0.99, 0.8]))
    torch.testing.assert_close(alpha, torch.tensor([1.4, 0.7, 1.0, 1.0 / (0.8 + 1e-6)]))
    assert ohb_beta(1.0, 2.0) == pytest.approx(math.exp(-0.3))  # clamped
    assert ohb_beta(1.0, 1.02) == 1.0  # neutral band
    assert ohb_beta(1.0, 0.9) == pytest.approx(1 / 0.9)


def test_calibration_matches_the_teacher_scales_and_saves_through_safetensors(tmp_path):
    from safetensors.torch import load_file, save_file

    teacher = _lm()
    ids = torch.randint(0, 256, (4, 24))
    quant = copy.deepcopy(teacher)
    # a known drift in the last layer (earlier layers untouched, so its input is the teacher's):
    # queries scaled by 0.8 (logit std x0.8) and the attention output by 1.25
    quant.blocks[1].mixer.qkv_proj.weight.data[:64] *= 0.8
    quant.blocks[1].mixer.o_proj.weight.data *= 1.25
    res = quantvla_calibrate_(teacher, quant, ids)
    torch.testing.assert_close(res.alpha["blocks.0.mixer"], torch.ones(2))
    assert res.beta["blocks.0.mixer"] == 1.0
    torch.testing.assert_close(res.alpha["blocks.1.mixer"], torch.full((2,), 1 / 0.8), rtol=1e-4, atol=1e-4)
    assert res.beta["blocks.1.mixer"] == pytest.approx(1 / 1.25, rel=1e-4)
    torch.testing.assert_close(res.std_ratio_after["blocks.1.mixer"], torch.ones(2), rtol=1e-4, atol=1e-4)
    assert res.rms_ratio_before["blocks.1.mixer"] > 1.2  # before ATM the softer attention changes it a little
    assert res.rms_ratio_after["blocks.1.mixer"] == pytest.approx(1.0, rel=1e-4)
    # both scales undone: the calibrated model is the teacher again
    torch.testing.assert_close(quant(ids).logits, teacher(ids).logits, rtol=1e-4, atol=1e-4)
    assert isinstance(quant.blocks[0].mixer.qkv_proj, ChannelScale)
    save_file(quant.state_dict(), str(tmp_path / "q.safetensors"))
    again = copy.deepcopy(quant)
    for block in again.blocks:
        block.mixer.qkv_proj.scale.fill_(1.0)
    again.load_state_dict(load_file(str(tmp_path / "q.safetensors")))
    assert torch.equal(again(ids).logits, quant(ids).logits)
    with pytest.raises(ValueError, match="model_q: already calibrated"):
        quantvla_calibrate_(teacher, quant, ids)


def test_after_real_ptq_calibration_reduces_the_scale_drift():
    teacher = _lm()
    ids = torch.randint(0, 256, (4, 24))
    quant = copy.deepcopy(teacher)
    quantize_(quant, 2, act_bits=8)
    res = quantvla_calibrate_(teacher, quant, ids)
    before = sum(float((r.log()).abs().mean()) for r in res.std_ratio_before.values())
    after = sum(float((r.log()).abs().mean()) for r in res.std_ratio_after.values())
    assert after < before
    rms_before = sum(abs(math.log(r)) for r in res.rms_ratio_before.values())
    rms_after = sum(abs(math.log(r)) for r in res.rms_ratio_after.values())
    assert rms_after < rms_before
    assert torch.isfinite(quant(ids).logits).all()
    out_rms = attention_output_rms(quant, ids)
    assert set(out_rms) == {"blocks.0.mixer", "blocks.1.mixer"}


def test_errors():
    teacher = _lm()
    with pytest.raises(ValueError, match="model: Sequential has no softmax attention layers"):
        quantvla_calibrate_(nn.Sequential(nn.Linear(2, 2)), teacher, torch.zeros(1, 2, dtype=torch.long))
    other = MixerLM(ModelConfig(d_model=64, n_layers=1, mixer="softmax", mixer_kwargs={"num_heads": 2}))
    with pytest.raises(ValueError, match="model_q: its attention layers"):
        quantvla_calibrate_(teacher, other, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="batches: expected at least one batch"):
        quantvla_calibrate_(teacher, copy.deepcopy(teacher), [])
