"""R-Sparse: exact limits, the budget split, calibration, gradients, save/load and model surgery."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from linearlab.convert.linear_swap import replaced_modules
from linearlab.convert.sparsify import collect_linear_inputs, sparsify_
from linearlab.layers.linear.r_sparse import (
    LayerFactors,
    RSparseConfig,
    RSparseLinear,
    budget_split,
    model_sparsity,
    search_budgets,
)
from linearlab.models import MixerLM, ModelConfig


def _linear(i=24, o=16, bias=True) -> nn.Linear:
    torch.manual_seed(1)
    return nn.Linear(i, o, bias=bias)


def test_budget_split_matches_the_repo_formula():
    # 1024 x 1024 at 50% with alpha 0.75: 384 exact channels per token and rank 64 (notes §4 table)
    rank, t = budget_split(1024, 1024, 0.5, 0.75)
    assert rank == 64 and t == pytest.approx(1 - 384 / 1024)
    assert budget_split(1024, 1024, 0.5, 1.0) == (0, 0.5)
    assert budget_split(1024, 1024, 0.5, 0.0) == (256, 1.0)
    with pytest.raises(ValueError, match="sparsity: expected a number in \\[0, 1\\], got 1.5"):
        budget_split(8, 8, 1.5, 0.5)
    with pytest.raises(ValueError, match="sparse_ratio"):
        budget_split(8, 8, 0.5, -0.1)


def test_sparsity_zero_is_the_dense_layer_exactly():
    lin = _linear()
    layer = RSparseLinear.from_linear(lin, sparsity=0.0, sparse_ratio=1.0)
    x = torch.randn(3, 5, 24)
    assert layer.rank == 0 and torch.equal(layer(x), lin(x))


def test_full_rank_low_rank_path_is_the_dense_layer():
    lin = _linear()
    f = LayerFactors.from_linear(lin)
    layer = RSparseLinear(24, 16, rank=16, bias=True)
    layer.load_state_dict(
        {
            "weight": lin.weight,
            "bias": lin.bias,
            "lr_out": f.u,
            "lr_in": f.vh,
            "scale": f.scale,
            "threshold": torch.tensor(float("inf")),
        }  # fmt: skip
    )  # every channel through the (full-rank) SVD path
    x = torch.randn(7, 24)
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-5)


def test_low_rank_only_is_exact_on_a_weight_of_low_rank():
    lin = _linear(24, 16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(16, 3) @ torch.randn(3, 24))
    layer = RSparseLinear.from_linear(lin, sparsity=0.0, sparse_ratio=0.0)  # rank 24*16/40 = 9 >= 3
    assert layer.rank == 9 and layer.threshold == float("inf")
    x = torch.randn(4, 24)
    torch.testing.assert_close(layer(x), lin(x), rtol=1e-5, atol=1e-5)


def test_mixed_split_follows_the_formula_and_the_calibrated_fraction():
    lin = _linear()
    calib = torch.randn(64, 24) * torch.linspace(0.2, 3.0, 24)
    layer = RSparseLinear.from_linear(lin, sparsity=0.5, sparse_ratio=0.75, calibration=calib)
    rank, t = budget_split(24, 16, 0.5, 0.75)
    assert layer.rank == rank > 0 and layer.lowrank_fraction == pytest.approx(t)
    torch.testing.assert_close(layer.scale, lin.weight.detach().norm(dim=0))
    score = (calib * layer.scale).abs()
    low = score <= float(layer.threshold)
    assert low.double().mean().item() == pytest.approx(t, abs=1.0 / score.numel())
    # the output, rebuilt in float64 from an independent SVD
    U, S, Vh = torch.linalg.svd(lin.weight.detach().double())
    approx = (U[:, :rank] * S[:rank]) @ Vh[:rank]
    x = calib.double()
    ref = (x * ~low) @ lin.weight.detach().double().T + lin.bias.detach().double() + (x * low) @ approx.T
    torch.testing.assert_close(layer(calib).double(), ref, rtol=1e-4, atol=1e-5)
    # TEAL-style scoring ignores the weight: the mask is |x| alone
    teal = RSparseLinear.from_linear(lin, 0.5, 1.0, calibration=calib, channel_score="magnitude")
    assert torch.equal(teal.scale, torch.ones(24))
    kept = calib.abs() > teal.threshold
    assert kept.float().mean().item() == pytest.approx(0.5, abs=1 / 64 / 24)
    torch.testing.assert_close(teal(calib), lin(calib * kept), rtol=1e-6, atol=1e-6)


def test_gradients_are_those_of_the_two_paths():
    lin = _linear()
    calib = torch.randn(32, 24)
    layer = RSparseLinear.from_linear(lin, 0.5, 0.5, calibration=calib)
    x = calib[:5].clone().requires_grad_(True)
    g = torch.randn(5, 16)
    layer(x).backward(g)
    low = ((x.detach() * layer.scale).abs() <= layer.threshold).float()
    lowrank = layer.lr_out @ layer.lr_in
    expect_x = (g @ lin.weight.detach()) * (1 - low) + (g @ lowrank) * low
    torch.testing.assert_close(x.grad, expect_x, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.weight.grad, g.T @ (x.detach() * (1 - low)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bias.grad, g.sum(0))


def test_state_dict_round_trips_through_safetensors(tmp_path):
    lin = _linear()
    calib = torch.randn(32, 24)
    layer = RSparseLinear.from_linear(lin, 0.4, 0.75, calibration=calib)
    save_file(layer.state_dict(), tmp_path / "r.safetensors")
    fresh = RSparseLinear(24, 16, layer.rank, bias=True)
    fresh.load_state_dict(load_file(tmp_path / "r.safetensors"))
    x = torch.randn(6, 24)
    assert torch.equal(fresh(x), layer(x))


def test_clear_errors():
    lin = _linear()
    layer = RSparseLinear.from_linear(lin, 0.5, 0.75)  # no calibration: threshold unknown
    with pytest.raises(RuntimeError, match="not calibrated"):
        layer(torch.randn(2, 24))
    layer.calibrate(torch.randn(16, 24), layer.lowrank_fraction)
    assert layer(torch.randn(2, 24)).shape == (2, 16)
    with pytest.raises(ValueError, match="x: expected last dim 24"):
        layer(torch.randn(2, 23))
    with pytest.raises(ValueError, match="rank: expected an int in \\[0, 16\\], got 17"):
        RSparseLinear(24, 16, 17)
    with pytest.raises(ValueError, match="channel_score"):
        RSparseConfig(channel_score="l1")
    with pytest.raises(TypeError, match="linear: expected an nn.Linear"):
        RSparseLinear.from_linear(nn.Conv1d(2, 2, 1))
    with pytest.raises(ValueError, match="calibration: expected inputs"):
        RSparseLinear.from_linear(lin, 0.5, 0.75, calibration=torch.randn(4, 5))


def _mixer_lm() -> MixerLM:
    torch.manual_seed(0)
    return MixerLM(ModelConfig(d_model=32, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2})).eval()


def test_sparsify_mixer_lm_respects_filter_and_is_exact_at_zero_sparsity():
    model = _mixer_lm()
    ids = torch.randint(0, 256, (2, 12))
    ref = model(ids).logits
    sparsify_(
        model, RSparseConfig(sparsity=0.0, sparse_ratio=1.0), ids[:1], filter_fn=lambda m, f: "mlp" in f
    )
    swapped = replaced_modules(model, RSparseLinear)
    assert sorted(swapped) == [
        "blocks.0.mlp.fc_in",
        "blocks.0.mlp.fc_out",
        "blocks.1.mlp.fc_in",
        "blocks.1.mlp.fc_out",
    ]
    assert isinstance(model.blocks[0].mixer.qkv_proj, nn.Linear)
    assert torch.equal(model(ids).logits, ref)


def test_sparsify_at_half_sparsity_keeps_every_layer_within_budget():
    model = _mixer_lm()
    ids = torch.randint(0, 256, (2, 32))
    ref = model(ids).logits
    sparsify_(model, RSparseConfig(sparsity=0.5, sparse_ratio=0.75), ids[:1])
    out = model(ids).logits
    layers = replaced_modules(model, RSparseLinear)
    assert len(layers) == 8 and torch.isfinite(out).all() and not torch.equal(out, ref)
    for layer in layers.values():
        dense = layer.in_features * layer.out_features
        assert (
            0.5 * dense - (layer.in_features + layer.out_features)
            <= layer.macs_per_token()
            <= 0.5 * dense + 1e-6
        )


def test_sparsify_hf_llama_forward_runs_and_filter_is_respected():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 64, (2, 10))
    ref = model(ids).logits
    sparsify_(model, RSparseConfig(0.5, 0.75), ids[:1], filter_fn=lambda m, f: "lm_head" not in f)
    swapped = replaced_modules(model, RSparseLinear)
    assert len(swapped) == 14 and "lm_head" not in swapped and isinstance(model.lm_head, nn.Linear)
    out = model(ids).logits
    assert out.shape == ref.shape and torch.isfinite(out).all() and not torch.equal(out, ref)
    with pytest.raises(ValueError, match="filter_fn: matched none"):
        sparsify_(model, RSparseConfig(), ids[:1], filter_fn=lambda m, f: False)


def test_search_meets_the_budget_and_beats_or_ties_the_uniform_split():
    model = _mixer_lm()
    ids = torch.randint(0, 256, (1, 24))
    inputs = collect_linear_inputs(model, ids)
    factors = {n: LayerFactors.from_linear(model.get_submodule(n), x) for n, x in inputs.items()}

    def evaluate(layers):
        backup = {n: model.get_submodule(n) for n in layers}
        for n, layer in layers.items():
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child, layer)
        loss = model.loss(ids[:, :-1], ids[:, 1:]).item()
        for n, old in backup.items():
            parent, _, child = n.rpartition(".")
            setattr(model.get_submodule(parent), child, old)
        return loss

    result = search_budgets(factors, evaluate, 0.5, 0.75, generations=3, population=6, seed=0)
    shapes = {n: f.shape for n, f in factors.items()}
    sparsities = [s for s, _ in result.per_layer.values()]
    assert len(set(round(s, 6) for s in sparsities)) > 1  # non-uniform
    weighted = sum(shapes[n][0] * shapes[n][1] * result.per_layer[n][0] for n in shapes) / sum(
        shapes[n][0] * shapes[n][1] for n in shapes
    )
    assert weighted == pytest.approx(0.5, abs=1e-6)
    assert model_sparsity(result.per_layer, shapes) >= 0.5 - 0.02  # rank rounding only saves more
    assert result.best_loss <= result.uniform_loss
    assert result.history == sorted(result.history, reverse=True)
