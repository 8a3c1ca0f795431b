"""VQ-Logits head: identity limit, shared logits, O(K) loss = full softmax, k-means init, surgery."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from linearlab.convert.linear_swap import convert_, replaced_modules
from linearlab.layers.heads.vq_logits import VQLogitsConfig, VQLogitsHead
from linearlab.models import MixerLM, ModelConfig


def test_identity_map_with_k_equal_v_is_the_full_head():
    head = nn.Linear(16, 40)
    vq = VQLogitsHead.from_head(head, 40, mapping=torch.arange(40))
    assert vq.token_bias is not None  # the head's bias is kept per token
    h = torch.randn(3, 5, 16)
    assert torch.equal(vq(h), head(h))
    no_bias = nn.Linear(16, 40, bias=False)
    assert torch.equal(VQLogitsHead.from_head(no_bias, 40, mapping=torch.arange(40))(h), no_bias(h))


def test_tokens_of_one_code_share_their_logit():
    vq = VQLogitsHead(8, 30, 4)
    vq.set_mapping(torch.randint(0, 4, (30,)))
    h = torch.randn(6, 8)
    logits = vq(h)
    torch.testing.assert_close(logits, (h @ vq.codebook.T)[:, vq.code_of])
    for k in range(4):
        cols = logits[:, vq.code_of == k]
        assert torch.equal(cols, cols[:, :1].expand_as(cols))


@pytest.mark.parametrize("bias", [False, True])
def test_o_k_loss_and_its_gradients_equal_the_full_softmax(bias):
    torch.manual_seed(3)
    vq = VQLogitsHead(8, 50, 6, per_token_bias=bias).double()
    vq.set_mapping(torch.randint(0, 6, (50,)))
    if bias:
        with torch.no_grad():
            vq.token_bias.normal_(0, 2.0)
    h = torch.randn(4, 7, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (4, 7))
    full = F.cross_entropy(vq(h).flatten(0, 1), y.flatten(), reduction="none").view(4, 7)
    fast = vq.nll(h, y)
    torch.testing.assert_close(fast, full, rtol=1e-10, atol=1e-10)
    params = [h, vq.codebook] + ([vq.token_bias] if bias else [])
    g_full = torch.autograd.grad(full.sum(), params)
    g_fast = torch.autograd.grad(fast.sum(), params)
    for a, b in zip(g_fast, g_full):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_gradcheck_of_the_codebook():
    vq = VQLogitsHead(4, 10, 3).double()
    vq.set_mapping(torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]))
    h = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 10, (5,))
    assert torch.autograd.gradcheck(
        lambda c: F.cross_entropy(F.linear(h, c)[:, vq.code_of], y),
        (vq.codebook.detach().clone().requires_grad_(),),
    )


def test_kmeans_init_recovers_clustered_rows():
    torch.manual_seed(0)
    centers = torch.randn(5, 12) * 4
    truth = torch.arange(60) % 5
    rows = centers[truth] + 0.01 * torch.randn(60, 12)
    vq = VQLogitsHead.from_head(rows, 5, seed=0)
    # the same partition up to relabelling
    pairs = {(int(a), int(b)) for a, b in zip(truth, vq.code_of)}
    assert len(pairs) == 5 and len({a for a, _ in pairs}) == 5 and len({b for _, b in pairs}) == 5
    for t, k in pairs:
        torch.testing.assert_close(vq.codebook[k], rows[truth == t].mean(0), rtol=1e-5, atol=1e-5)
    assert vq.codebook.requires_grad and not vq.code_of.is_floating_point()


def test_state_dict_round_trips_through_safetensors(tmp_path):
    vq = VQLogitsHead.from_head(torch.randn(64, 8), 7, per_token_bias=True)
    save_file(vq.state_dict(), tmp_path / "vq.safetensors")
    fresh = VQLogitsHead(8, 64, 7, per_token_bias=True)
    fresh.load_state_dict(load_file(tmp_path / "vq.safetensors"))
    h = torch.randn(3, 8)
    assert torch.equal(fresh(h), vq(h)) and torch.equal(fresh.code_of, vq.code_of)


def test_clear_errors():
    with pytest.raises(ValueError, match="num_codes: expected at most vocab_size=10, got 11"):
        VQLogitsHead(4, 10, 11)
    vq = VQLogitsHead(4, 10, 3)
    with pytest.raises(ValueError, match="code_of: code ids must be in \\[0, 3\\)"):
        vq.set_mapping(torch.full((10,), 3))
    with pytest.raises(ValueError, match="code_of: expected a \\[10\\] tensor"):
        vq.set_mapping(torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="h: expected last dim 4"):
        vq(torch.randn(2, 5))
    with pytest.raises(TypeError, match="head: expected an nn.Linear"):
        VQLogitsHead.from_head(torch.randn(3), 2)
    with pytest.raises(ValueError, match="num_codes: 300 exceeds the 256 outputs of 'blocks.0.mlp.fc_out'"):
        VQLogitsConfig(300).replace(nn.Linear(8, 256), "blocks.0.mlp.fc_out")


def test_drop_in_for_the_head_of_an_untied_mixer_lm():
    torch.manual_seed(0)
    model = MixerLM(ModelConfig(d_model=16, n_layers=1, mixer="softmax", mixer_kwargs={"num_heads": 2},
                                tie_embeddings=False))  # fmt: skip
    ids = torch.randint(0, 256, (2, 9))
    convert_(model, VQLogitsConfig(num_codes=32), filter_fn=lambda m, fqn: fqn == "lm_head")
    assert list(replaced_modules(model, VQLogitsHead)) == ["lm_head"]
    assert isinstance(model.blocks[0].mlp.fc_in, nn.Linear)
    logits = model(ids).logits
    assert logits.shape == (2, 9, 256) and logits[0, 0].unique().numel() <= 32
    model.loss(ids[:, :-1], ids[:, 1:]).backward()
    assert model.lm_head.codebook.grad is not None


def test_drop_in_for_the_lm_head_of_hf_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    model = LlamaForCausalLM(cfg)
    ids = torch.randint(0, 96, (2, 8))
    convert_(model, VQLogitsConfig(num_codes=12), filter_fn=lambda m, fqn: fqn == "lm_head")
    assert list(replaced_modules(model, VQLogitsHead)) == ["lm_head"]
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 8, 96) and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.lm_head.codebook.grad is not None
    with pytest.raises(ValueError, match="filter_fn: matched none"):
        convert_(model, VQLogitsConfig(num_codes=12), filter_fn=lambda m, fqn: fqn == "head")
