"""ActivationD2SGate (``layers/routers.py``): a drop-in for linear + softmax routers, and MoM with it."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from linearlab.layers.mixers.mom import MixtureOfMemories
from linearlab.layers.routers import ActivationD2SGate


def test_identity_gate_is_the_linear_router_followed_by_softmax():
    torch.manual_seed(0)
    linear = nn.Linear(8, 5)
    gate = ActivationD2SGate.from_linear(linear, activation="identity", tau=1.0)
    x = torch.randn(3, 7, 8)
    torch.testing.assert_close(gate(x), linear(x).softmax(-1), rtol=0, atol=0)


def test_probabilities_shape_normalisation_and_temperature_sharpening():
    torch.manual_seed(0)
    x = torch.randn(4, 6, 8, dtype=torch.float64)
    entropies = []
    for tau in (4.0, 1.0, 0.05):
        gate = ActivationD2SGate(8, 5, activation="tanh", tau=tau).double()
        torch.manual_seed(1)
        nn.init.normal_(gate.proj.weight)
        p = gate(x)
        assert p.shape == (4, 6, 5)
        torch.testing.assert_close(p.sum(-1), torch.ones(4, 6, dtype=torch.float64))
        entropies.append(float(-(p * p.log()).sum(-1).mean().detach()))
    assert entropies[0] > entropies[1] > entropies[2]  # small tau = sparse


def test_the_homogeneity_identity_holds_for_the_linear_gate_and_breaks_with_tanh():
    # linear gate: scaling (W, b, tau) by c leaves the gate unchanged -- the PDE that slows MLE;
    # tanh gate: it does not
    torch.manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64)
    for activation, invariant in (("identity", True), ("tanh", False)):
        gate = ActivationD2SGate(3, 4, activation=activation, tau=0.7).double()
        scaled = ActivationD2SGate(3, 4, activation=activation).double()
        with torch.no_grad():
            scaled.log_tau.copy_(gate.log_tau + math.log(2.5))
            scaled.proj.weight.copy_(gate.proj.weight * 2.5)
            scaled.proj.bias.copy_(gate.proj.bias * 2.5)
        diff = float((gate(x) - scaled(x)).abs().max().detach())
        assert (diff < 1e-12) if invariant else (diff > 1e-3), (activation, diff)


def test_gradients_match_finite_differences_with_learned_tau():
    torch.manual_seed(0)
    gate = ActivationD2SGate(4, 3, activation="sigmoid", tau=0.5, learn_tau=True).double()
    assert isinstance(gate.log_tau, nn.Parameter)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    params = (gate.proj.weight, gate.proj.bias, gate.log_tau)

    def f(x, w, b, log_tau):
        return torch.func.functional_call(gate, {"proj.weight": w, "proj.bias": b, "log_tau": log_tau}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params))


def test_state_dict_round_trips_through_safetensors(tmp_path):
    gate = ActivationD2SGate(6, 4, activation="tanh", tau=0.3, learn_tau=True)
    save_file(gate.state_dict(), tmp_path / "g.safetensors")
    fresh = ActivationD2SGate(6, 4, activation="tanh", tau=1.0, learn_tau=True)
    fresh.load_state_dict(load_file(tmp_path / "g.safetensors"))
    x = torch.randn(2, 6)
    assert torch.equal(fresh(x), gate(x)) and float(fresh.tau.detach()) == pytest.approx(0.3)
    frozen = ActivationD2SGate(6, 4, tau=0.3)
    assert "log_tau" in frozen.state_dict() and not any(n == "log_tau" for n, _ in frozen.named_parameters())


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="activation: expected one of"):
        ActivationD2SGate(4, 2, activation="softplus2")
    with pytest.raises(ValueError, match="tau: expected a finite number > 0, got 0"):
        ActivationD2SGate(4, 2, tau=0)
    with pytest.raises(ValueError, match="n_experts: expected a positive int"):
        ActivationD2SGate(4, 0)
    with pytest.raises(ValueError, match="x: expected last dim d_in=4"):
        ActivationD2SGate(4, 2)(torch.randn(2, 5))


def test_mom_takes_the_activation_gate_as_its_router():
    torch.manual_seed(0)
    mixer = MixtureOfMemories(
        32, num_heads=2, num_memories=4, topk=2, router="tanh", router_tau=0.5, mode="mask"
    )
    assert isinstance(mixer.router, ActivationD2SGate) and float(mixer.router.tau) == pytest.approx(0.5)
    x = torch.randn(2, 9, 32)
    routing = mixer.route(x)
    torch.testing.assert_close(routing.probs, mixer.router(x))
    assert (routing.mask.sum(-1) == 2).all()
    y_mask, _ = mixer(x)
    mixer.mode = "gather"
    y_gather, _ = mixer(x)
    torch.testing.assert_close(y_gather, y_mask, rtol=1e-5, atol=1e-5)
    y_gather.sum().backward()
    assert mixer.router.proj.weight.grad is not None and mixer.router.proj.weight.grad.abs().sum() > 0
    assert "router.weight" in MixtureOfMemories(32, num_heads=2).state_dict()  # the default is unchanged
    with pytest.raises(ValueError, match="router: expected 'linear' or an activation"):
        MixtureOfMemories(32, num_heads=2, router="softmax")
