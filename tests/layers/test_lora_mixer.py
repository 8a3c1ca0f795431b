"""LoRA-Mixer (``layers/linear/lora_mixer.py``, ``convert/lora_mixer.py``): routed peft LoRA experts."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn

from linearlab.convert.lora_mixer import (
    LoRAMixerConfig,
    apply_lora_mixer_,
    load_experts_,
    mixer_layers,
    routing_aux_loss,
    set_top_k_,
)
from linearlab.layers.linear.lora_mixer import (
    LoRAMixerLinear,
    expert_preservation_loss,
    expert_state,
    specialization_balance_loss,
)
from linearlab.models import MixerLM, ModelConfig
from linearlab.train.loop import TrainConfig, train


def _layer(E=4, top_k=2, seed=0, **kw) -> LoRAMixerLinear:
    torch.manual_seed(seed)
    layer = LoRAMixerLinear(nn.Linear(6, 5), E, LoraConfig(r=2, lora_alpha=4), top_k=top_k, **kw).double()
    with torch.no_grad():  # peft starts B at 0; random B makes every expert matter
        for name in layer.expert_names:
            layer.lora.lora_B[name].weight.normal_()
    return layer


def _manual(layer: LoRAMixerLinear, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    y = layer.base_layer(x)
    for e, name in enumerate(layer.expert_names):
        A, B = layer.lora.lora_A[name].weight, layer.lora.lora_B[name].weight
        y = y + weights[..., e : e + 1] * (layer.lora.scaling[name] * x @ A.T @ B.T)
    return y


def test_fresh_experts_leave_the_projection_unchanged():
    base = nn.Linear(6, 5)
    layer = LoRAMixerLinear(copy.deepcopy(base), 3, LoraConfig(r=2, lora_alpha=4))
    x = torch.randn(2, 4, 6)
    assert torch.equal(layer(x), base(x))
    assert layer.weight is layer.base_layer.weight and (layer.in_features, layer.out_features) == (6, 5)


def test_soft_routing_is_the_probability_weighted_sum_of_experts():
    layer = _layer()
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    probs = layer.router(x).softmax(-1)
    layer.train()
    torch.testing.assert_close(layer(x), _manual(layer, x, probs))
    assert layer.lora.scaling["expert_0"] == 2.0  # peft's lora_alpha / r


def test_topk_routing_renormalises_the_k_largest_and_equals_dense_when_k_is_E():
    layer = _layer(E=4, top_k=2)
    x = torch.randn(3, 4, 6, dtype=torch.float64)
    layer.eval()
    r = layer.route(x)
    assert ((r.weights > 0).sum(-1) == 2).all()
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(3, 4, dtype=torch.float64))
    top = r.probs.topk(2, -1)
    expected = torch.zeros_like(r.probs).scatter(
        -1, top.indices, top.values / top.values.sum(-1, keepdim=True)
    )
    torch.testing.assert_close(layer(x), _manual(layer, x, expected))
    layer.top_k = 4
    dense = layer.route(x, mode="soft").weights
    torch.testing.assert_close(layer(x), _manual(layer, x, dense))


def test_straight_through_is_hard_forward_and_soft_backward():
    layer = _layer(E=4, top_k=1)
    x = torch.randn(5, 6, dtype=torch.float64)
    c = torch.randn(5, 4, dtype=torch.float64)
    st = layer.route(x, mode="straight_through")
    torch.testing.assert_close(st.weights, layer.route(x, mode="topk").weights, rtol=0, atol=1e-15)
    (g_st,) = torch.autograd.grad((st.weights * c).sum(), layer.router.weight)
    (g_soft,) = torch.autograd.grad((layer.route(x, mode="soft").weights * c).sum(), layer.router.weight)
    torch.testing.assert_close(g_st, g_soft)
    (g_hard,) = torch.autograd.grad((layer.route(x, mode="topk").weights * c).sum(), layer.router.weight)
    assert not torch.allclose(g_hard, g_soft)


def test_experts_load_from_peft_adapters_and_match_peft():
    torch.manual_seed(0)
    base = MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32))
    targets = ["qkv_proj", "o_proj"]
    adapters, peft_models = [], []
    for seed in range(2):
        torch.manual_seed(10 + seed)
        pm = get_peft_model(
            copy.deepcopy(base),
            LoraConfig(r=2, lora_alpha=4, target_modules=targets, init_lora_weights=False),
        )
        adapters.append(get_peft_model_state_dict(pm))
        peft_models.append(pm)
    ids = torch.randint(0, 256, (2, 7))
    # one expert, top-1: the mixer model is the peft model
    one = apply_lora_mixer_(
        copy.deepcopy(base), LoRAMixerConfig(n_experts=1, r=2, lora_alpha=4, top_k=1, target_modules=targets)
    )
    load_experts_(one, adapters[:1], freeze=True)
    torch.testing.assert_close(one(ids).logits, peft_models[0](ids).logits, rtol=1e-5, atol=1e-5)
    assert all(not p.requires_grad for layer in mixer_layers(one).values() for p in layer.expert_parameters())
    # two experts with a zero router: soft weights 1/2 each = half of each adapter's update
    two = apply_lora_mixer_(
        copy.deepcopy(base), LoRAMixerConfig(n_experts=2, r=2, lora_alpha=4, top_k=2, target_modules=targets)
    )
    load_experts_(two, adapters)
    for layer in mixer_layers(two).values():
        nn.init.zeros_(layer.router.weight)
        for e, pm in enumerate(peft_models):
            fqn = [n for n, m in two.named_modules() if m is layer][0]
            peft_layer = pm.base_model.model.get_submodule(fqn)
            assert torch.equal(layer.lora.lora_B[f"expert_{e}"].weight, peft_layer.lora_B["default"].weight)
    with pytest.raises(ValueError, match=r"adapters: 3 given but the layers have only 2 experts"):
        load_experts_(two, adapters + adapters[:1])
    bad = {k: v[:1] if "lora_A" in k else v for k, v in adapters[0].items()}
    with pytest.raises(ValueError, match=r"adapters\[0\], layer 'blocks.0.mixer.qkv_proj'.*lora_A/lora_B"):
        load_experts_(two, [bad])


def test_router_only_training_changes_only_the_routers():
    torch.manual_seed(0)
    model = MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32))
    apply_lora_mixer_(
        model,
        LoRAMixerConfig(
            n_experts=3, top_k=2, target_modules=["o_proj"], train_experts=False, init_lora_weights=False
        ),
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"blocks.{i}.mixer.o_proj.router.weight" for i in range(2)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 256, (4, 9))

    def loss_fn(m, batch):
        return m.loss(batch[:, :-1], batch[:, 1:]) + routing_aux_loss(m, kind="rsl"), {}

    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-2, warmup_steps=0, progress=False, checkpoint_every=0)
    train(model, lambda step: ids, loss_fn, cfg)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]) != k.endswith("router.weight"), k


def test_specialization_balance_loss_formula_and_entropy_sign():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=torch.float64, requires_grad=True)
    idx = probs.topk(1, -1).indices
    pbar = probs.detach().mean(0)
    fbar = torch.tensor([0.5, 0.0, 0.5], dtype=torch.float64)
    H = float(-(probs.detach() * probs.detach().log()).sum(-1).mean())
    for sign in (1, -1):
        got = specialization_balance_loss(probs, idx, alpha=2.0, lam=0.3, entropy_sign=sign)
        assert float(got.detach()) == pytest.approx(
            2.0 * float((pbar * fbar).sum()) + sign * 0.3 * H, rel=1e-12
        )
    # one gradient step on the logits: +1 lowers the entropy, -1 (the printed formula) raises it
    for sign, lower in ((1, True), (-1, False)):
        logits = torch.tensor([[1.0, 0.2, -0.5]], dtype=torch.float64, requires_grad=True)
        p = logits.softmax(-1)
        specialization_balance_loss(
            p, p.topk(1, -1).indices, alpha=0.0, lam=1.0, entropy_sign=sign
        ).backward()
        q = (logits - 0.1 * logits.grad).softmax(-1)
        h0, h1 = float(-(p * p.log()).sum().detach()), float(-(q * q.log()).sum().detach())
        assert (h1 < h0) == lower
    uniform = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    assert float(specialization_balance_loss(uniform, uniform.topk(1).indices, 0.0, 1.0)) == pytest.approx(
        math.log(3)
    )
    with pytest.raises(ValueError, match="entropy_sign: expected"):
        specialization_balance_loss(uniform, uniform.topk(1).indices, entropy_sign=0)


def test_expert_preservation_penalises_the_squared_distance():
    layer = _layer()
    ref = expert_state(layer)
    assert float(expert_preservation_loss(layer, ref, beta=3.0).detach()) == 0.0
    with torch.no_grad():
        layer.lora.lora_A["expert_1"].weight.add_(0.5)
    n = layer.lora.lora_A["expert_1"].weight.numel()
    assert float(expert_preservation_loss(layer, ref, beta=3.0).detach()) == pytest.approx(3.0 * 0.25 * n)


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = LoRAMixerConfig(n_experts=3, top_k=2, target_modules=["qkv_proj"], init_lora_weights=False)
    model = apply_lora_mixer_(
        MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32)), cfg
    )
    save_file(model.state_dict(), tmp_path / "m.safetensors")
    fresh = apply_lora_mixer_(
        MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32)), cfg
    )
    fresh.load_state_dict(load_file(tmp_path / "m.safetensors"))
    ids = torch.randint(0, 256, (2, 6))
    model.eval(), fresh.eval()
    assert torch.equal(model(ids).logits, fresh(ids).logits)
    set_top_k_(fresh, 1)
    assert not torch.equal(model(ids).logits, fresh(ids).logits)


def test_bad_configuration_is_a_clear_error():
    with pytest.raises(ValueError, match=r"top_k: expected an int in \[1, n_experts = 2\], got 3"):
        LoRAMixerConfig(n_experts=2, top_k=3)
    with pytest.raises(ValueError, match=r"top_k: expected an int in \[1, n_experts = 2\], got 5"):
        LoRAMixerLinear(nn.Linear(4, 4), 2, top_k=5)
    with pytest.raises(ValueError, match="train_routing: expected one of"):
        LoRAMixerConfig(train_routing="hard")
    model = MixerLM(ModelConfig(mixer="softmax", mixer_kwargs={"num_heads": 2}, d_model=32))
    with pytest.raises(ValueError, match="filter_fn: matched none"):
        apply_lora_mixer_(model, LoRAMixerConfig(top_k=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="has no LoRAMixerLinear layers"):
        routing_aux_loss(model)
    with pytest.raises(TypeError, match="config: expected a LoRAMixerConfig"):
        apply_lora_mixer_(model, object())


def test_gradients_match_finite_differences_in_soft_and_straight_through_modes():
    for mode in ("soft", "straight_through"):
        layer = _layer(E=3, top_k=2, train_routing=mode)
        layer.train()
        names = ["router.weight", "lora.lora_A.expert_1.weight", "lora.lora_B.expert_2.weight"]
        params = dict(layer.named_parameters())
        x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)

        def f(x, *ps, layer=layer, names=names):
            return torch.func.functional_call(layer, dict(zip(names, ps)), (x,), strict=False)

        if mode == "soft":
            assert torch.autograd.gradcheck(f, (x, *[params[n] for n in names]))
        else:  # the forward is piecewise (top-k), the backward is the soft one by construction
            (g,) = torch.autograd.grad(
                f(x, *[params[n] for n in names]).sum(), params["lora.lora_B.expert_2.weight"]
            )
            hard = layer.route(x, mode="topk").weights[:, 2:3]
            h = layer.lora.scaling["expert_2"] * x @ layer.lora.lora_A["expert_2"].weight.T
            torch.testing.assert_close(g, (hard * torch.ones(4, 5, dtype=torch.float64)).T @ h)
