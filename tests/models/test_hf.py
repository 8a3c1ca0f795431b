"""Hugging Face wrapper: config round-trip, save/load via safetensors, recurrent ``generate``."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from linearlab.layers import list_mixers
from linearlab.models import MixerLM, ModelConfig
from linearlab.models.hf import LinearLabCache, LinearLabConfig, LinearLabForCausalLM


def _tiny_config(**kw) -> LinearLabConfig:
    base = dict(vocab_size=40, d_model=16, n_layers=2, mixer="deltanet", mixer_kwargs={"num_heads": 2})
    base.update(kw)
    return LinearLabConfig(**base)


def test_config_mirrors_model_config_and_validates():
    cfg = _tiny_config(block_pattern="DA", tie_embeddings=False)
    mc = cfg.to_model_config()
    assert isinstance(mc, ModelConfig)
    assert mc.block_pattern == "DA" and mc.mixer_kwargs == {"num_heads": 2}
    assert mc.pattern_mixers == ModelConfig().pattern_mixers
    assert cfg.tie_word_embeddings is False
    assert cfg.hidden_size == 16 and cfg.num_hidden_layers == 2
    again = LinearLabConfig.from_model_config(mc)
    assert again.to_model_config() == mc
    with pytest.raises(ValueError, match=r"has 3 letters but n_layers=2"):
        _tiny_config(block_pattern="DDA")
    with pytest.raises(ValueError, match=r"mlp must be one of"):
        _tiny_config(mlp="moe")


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_pretrained_round_trip(tmp_path, tie):
    # R (retnet: fixed decays) and A (softmax: RoPE) hold non-persistent buffers
    cfg = _tiny_config(n_layers=4, block_pattern="GDRA", tie_embeddings=tie)
    model = LinearLabForCausalLM(cfg).eval()
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        before = model(ids).logits
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "linearlab" and saved["block_pattern"] == "GDRA"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LinearLabConfig)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LinearLabForCausalLM)
    with torch.no_grad():
        after = loaded(ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    # every tensor came back, not only the ones that influence these logits
    ref, got = dict(model.named_buffers()), dict(loaded.named_buffers())
    ref.update(model.state_dict())
    got.update(loaded.state_dict())
    assert ref.keys() == got.keys()
    assert [k for k in ref if not torch.equal(ref[k], got[k])] == []


@pytest.mark.parametrize("mixer", list_mixers())
def test_hf_round_trip_and_generate_every_mixer(tmp_path, mixer):
    model = LinearLabForCausalLM(_tiny_config(mixer=mixer, mixer_kwargs={})).eval()
    prompt = torch.randint(0, 40, (2, 6))
    ours = model.model.generate(prompt, max_new_tokens=5)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(prompt).logits, model(prompt).logits, rtol=0, atol=0)
    assert torch.equal(loaded.generate(prompt, max_new_tokens=5, do_sample=False), ours)


@pytest.mark.parametrize("pattern", ["DD", "GA"])
def test_hf_generate_matches_mixerlm_generate(pattern):
    model = LinearLabForCausalLM(
        _tiny_config(block_pattern=pattern, pattern_kwargs={"A": {"num_heads": 2}})
    ).eval()
    prompt = torch.randint(0, 40, (2, 6))
    ours = model.model.generate(prompt, max_new_tokens=7)
    theirs = model.generate(prompt, max_new_tokens=7, do_sample=False)
    assert torch.equal(theirs, ours)


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 5)])
def test_hf_sampling_matches_mixerlm_sampling_with_the_same_seed(temperature, top_k):
    # both draw one torch.multinomial sample per step from the global generator, from the same
    # float32 softmax(logits / temperature) after the same top-k cut: equal token for token
    model = LinearLabForCausalLM(
        _tiny_config(block_pattern="GA", pattern_kwargs={"A": {"num_heads": 2}}, init_std=0.5)
    ).eval()
    prompt = torch.randint(0, 40, (3, 5))
    torch.manual_seed(123)
    ours = model.model.generate(prompt, max_new_tokens=10, temperature=temperature, top_k=top_k)
    torch.manual_seed(123)
    # HF's top_k defaults to 50; 0 switches the cut off like MixerLM's top_k=None
    theirs = model.generate(
        prompt, max_new_tokens=10, do_sample=True, temperature=temperature, top_k=top_k or 0
    )
    assert torch.equal(theirs, ours)
    # really sampled: another seed, other tokens
    torch.manual_seed(124)
    assert not torch.equal(model.model.generate(prompt, 10, temperature=temperature, top_k=top_k), ours)


@pytest.mark.parametrize("pattern", ["DD", "GA"])
@pytest.mark.parametrize("num_beams", [3, 45])
def test_hf_beam_search_matches_mixerlm_beam_search(pattern, num_beams):
    # num_beams=45 > vocab_size=40: some beams start dead in both implementations
    model = LinearLabForCausalLM(
        _tiny_config(block_pattern=pattern, pattern_kwargs={"A": {"num_heads": 2}}, init_std=0.5)
    ).eval()
    prompt = torch.randint(0, 40, (3, 5))
    ours = model.model.generate(prompt, max_new_tokens=6, num_beams=num_beams)
    theirs = model.generate(prompt, max_new_tokens=6, do_sample=False, num_beams=num_beams)
    assert torch.equal(theirs, ours)


def test_hf_beam_search_with_enough_beams_is_exhaustive_search():
    # independent of MixerLM.generate: with num_beams >= V^(steps-1) no prefix is dropped, so HF's
    # beam search must return the most likely of all V^steps continuations
    vocab, steps = 5, 3
    model = LinearLabForCausalLM(_tiny_config(vocab_size=vocab, init_std=0.5)).double().eval()
    prompt = torch.randint(0, vocab, (16, 3))
    got = model.generate(prompt, max_new_tokens=steps, do_sample=False, num_beams=vocab ** (steps - 1))
    tails = torch.cartesian_prod(*[torch.arange(vocab)] * steps)  # [V^steps, steps]
    with torch.no_grad():
        for row, out in zip(prompt, got, strict=True):
            seqs = torch.cat([row.expand(len(tails), -1), tails], dim=1)
            logp = torch.log_softmax(model(seqs).logits[:, 2:-1].double(), dim=-1)
            score = logp.gather(-1, tails.unsqueeze(-1)).squeeze(-1).sum(-1)
            assert torch.equal(out, seqs[score.argmax()])
    # the rows where greedy is not optimal make this a test of the search, not of argmax
    assert not torch.equal(got, model.generate(prompt, max_new_tokens=steps, do_sample=False))


def test_hf_generate_is_recurrent(monkeypatch):
    model = LinearLabForCausalLM(_tiny_config()).eval()
    calls = []
    real_forward = MixerLM.forward

    def spy(self, input_ids, state=None, return_hidden_states=False):
        calls.append((input_ids.shape[1], state is None))
        return real_forward(self, input_ids, state, return_hidden_states)

    monkeypatch.setattr(MixerLM, "forward", spy)
    out = model.generate(torch.randint(0, 40, (1, 5)), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)
    # one prefill over the prompt, then one token per step with the carried state
    assert calls == [(5, True), (1, False), (1, False), (1, False)]


def test_forward_cache_continues_the_sequence():
    model = LinearLabForCausalLM(_tiny_config()).double().eval()
    ids = torch.randint(0, 40, (2, 10))
    with torch.no_grad():
        full = model(ids, use_cache=False)
        assert full.cache is None
        first = model(ids[:, :6], use_cache=True)
        cache = first.cache
        assert isinstance(cache, LinearLabCache) and cache.get_seq_length() == 6
        rest = model(ids[:, 6:], cache=cache, use_cache=True)
    assert rest.cache is cache and cache.get_seq_length() == 10
    torch.testing.assert_close(torch.cat([first.logits, rest.logits], 1), full.logits, rtol=1e-9, atol=1e-9)


def test_cache_batch_reordering():
    model = LinearLabForCausalLM(_tiny_config()).double().eval()
    ids = torch.randint(0, 40, (3, 5))
    nxt = torch.randint(0, 40, (3, 1))
    with torch.no_grad():
        cache = model(ids).cache
        assert cache.batch_size == 3
        cache.reorder_cache(torch.tensor([2, 0, 1]))
        reordered = model(nxt[[2, 0, 1]], cache=cache).logits
        expected = model(torch.cat([ids, nxt], 1)).logits[[2, 0, 1], -1:]
    torch.testing.assert_close(reordered, expected, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match=r"recurrent mixer states cannot drop tokens"):
        cache.crop(1)


def test_labels_loss_hidden_states_and_tuple_output():
    model = LinearLabForCausalLM(_tiny_config()).eval()
    ids = torch.randint(0, 40, (2, 7))
    out = model(ids, labels=ids, output_hidden_states=True)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, ref)
    assert len(out.hidden_states) == 3
    loss, logits, cache, hidden = model(ids, labels=ids, output_hidden_states=True, return_dict=False)
    torch.testing.assert_close(loss, out.loss)
    torch.testing.assert_close(logits, out.logits)
    assert isinstance(cache, LinearLabCache) and len(hidden) == 3


def test_forward_errors():
    model = LinearLabForCausalLM(_tiny_config()).eval()
    ids = torch.randint(0, 40, (2, 4))
    with pytest.raises(ValueError, match=r"padding \(zeros\) is not supported"):
        model(ids, attention_mask=torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]]))
    with pytest.raises(ValueError, match=r"inputs_embeds is not supported"):
        model(inputs_embeds=torch.randn(2, 4, 16))
    with pytest.raises(ValueError, match=r"cache: expected a LinearLabCache or None, got dict"):
        model(ids, cache={})
    with pytest.raises(ValueError, match=r"labels: expected shape \(2, 4\) like input_ids, got \(2, 3\)"):
        model(ids, labels=ids[:, :3])


def test_training_mode_gives_gradients_and_no_cache():
    model = LinearLabForCausalLM(_tiny_config()).train()
    ids = torch.randint(0, 40, (2, 6))
    out = model(ids, labels=ids)
    assert out.cache is None
    out.loss.backward()
    assert model.model.embed.weight.grad.abs().sum() > 0


def test_beam_search_with_recurrent_cache_equals_full_reruns():
    # use_cache=False makes transformers re-run the whole prefix each step: the reference for
    # LinearLabCache.reorder_cache, which beam search calls to follow the surviving beams
    model = LinearLabForCausalLM(_tiny_config(block_pattern="GA")).double().eval()
    prompt = torch.randint(1, 40, (2, 5))
    cached = model.generate(prompt, max_new_tokens=6, do_sample=False, num_beams=3)
    rerun = model.generate(prompt, max_new_tokens=6, do_sample=False, num_beams=3, use_cache=False)
    assert torch.equal(cached, rerun)
