"""Observable Propagation: feature vectors against autograd with frozen attention patterns."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from linearlab.analysis.hooks import model_parts, run_with_cache
from linearlab.analysis.observable_propagation import (
    cosine,
    coupling_coefficient,
    feature_vector,
    frozen_pattern_gradient,
    logit_difference,
    norm_vjp,
    observable,
    observable_feature_vectors,
    ov_circuit,
    strip_norms_,
    unembed_vector,
)
from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM

V = 40


def _model(mlp="none", norms=True, layers=3, norm="rmsnorm"):
    cfg = ModelConfig(
        mixer="softmax",
        d_model=32,
        n_layers=layers,
        mixer_kwargs={"num_heads": 4},
        vocab_size=V,
        mlp=mlp,
        norm=norm,
    )
    model = MixerLM(cfg).double().eval()
    with torch.no_grad():  # non-trivial gains, so folding them matters
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return model if norms else strip_norms_(model)


@pytest.mark.parametrize("mlp", ["none", "glu"])
def test_without_norms_the_head_vector_is_the_frozen_pattern_gradient_exactly(mlp):
    model = _model(mlp=mlp, norms=False)
    ids = torch.randint(0, V, (2, 7))
    n = logit_difference(V, [3], [5])
    vecs = observable_feature_vectors(model, n)
    assert len(vecs) == 12
    for layer in range(3):
        for head in range(4):
            y = vecs[f"blocks.{layer}.attn.head{head}"]
            grad = frozen_pattern_gradient(model, ids, n, layer, head, position=-1)
            # rows are A[t, s] * y and a softmax row sums to 1: the sum over sources IS the vector
            for b in range(2):
                torch.testing.assert_close(grad[b].sum(0), y, rtol=1e-9, atol=1e-12)
                for s in range(7):
                    assert cosine(grad[b, s], y) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("norm", ["rmsnorm", "layernorm"])
def test_with_norms_the_gradient_is_the_vector_through_each_norms_jacobian(norm):
    model = _model(mlp="glu", norms=True, norm=norm)
    ids = torch.randint(0, V, (2, 7))
    n = observable(V, {1: 1.0, 2: -0.5, 7: 2.0})
    _, cache = run_with_cache(model, ids)
    parts = model_parts(model)
    for layer, head in [(0, 1), (2, 3)]:
        grad = frozen_pattern_gradient(model, ids, n, layer, head, position=4)
        h_t = cache["blocks.2.hook_resid_post"][:, 4]
        y_final = norm_vjp(parts.final_norm, h_t, unembed_vector(model, n, norm="none"))
        folded = feature_vector(model, n, [f"blocks.{layer}.attn.head{head}"])
        for b in range(2):
            y_head = ov_circuit(model, layer, head).T @ y_final[b]
            for s in range(5):  # causal: sources after position 4 get no gradient
                x_s = cache[f"blocks.{layer}.hook_resid_pre"][b, s]
                exact = norm_vjp(parts.mixer_norm(layer), x_s, y_head)
                assert cosine(grad[b, s], exact) == pytest.approx(1.0, abs=1e-9)
                # the data-free folded vector is close in direction, not equal (norms project out x)
                assert 0.5 < cosine(grad[b, s], folded) < 1 - 1e-6
                if norm == "layernorm":  # LayerNorm's Jacobian centres; the folded vector is centred too
                    assert abs(float(grad[b, s].sum())) < 1e-9 * float(grad[b, s].norm())
            assert not grad[b, 5:].any()
        if norm == "layernorm":
            assert abs(float(folded.sum())) < 1e-9 * float(folded.norm())


def test_llama_heads_with_grouped_query_attention():
    cfg = LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)  # fmt: skip
    model = LlamaForCausalLM(cfg).double().eval()
    ids = torch.randint(0, V, (1, 6))
    n = logit_difference(V, [4, 9], [1])
    _, cache = run_with_cache(model, ids)
    parts = model_parts(model)
    # heads 2 and 3 share key/value head 1
    w_v = model.model.layers[1].self_attn.v_proj.weight.double()
    w_o = model.model.layers[1].self_attn.o_proj.weight.double()
    torch.testing.assert_close(ov_circuit(model, 1, 3), w_o[:, 24:32] @ w_v[8:16])
    grad = frozen_pattern_gradient(model, ids, n, 1, 3)
    y_final = norm_vjp(
        parts.final_norm, cache["blocks.1.hook_resid_post"][0, -1], unembed_vector(model, n, "none")
    )
    for s in range(6):
        exact = norm_vjp(
            parts.mixer_norm(1), cache["blocks.1.hook_resid_pre"][0, s], ov_circuit(model, 1, 3).T @ y_final
        )
        assert cosine(grad[0, s], exact) == pytest.approx(1.0, abs=1e-9)


def test_mlp_linearisation_is_the_first_order_change():
    model = _model(mlp="glu", norms=True, layers=2)
    n = logit_difference(V, [2], [3])
    x = torch.randn(1, 32, dtype=torch.float64)
    y = feature_vector(model, n, ["blocks.0.mlp"], mlp_points={0: x})
    parts = model_parts(model)
    y_u = unembed_vector(model, n)
    f = lambda z: parts.mlp(0)(parts.mlp_norm(0)(z)) @ y_u  # noqa: E731
    delta = torch.randn(1, 32, dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = (f(x + eps * delta) - f(x - eps * delta)) / (2 * eps)
    torch.testing.assert_close(float(y @ delta[0]), float(fd), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match=r"mlp_points\[0\]: an MLP is linearised at points"):
        feature_vector(model, n, ["blocks.0.mlp"])


def test_coupling_coefficient_is_the_regression_slope_for_isotropic_inputs():
    g = torch.Generator().manual_seed(0)
    y1, y2 = (
        torch.randn(16, generator=g, dtype=torch.float64),
        torch.randn(16, generator=g, dtype=torch.float64),
    )
    # exactly whitened inputs: X^T X = N I, so the least-squares slope through 0 is C exactly
    q, _ = torch.linalg.qr(torch.randn(500, 16, generator=g, dtype=torch.float64))
    x = q * 500**0.5
    a, b = x @ y1, x @ y2
    slope = float(a @ b / (a @ a))
    assert slope == pytest.approx(coupling_coefficient(y1, y2), rel=1e-10)
    assert coupling_coefficient(y1, 3 * y1) == pytest.approx(3.0)
    # an anisotropic input distribution breaks it (the coefficient is an isotropic estimate)
    xs = x * torch.linspace(0.1, 3, 16, dtype=torch.float64)
    a, b = xs @ y1, xs @ y2
    assert float(a @ b / (a @ a)) != pytest.approx(coupling_coefficient(y1, y2), rel=1e-2)


def test_bad_inputs_are_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"observable: token 40 is outside the vocabulary \[0, 40\)"):
        logit_difference(V, [40], [1])
    with pytest.raises(ValueError, match=r"observable: token -1 is outside"):
        observable(V, {-1: 1.0})
    with pytest.raises(ValueError, match=r"observable: expected a \[V\] = \[40\] vector"):
        observable_feature_vectors(model, torch.zeros(41))
    with pytest.raises(ValueError, match="head: expected 0 <= head < 4, got 4"):
        ov_circuit(model, 0, 4)
    with pytest.raises(ValueError, match="is not 'blocks.<l>.attn.head<h>'"):
        feature_vector(model, logit_difference(V, [1]), ["blocks.0.attention.0"])
    with pytest.raises(ValueError, match="norm: expected one of"):
        feature_vector(model, logit_difference(V, [1]), [], norm="linear")
    gla = MixerLM(ModelConfig(mixer="gla", d_model=32, n_layers=1, vocab_size=V))
    with pytest.raises(ValueError, match="not softmax attention"):
        ov_circuit(gla, 0, 0)
