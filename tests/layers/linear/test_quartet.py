"""Quartet (MXFP4 training): the format against torchao, the forward quantiser, the backward scheme."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.convert.linear_swap import convert_, replaced_modules
from linearlab.layers.linear.mx_format import (
    E2M1_GRID,
    block_rotate,
    hadamard_matrix,
    mx_quantize,
    rtn_e2m1,
    sr_e2m1,
)
from linearlab.layers.linear.quartet import QuartetConfig, QuartetLinear, quantized_gemm
from linearlab.models import MixerLM, ModelConfig


def test_floor_rule_is_bit_identical_to_torchao_mxtensor():
    from torchao.prototype.mx_formats.mx_tensor import MXTensor

    torch.manual_seed(0)
    x = torch.randn(48, 160) * torch.logspace(-3, 3, 160)  # blocks of very different magnitudes
    x[3, :32] = 0.0  # an all-zero block
    # exact ties of the E2M1 grid (block max 6 -> scale 1): torchao rounds half to even
    x[5, :12] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -2.5, 7.0, 6.0, 6.5])
    ours, _ = mx_quantize(x, "floor")
    ref = MXTensor.to_mx(x, torch.float4_e2m1fn_x2, 32).dequantize(torch.float32)
    assert torch.equal(ours, ref)


def test_rounding_lands_on_the_grid_and_sr_is_unbiased():
    grid = torch.tensor(E2M1_GRID)
    a = torch.linspace(-6, 6, 241)
    q = rtn_e2m1(a)
    assert torch.isin(q.abs(), grid).all()
    # nearest: no grid point is closer than the one chosen
    assert ((q - a).abs() <= (a[:, None].abs() - grid).abs().min(1).values + 1e-6).all()
    torch.manual_seed(0)
    draws = torch.stack([sr_e2m1(a) for _ in range(4000)])
    assert torch.isin(draws.abs(), grid).all()
    spacing = torch.where(a.abs() < 2, 0.5, torch.where(a.abs() < 4, 1.0, 2.0))
    # the mean of 4000 Bernoulli draws scaled by the spacing: 5 standard errors
    assert ((draws.mean(0) - a).abs() <= 5 * spacing * 0.5 / 4000**0.5 + 1e-6).all()
    assert (rtn_e2m1(a) - a).abs().max() > 0.2  # RTN is not the identity, SR is only right on average


def test_hadamard_is_orthogonal_and_rotation_preserves_products():
    h = hadamard_matrix(32)
    torch.testing.assert_close(h @ h.T, torch.eye(32))
    torch.testing.assert_close(h, h.T)
    x, w = torch.randn(5, 64), torch.randn(7, 64)
    torch.testing.assert_close(block_rotate(x, h) @ block_rotate(w, h).T, x @ w.T, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="n: a Sylvester"):
        hadamard_matrix(24)
    with pytest.raises(ValueError, match="block_size: MXFP4 blocks hold exactly 32"):
        mx_quantize(x, block_size=16)
    with pytest.raises(ValueError, match="rule: expected one of"):
        mx_quantize(x, "bogus")


def test_quest_rms_scale_survives_an_outlier_at_block_position_zero():
    """The pitfall of the notes: with a fixed Hadamard the mean-subtracted std ignores a block-wide
    offset, so an outlier at position 0 clips the whole block; the RMS scale does not."""
    torch.manual_seed(0)
    x = torch.randn(512, 64)
    x[:, 0] *= 20
    xh = block_rotate(x, hadamard_matrix(32))

    def rel_mse(rule):
        q, _ = mx_quantize(xh, rule)
        return float((q - xh).pow(2).mean() / xh.pow(2).mean())

    assert rel_mse("quest") < 0.03 and rel_mse("quest_std") > 5 * rel_mse("quest")


def _reference_forward(x, w, hadamard=True, rule="quest"):
    """Quartet's forward and its straight-through backward written with autograd: rotate, quantise with
    a trust-masked straight-through estimator, multiply."""
    k = x.shape[-1]
    pad = (-k) % 32
    xp, wp = nn.functional.pad(x, (0, pad)), nn.functional.pad(w, (0, pad))
    if hadamard:
        h = hadamard_matrix(32)
        xp, wp = block_rotate(xp, h), block_rotate(wp, h)

    def ste(t):
        q, trust = mx_quantize(t.detach(), rule)
        return t * trust + (q - t * trust).detach()

    return ste(xp) @ ste(wp).T


@pytest.mark.parametrize("hadamard", [True, False])
def test_forward_and_straight_through_backward_match_the_autograd_reference(hadamard):
    torch.manual_seed(0)
    x = torch.randn(20, 72, requires_grad=True)  # 72: not a multiple of 32, padded inside
    layer = QuartetLinear(72, 24, bias=True, backward="none", hadamard=hadamard)
    y = layer(x)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = layer.weight.detach().clone().requires_grad_(True)
    y_ref = _reference_forward(x_ref, w_ref, hadamard) + layer.bias.detach()
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.weight.grad, w_ref.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))
    # the forward is a fair FP4 approximation of the float product
    exact = x.detach() @ layer.weight.detach().T + layer.bias.detach()
    assert float((y.detach() - exact).norm() / exact.norm()) < 0.35


def test_sr_backward_is_unbiased_and_rtn_backward_is_not():
    """Mean over draws of the FP4 backward GEMM -> the straight-through gradient of the same forward."""
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    x[:, 5] *= 8  # an outlier channel makes the biased rounding visible
    layer = QuartetLinear(64, 32, bias=False, backward="none")
    g = torch.randn(64, 32)

    def grads(layer):
        xi = x.clone().requires_grad_(True)
        layer.weight.grad = None
        layer(xi).backward(g)
        return xi.grad, layer.weight.grad.clone()

    gx_exact, gw_exact = grads(layer)
    draws = 200
    for scheme in ("sr", "rtn"):
        layer.backward_q = scheme
        gxs, gws = zip(*(grads(layer) for _ in range(draws)))
        gx_mean, gw_mean = torch.stack(gxs).mean(0), torch.stack(gws).mean(0)
        bias_x = float((gx_mean - gx_exact).norm() / gx_exact.norm())
        bias_w = float((gw_mean - gw_exact).norm() / gw_exact.norm())
        single = float((gxs[0] - gx_exact).norm() / gx_exact.norm())
        if scheme == "sr":
            # noise of one draw ~ single; the mean of 200 independent draws shrinks it ~14-fold
            assert bias_x < 3 * single / draws**0.5 and bias_w < 0.05, (bias_x, bias_w, single)
            sr_bias = bias_x
        else:
            assert bias_x > 3 * sr_bias, (bias_x, sr_bias)
            # deterministic: every draw is the same
            assert torch.equal(gxs[0], gxs[-1])


def test_sr_gemm_uses_fresh_random_signs_and_is_unbiased_for_each_operand_pair():
    torch.manual_seed(1)
    a, b = torch.randn(8, 96), torch.randn(6, 96)
    exact = a @ b.T
    first = quantized_gemm(a, b, "sr", hadamard=True, rerotate=True)
    second = quantized_gemm(a, b, "sr", hadamard=True, rerotate=True)
    assert not torch.equal(first, second)
    torch.manual_seed(7)
    s1 = quantized_gemm(a, b, "sr", hadamard=True, rerotate=True)
    torch.manual_seed(7)
    assert torch.equal(s1, quantized_gemm(a, b, "sr", hadamard=True, rerotate=True))
    mean = torch.stack([quantized_gemm(a, b, "sr", True, True) for _ in range(600)]).mean(0)
    one = (first - exact).norm()
    assert (mean - exact).norm() < 3 * one / 600**0.5
    torch.testing.assert_close(quantized_gemm(a, b, "none", True, True), exact)


def test_shapes_dtypes_state_dict_and_safetensors_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    lin = nn.Linear(40, 24)
    layer = QuartetLinear.from_linear(lin)
    assert set(layer.state_dict()) == set(lin.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 3, 40)
    assert layer(x).shape == (2, 3, 24)
    assert layer(x.double()).dtype == torch.float64
    save_file(layer.state_dict(), str(tmp_path / "q.safetensors"))
    other = QuartetLinear(40, 24)
    other.load_state_dict(load_file(str(tmp_path / "q.safetensors")))
    assert torch.equal(other(x), layer(x))
    other.load_state_dict(lin.state_dict())  # a plain nn.Linear checkpoint loads too
    with pytest.raises(ValueError, match="x: expected last dim 40"):
        layer(torch.randn(3, 41))
    with pytest.raises(ValueError, match="forward: expected one of"):
        QuartetLinear(4, 4, forward="nf4")
    with pytest.raises(ValueError, match="backward: expected one of"):
        QuartetConfig(backward="fp8")
    with pytest.raises(ValueError, match="block_size: MXFP4 blocks hold exactly 32 elements, got 64"):
        QuartetConfig(block_size=64)
    with pytest.raises(TypeError, match="linear: expected an nn.Linear"):
        QuartetLinear.from_linear(nn.Conv1d(3, 3, 1))


def test_drop_in_mixer_lm_trains_and_filter_is_respected():
    torch.manual_seed(0)
    model = MixerLM(ModelConfig(d_model=32, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2}))
    ids = torch.randint(0, 256, (2, 12))
    ref = model(ids).logits
    convert_(model, QuartetConfig(), filter_fn=lambda m, fqn: fqn.startswith("blocks.1."))
    swapped = replaced_modules(model, QuartetLinear)
    assert sorted(swapped) == ["blocks.1.mixer.o_proj", "blocks.1.mixer.qkv_proj", "blocks.1.mlp.fc_in",
                               "blocks.1.mlp.fc_out"]  # fmt: skip
    assert isinstance(model.blocks[0].mlp.fc_in, nn.Linear)
    loss = model.loss(ids[:, :-1], ids[:, 1:])
    loss.backward()
    out = model(ids).logits
    assert out.shape == ref.shape and not torch.equal(out, ref)
    assert all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in swapped.values())


def test_drop_in_hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 10))
    ref = model(ids).logits
    convert_(model, QuartetConfig(), filter_fn=lambda m, fqn: "lm_head" not in fqn)
    swapped = replaced_modules(model, QuartetLinear)
    assert len(swapped) == 14 and isinstance(model.lm_head, nn.Linear)
    out = model(ids, labels=ids)
    assert out.logits.shape == ref.shape and torch.isfinite(out.logits).all()
    out.loss.backward()
    assert model.model.layers[0].self_attn.q_proj.weight.grad is not None
