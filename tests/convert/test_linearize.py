"""linearize_ on tiny Hugging Face Llama / Mistral / Qwen2 models and on MixerLM (no downloads)."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

import linearlab  # noqa: F401 - registers the Auto classes
from linearlab.convert import LinearizeConfig, linearize_, linearized_modules
from linearlab.convert.hf_attention import HFLinearizedAttention, LinearStateLayer
from linearlab.registry import UnknownNameError

SIZES = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    vocab_size=61,
    max_position_embeddings=256,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
)


def tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**SIZES)).eval()
    if family == "mistral":
        return MistralForCausalLM(MistralConfig(**SIZES, sliding_window=8)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**SIZES)).eval()  # q/k/v biases


FAMILIES = ["llama", "mistral", "qwen2"]
METHODS = ["t2r", "hedgehog", "lolcats", "still", "liger", "liger_gdn"]


def cfg(method: str) -> LinearizeConfig:
    # a window smaller than the test sequences, so both halves of the lolcats operator run
    return LinearizeConfig(method=method, window_size=5, chunk_size=8)


def ids(T: int = 23, B: int = 2) -> torch.Tensor:
    return torch.randint(0, SIZES["vocab_size"], (B, T), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_stepping_with_the_cache_equals_one_forward(family: str, method: str) -> None:
    model = linearize_(tiny(family), cfg(method))
    x = ids()
    with torch.no_grad():
        full = model(input_ids=x, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        pieces = [model(input_ids=x[:, :9], cache=cache, use_cache=True).logits]
        for t in range(9, x.shape[1]):
            pieces.append(model(input_ids=x[:, t : t + 1], cache=cache, use_cache=True).logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=2e-5, rtol=1e-4)
    assert all(isinstance(layer, LinearStateLayer) for layer in cache.layers)


@pytest.mark.parametrize("method", METHODS)
def test_decoding_memory_is_constant(method: str) -> None:
    model = linearize_(tiny("llama"), cfg(method))
    cache = DynamicCache(config=model.config)
    sizes = []
    with torch.no_grad():
        model(input_ids=ids(T=12, B=1), cache=cache, use_cache=True)
        token = torch.tensor([[3]])
        for step in range(40):
            model(input_ids=token, cache=cache, use_cache=True)
            if step in (9, 39):
                sizes.append(sum(layer.state_bytes() for layer in cache.layers))
    assert sizes[0] == sizes[1] > 0
    # the teacher's KV cache does grow: the comparison the constant is about
    teacher, kv = tiny("llama"), DynamicCache(config=tiny("llama").config)
    with torch.no_grad():
        teacher(input_ids=ids(T=12, B=1), cache=kv, use_cache=True)
        before = kv.layers[0].keys.numel()
        teacher(input_ids=torch.tensor([[3]]), cache=kv, use_cache=True)
    assert kv.layers[0].keys.numel() > before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_save_and_load_through_auto_classes(family: str, method: str, tmp_path) -> None:
    model = linearize_(tiny(family), cfg(method))
    with torch.no_grad():  # make the new parameters differ from their initial values
        for _, op in linearized_modules(model):
            for p in op.parameters():
                p.add_(0.01 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(again) is type(model)
    assert again.config.linearize == model.config.linearize
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=x).logits, model(input_ids=x).logits, atol=0, rtol=0)


def test_generate_works_and_keeps_chosen_layers_softmax() -> None:
    model = tiny("llama")
    original = model.model.layers[0].self_attn
    linearize_(model, cfg("lolcats"), filter_fn=lambda m, fqn: fqn != "model.layers.0.self_attn")
    assert model.model.layers[0].self_attn is original
    assert isinstance(model.model.layers[1].self_attn, HFLinearizedAttention)
    assert model.config.linearize["layers"] == [1]
    out = model.generate(ids(T=6, B=1), max_new_tokens=12, do_sample=False)
    # greedy generation = argmax of one full forward over the generated sequence
    with torch.no_grad():
        logits = model(input_ids=out[:, :-1], use_cache=False).logits
    assert torch.equal(logits[0, 5:].argmax(-1), out[0, 6:])


def test_pretrained_weights_are_kept_and_only_new_parameters_added() -> None:
    model = tiny("qwen2")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linearize_(model, cfg("lolcats"))
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    new = sorted(set(after) - set(before))
    assert new and all(".operator." in k for k in new)
    heads, dim = SIZES["num_attention_heads"], SIZES["hidden_size"] // SIZES["num_attention_heads"]
    per_layer = 2 * (heads * dim * dim + heads * dim) + heads  # q and k maps, window factors
    assert sum(after[k].numel() for k in new) == SIZES["num_hidden_layers"] * per_layer


def test_unsupported_model_is_named_with_the_supported_list() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=20))
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*GPT2Attention.*supported: .*LlamaForCausalLM"):
        linearize_(gpt2, LinearizeConfig())


def test_filter_that_selects_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="filter_fn: selected none of the 2 attention modules"):
        linearize_(tiny("llama"), LinearizeConfig(), filter_fn=lambda m, fqn: False)


def test_bad_config_values_are_named() -> None:
    with pytest.raises(UnknownNameError, match="method: unknown linearize method 'performer'; choose from"):
        LinearizeConfig(method="performer")
    with pytest.raises(ValueError, match="window_size: expected an int >= 1, got 0"):
        LinearizeConfig(window_size=0)
    with pytest.raises(ValueError, match=r"init_window_factor: must be in \(0, 1\), got 1.5"):
        LinearizeConfig(init_window_factor=1.5)
    with pytest.raises(UnknownNameError, match="feature_map: unknown feature map 'cosine'"):
        LinearizeConfig(feature_map="cosine")


def test_mixer_lm_and_its_hf_wrapper(tmp_path) -> None:
    from linearlab.models.hf import LinearLabConfig, LinearLabForCausalLM

    torch.manual_seed(0)
    model = LinearLabForCausalLM(
        LinearLabConfig(mixer="softmax", d_model=32, n_layers=2, vocab_size=40)
    ).eval()
    linearize_(model, cfg("lolcats"))
    x = ids(T=19) % 40
    with torch.no_grad():
        full = model.model(x).logits
        first = model.model(x[:, :7])
        rest = model.model(x[:, 7:], state=first.state)
        torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=2e-5, rtol=1e-4)
        model.save_pretrained(tmp_path)
        again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(again.model(x).logits, full, atol=0, rtol=0)


def test_bare_mixer_lm_linearizes_in_place():
    from linearlab.models import MixerLM, ModelConfig

    torch.manual_seed(0)
    model = MixerLM(ModelConfig(mixer="softmax", d_model=32, n_layers=2, vocab_size=40)).eval()
    linearize_(model, cfg("hedgehog"))
    assert len(linearized_modules(model)) == 2
    x = ids(T=15) % 40
    with torch.no_grad():
        full = model(x).logits
        first = model(x[:, :6])
        rest = model(x[:, 6:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full, atol=2e-5, rtol=1e-4)
