"""Named capture/patch hooks: the same identities on MixerLM, its HF wrapper and a tiny HF Llama."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from linearlab.analysis.hooks import hook_names, hooks, logits_of, model_parts, run_with_cache, run_with_hooks
from linearlab.models.config import ModelConfig
from linearlab.models.hf import LinearLabConfig, LinearLabForCausalLM
from linearlab.models.lm import MixerLM


def _mixer_lm(**kw):
    cfg = dict(mixer="softmax", d_model=32, n_layers=3, mixer_kwargs={"num_heads": 4}, vocab_size=50)
    return MixerLM(ModelConfig(**{**cfg, **kw})).eval()


def _llama():
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(cfg).eval()


def _ids(vocab=50, t=9):
    return torch.randint(0, vocab, (2, t))


def _check_stream_identities(model, n_layers, ids):
    out, cache = run_with_cache(model, ids)
    parts = model_parts(model)
    for i in range(n_layers):
        pre, post = cache[f"blocks.{i}.hook_resid_pre"], cache[f"blocks.{i}.hook_resid_post"]
        torch.testing.assert_close(
            post, pre + cache[f"blocks.{i}.hook_attn_out"] + cache[f"blocks.{i}.hook_mlp_out"]
        )
        if i + 1 < n_layers:
            assert torch.equal(post, cache[f"blocks.{i + 1}.hook_resid_pre"])
        # the per-head outputs times the output projection are the attention output
        z = cache[f"blocks.{i}.attn.hook_z"]
        o_proj = parts.mixer(i).o_proj
        torch.testing.assert_close(o_proj(z.flatten(-2)), cache[f"blocks.{i}.hook_attn_out"])
        torch.testing.assert_close(parts.mixer_norm(i)(pre), cache[f"blocks.{i}.ln1.hook_normalized"])
    torch.testing.assert_close(cache["hook_embed"], cache["blocks.0.hook_resid_pre"])
    logits = cache["ln_final.hook_normalized"] @ parts.unembed.T
    torch.testing.assert_close(logits, logits_of(out))
    return cache


def test_mixer_lm_cache_obeys_the_residual_stream_identities():
    model = _mixer_lm()
    ids = _ids()
    cache = _check_stream_identities(model, 3, ids)
    hidden = model(ids, return_hidden_states=True).hidden_states
    for i in range(3):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_post"], hidden[i + 1])
    names = hook_names(model)
    assert names[0] == "hook_embed" and names[-1] == "ln_final.hook_normalized"
    assert {"blocks.2.hook_resid_pre", "blocks.2.hook_attn_out", "blocks.2.hook_mlp_out"} <= set(names)


def test_llama_cache_obeys_the_same_identities():
    model = _llama()
    cache = _check_stream_identities(model, 2, _ids())
    # grouped-query attention: 2 key/value heads, 4 query heads
    assert cache["blocks.0.attn.hook_k"].shape[-2] == 2 and cache["blocks.0.attn.hook_q"].shape[-2] == 4


def test_llama_resid_pre_matches_hf_hidden_states():
    model = _llama()
    ids = _ids()
    out, cache = run_with_cache(model, ids, output_hidden_states=True)
    for i in range(2):
        torch.testing.assert_close(cache[f"blocks.{i}.hook_resid_pre"], out.hidden_states[i])


def test_hf_wrapper_has_the_mixer_lm_names():
    cfg = LinearLabConfig(
        mixer="softmax", d_model=32, n_layers=2, vocab_size=50, mixer_kwargs={"num_heads": 4}
    )
    wrapper = LinearLabForCausalLM(cfg).eval()
    assert hook_names(wrapper) == hook_names(wrapper.model)
    ids = _ids()
    _, a = run_with_cache(wrapper, ids, names=["blocks.1.hook_resid_post"])
    _, b = run_with_cache(wrapper.model, ids, names=["blocks.1.hook_resid_post"])
    assert torch.equal(a["blocks.1.hook_resid_post"], b["blocks.1.hook_resid_post"])


@pytest.mark.parametrize("build", [_mixer_lm, _llama])
def test_zeroing_a_blocks_outputs_skips_the_block(build):
    model = build()
    ids = _ids()
    zero = lambda a, n: torch.zeros_like(a)  # noqa: E731
    skipped = run_with_hooks(model, ids, [("blocks.1.hook_attn_out", zero), ("blocks.1.hook_mlp_out", zero)])
    # the same skip through the residual stream: block 1's output := its input
    keep = {}
    out = run_with_hooks(
        model,
        ids,
        [
            ("blocks.1.hook_resid_pre", lambda a, n: keep.update(x=a)),
            ("blocks.1.hook_resid_post", lambda a, n: keep["x"]),
        ],
    )
    torch.testing.assert_close(logits_of(skipped), logits_of(out))
    assert not torch.allclose(logits_of(skipped), logits_of(model(ids)))


@pytest.mark.parametrize("build", [_mixer_lm, _llama])
def test_patching_a_head_changes_only_what_follows(build):
    model = build()
    ids = _ids()
    _, clean = run_with_cache(model, ids)

    def kill_head(z, name):
        z = z.clone()
        z[:, :, 1] = 0
        return z

    with hooks(model, [("blocks.1.attn.hook_z", kill_head)]):
        _, cache = run_with_cache(model, ids)
    assert torch.equal(cache["blocks.0.hook_resid_post"], clean["blocks.0.hook_resid_post"])
    assert torch.equal(
        cache["blocks.1.attn.hook_z"][:, :, 1], torch.zeros_like(clean["blocks.1.attn.hook_z"][:, :, 1])
    )
    o_proj = model_parts(model).mixer(1).o_proj
    expected = o_proj(kill_head(clean["blocks.1.attn.hook_z"], "").flatten(-2))
    torch.testing.assert_close(cache["blocks.1.hook_attn_out"], expected)


@pytest.mark.parametrize("build", [_mixer_lm, _llama])
def test_detaching_q_and_k_leaves_the_forward_unchanged_and_cuts_their_gradient(build):
    model = build()
    ids = _ids()
    freeze = [(f"blocks.{i}.attn.hook_{p}", lambda a, n: a.detach()) for i in range(2) for p in "qk"]
    frozen = run_with_hooks(model, ids, freeze)
    torch.testing.assert_close(logits_of(frozen), logits_of(model(ids)))
    logits_of(frozen)[0, -1, 3].backward()
    q_weight = model_parts(model).mixer(0)
    if hasattr(q_weight, "q_proj"):
        assert q_weight.q_proj.weight.grad is None or not q_weight.q_proj.weight.grad.any()
        assert q_weight.v_proj.weight.grad.abs().sum() > 0
    else:
        d = q_weight.d_model
        grad = q_weight.qkv_proj.weight.grad
        assert not grad[: 2 * d].any() and grad[2 * d :].abs().sum() > 0


def test_bad_names_and_bad_patches_are_clear_errors_and_hooks_are_removed():
    model = _mixer_lm()
    ids = _ids()
    with pytest.raises(
        ValueError,
        match=r"hook name 'blocks.7.hook_resid_pre' does not exist.*valid names: hook_embed, blocks.0.hook_resid_pre",
    ):
        run_with_cache(model, ids, names=["blocks.7.hook_resid_pre"])
    with pytest.raises(
        ValueError,
        match=r"hook 'blocks.0.hook_mlp_out': must return None or a tensor of shape \(2, 9, 32\), got \(2, 9\)",
    ):
        run_with_hooks(model, ids, [("blocks.0.hook_mlp_out", lambda a, n: a[..., 0])])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(logits_of(model(ids)), logits_of(run_with_hooks(model, ids, [])))
    # a mixer without softmax heads has no q/k/v/z points
    gla = _mixer_lm(mixer="gla")
    assert not any("attn.hook_" in n for n in hook_names(gla))
    with pytest.raises(ValueError, match="model: expected a MixerLM"):
        hook_names(torch.nn.Linear(2, 2))
