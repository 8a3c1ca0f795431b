"""MixerLM + ModelConfig: shapes, causality, state carry-over, hybrids, generation, aux losses, errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linearlab.config import apply_overrides, from_dict, to_dict
from linearlab.layers import registry
from linearlab.layers.norms import RepBN
from linearlab.models import LMOutput, MixerLM, ModelConfig

TEST_MIXER = "_test_decay"


class _DecayMixer(nn.Module):
    """Test-only mixer: ``h_t = a * h_{t-1} + W_v x_t``, ``y = W_o h``; aux loss ``mean(y^2)`` in training."""

    def __init__(self, d_model: int, decay: float = 0.9, layer_idx: int = 0, num_layers: int = 1) -> None:
        super().__init__()
        self.decay = decay
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.w_v = nn.Linear(d_model, d_model, bias=False)
        self.w_o = nn.Linear(d_model, d_model, bias=False)
        self.aux_loss = None

    def forward(self, x, state=None):
        v = self.w_v(x)
        h = torch.zeros_like(v[:, 0]) if state is None else state["h"]
        outs = []
        for t in range(x.shape[1]):
            h = self.decay * h + v[:, t]
            outs.append(h)
        y = self.w_o(torch.stack(outs, dim=1))
        if self.training:
            self.aux_loss = y.pow(2).mean()
        return y, {"h": h}

    def state_size(self, seq_len: int) -> int:
        return self.w_v.out_features


@pytest.fixture
def test_mixer(monkeypatch):
    """Register the test-only mixer for one test; monkeypatch removes it again afterwards."""
    registry._ensure_loaded()
    monkeypatch.setitem(registry._MIXERS, TEST_MIXER, _DecayMixer)
    return TEST_MIXER


def _tiny(mixer: str, **kw) -> MixerLM:
    kw.setdefault("d_model", 16)
    kw.setdefault("vocab_size", 32)
    return MixerLM(ModelConfig(mixer=mixer, **kw))


# every registered mixer, with its default kwargs (d_model=16 fits all of them)
ALL_MIXERS = registry.list_mixers()


def test_forward_shapes_and_hidden_states(test_mixer):
    model = _tiny(test_mixer, n_layers=3)
    ids = torch.randint(0, 32, (2, 7))
    out = model(ids)
    assert isinstance(out, LMOutput)
    assert out.logits.shape == (2, 7, 32)
    assert out.hidden_states is None
    assert len(out.state) == 3
    out = model(ids, return_hidden_states=True)
    assert len(out.hidden_states) == 3 + 1
    assert all(h.shape == (2, 7, 16) for h in out.hidden_states)
    # the first hidden state is the embedding; the last one feeds the final norm and head
    torch.testing.assert_close(out.hidden_states[0], model.embed(ids))
    torch.testing.assert_close(model.logits_from_hidden(out.hidden_states[-1]), out.logits)


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_causality(mixer):
    model = _tiny(mixer).double().eval()
    ids = torch.randint(0, 32, (2, 12))
    changed = ids.clone()
    changed[:, 8] = (changed[:, 8] + 1) % 32
    a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :8], b[:, :8], rtol=0, atol=1e-12)
    assert (a[:, 8:] - b[:, 8:]).abs().amax() > 1e-6


def _pieces_logits(model: MixerLM, ids: torch.Tensor, prefill: int) -> torch.Tensor:
    out = model(ids[:, :prefill])
    logits, state = [out.logits], out.state
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], state=state)
        logits.append(out.logits)
        state = out.state
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_full_forward_equals_prefill_then_steps(mixer):
    model = _tiny(mixer).double().eval()
    ids = torch.randint(0, 32, (2, 15))
    torch.testing.assert_close(_pieces_logits(model, ids, prefill=9), model(ids).logits, rtol=1e-9, atol=1e-9)


def _state_numel(state) -> int:
    """Scalars held in a (nested) state, skipping 0-dim bookkeeping such as positions."""
    if isinstance(state, torch.Tensor):
        return state.numel() if state.dim() > 0 else 0
    if isinstance(state, dict):
        return sum(_state_numel(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(_state_numel(v) for v in state)
    return 0


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_state_memory_matches_state_size_while_decoding(mixer):
    model = _tiny(mixer).eval()
    ids = torch.randint(0, 32, (1, 12))
    out = model(ids[:, :8])
    sizes = [(_state_numel(out.state), model.state_size(8))]
    for t in range(8, 12):
        out = model(ids[:, t : t + 1], state=out.state)
        sizes.append((_state_numel(out.state), model.state_size(t + 1)))
    assert [held for held, _ in sizes] == [declared for _, declared in sizes]
    # constant-memory decoding for every mixer whose declared state does not grow
    if model.state_size(8) == model.state_size(12):
        assert len({held for held, _ in sizes}) == 1


def test_hybrid_prefill_then_steps():
    cfg = ModelConfig(
        vocab_size=32, d_model=16, n_layers=3, block_pattern="GDA", pattern_kwargs={"A": {"num_heads": 2}}
    )
    model = MixerLM(cfg).double().eval()
    ids = torch.randint(0, 32, (1, 11))
    torch.testing.assert_close(_pieces_logits(model, ids, prefill=6), model(ids).logits, rtol=1e-9, atol=1e-9)


def test_hybrid_pattern_builds_mixers_per_layer():
    cfg = ModelConfig(
        d_model=16,
        n_layers=4,
        mixer="gla",
        mixer_kwargs={"num_heads": 4},
        block_pattern="GDGA",
        pattern_kwargs={"D": {"num_heads": 2}},
    )
    model = MixerLM(cfg)
    assert model.mixer_names == ["gla", "deltanet", "gla", "softmax"]
    registry_cls = {
        name: type(registry.create_mixer(name, d_model=16)) for name in ("gla", "deltanet", "softmax")
    }
    assert [type(b.mixer) for b in model.blocks] == [registry_cls[n] for n in model.mixer_names]
    # layer_idx / num_layers reach each mixer; per-letter and per-mixer kwargs reach the right layers
    assert cfg.layer_mixers() == [
        ("gla", {"num_heads": 4}),
        ("deltanet", {"num_heads": 2}),
        ("gla", {"num_heads": 4}),
        ("softmax", {}),
    ]
    assert [b.mixer.num_heads for b in model.blocks[:3]] == [4, 2, 4]


def test_layer_idx_and_num_layers_passed(test_mixer):
    model = _tiny(test_mixer, n_layers=3)
    assert [(b.mixer.layer_idx, b.mixer.num_layers) for b in model.blocks] == [(0, 3), (1, 3), (2, 3)]


def test_bad_block_patterns_are_clear_errors():
    with pytest.raises(ValueError, match=r"has 3 letters but n_layers=2"):
        ModelConfig(n_layers=2, block_pattern="GGA")
    with pytest.raises(
        ValueError, match=r"unknown letter 'Q' at layer 1; allowed letters: A=softmax, B=slab"
    ):
        ModelConfig(n_layers=2, block_pattern="GQ")
    with pytest.raises(ValueError, match=r"pattern_kwargs: unknown letter 'x'"):
        ModelConfig(pattern_kwargs={"x": {}})
    with pytest.raises(ValueError, match=r"pattern_kwargs\['G'\] must be a dict, got int"):
        ModelConfig(pattern_kwargs={"G": 3})
    with pytest.raises(
        ValueError, match=r"block_pattern must be a string of layer letters, got \['G', 'G'\]"
    ):
        ModelConfig(block_pattern=["G", "G"])
    with pytest.raises(ValueError, match=r"pattern_mixers maps one letter to a mixer name, got 'GG'"):
        ModelConfig(pattern_mixers={"GG": "gla"})


def test_model_revalidates_config_changed_after_construction():
    # `--set model.block_pattern=...` assigns the field without re-running __post_init__
    cfg = ModelConfig(d_model=16, n_layers=2)
    cfg.block_pattern = "GQ"
    with pytest.raises(ValueError, match=r"unknown letter 'Q' at layer 1"):
        MixerLM(cfg)
    with pytest.raises(ValueError, match=r"MixerLM: config must be a ModelConfig, got dict"):
        MixerLM({"d_model": 16})


def test_config_dict_round_trip_and_overrides():
    cfg = ModelConfig(n_layers=3, block_pattern="GDA", pattern_kwargs={"A": {"num_heads": 2}}, norm="repbn")
    assert from_dict(ModelConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    changed = apply_overrides(
        cfg, ["block_pattern=NNA", "mlp_ratio=2.5", 'pattern_kwargs={"N": {"num_heads": 2}}']
    )
    assert changed.layer_mixers() == [
        ("gated_deltanet", {"num_heads": 2}),
        ("gated_deltanet", {"num_heads": 2}),
        ("softmax", {}),
    ]
    assert changed.mlp_ratio == 2.5 and cfg.block_pattern == "GDA"


def test_custom_pattern_letter_maps_to_any_mixer(test_mixer):
    cfg = ModelConfig(
        d_model=16, n_layers=2, block_pattern="XG", pattern_mixers={"X": test_mixer, "G": "gla"}
    )
    assert MixerLM(cfg).mixer_names == [test_mixer, "gla"]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vocab_size": 0}, r"vocab_size must be a positive int, got 0"),
        ({"d_model": 2.5}, r"d_model must be a positive int, got 2.5"),
        ({"n_layers": -1}, r"n_layers must be a positive int, got -1"),
        ({"mlp": "moe"}, r"mlp must be one of \('glu', 'mlp', 'none'\), got 'moe'"),
        ({"norm": "batchnorm"}, r"norm must be one of \('rmsnorm', 'layernorm', 'repbn'\), got 'batchnorm'"),
        ({"mlp_ratio": 0}, r"mlp_ratio must be > 0, got 0"),
        ({"init_std": -1.0}, r"init_std must be > 0, got -1.0"),
        ({"norm_eps": 0.0}, r"norm_eps must be > 0, got 0.0"),
        ({"repbn_warmup_steps": -5}, r"repbn_warmup_steps must be an int >= 0, got -5"),
        ({"mixer": ""}, r"mixer must be a non-empty mixer name"),
        ({"mixer_kwargs": [1]}, r"mixer_kwargs must be a dict, got list"),
    ],
)
def test_config_validation_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_mixer_and_bad_kwargs_name_the_layer():
    with pytest.raises(ValueError, match=r"layer 0: mixer: unknown mixer 'nope'; choose from: .*gla"):
        MixerLM(ModelConfig(mixer="nope"))
    with pytest.raises(ValueError, match=r"layer 1 \(mixer 'softmax'\) kwargs \{'bogus': 1\}"):
        MixerLM(ModelConfig(d_model=16, block_pattern="GA", pattern_kwargs={"A": {"bogus": 1}}))


def test_input_validation_messages(test_mixer):
    model = _tiny(test_mixer, max_seq_len=8)
    with pytest.raises(ValueError, match=r"input_ids: expected a \[B, T\] tensor of token ids, got \(5,\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(
        ValueError, match=r"input_ids: expected an integer dtype \(torch.long\), got torch.float32"
    ):
        model(torch.zeros(1, 5))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 32\), got values in \[0, 32\]"):
        model(torch.tensor([[0, 32]]))
    with pytest.raises(ValueError, match=r"sequence length 9 exceeds max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"state: expected a list of 2 per-layer states \(or None\), got 1"):
        model(torch.zeros(1, 3, dtype=torch.long), state=[None])
    with pytest.raises(ValueError, match=r"targets: expected shape \(1, 3\) like input_ids, got \(1, 4\)"):
        model.loss(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_generate_greedy_equals_full_forward_rollout(mixer):
    model = _tiny(mixer, n_layers=2).double().eval()
    prompt = torch.randint(0, 32, (2, 5))
    got = model.generate(prompt, max_new_tokens=8)
    # reference: re-run the whole sequence each step and take the argmax of the last position
    seq = prompt
    for _ in range(8):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(got, seq)
    assert got.shape == (2, 13)


def test_generate_decodes_one_token_per_step(test_mixer, monkeypatch):
    model = _tiny(test_mixer).eval()
    lengths = []
    real_forward = MixerLM.forward

    def spy(self, input_ids, state=None, return_hidden_states=False):
        lengths.append((input_ids.shape[1], state is None))
        return real_forward(self, input_ids, state, return_hidden_states)

    monkeypatch.setattr(MixerLM, "forward", spy)
    model.generate(torch.randint(0, 32, (1, 6)), max_new_tokens=4)
    # one prefill without state, then single tokens with the carried state
    assert lengths == [(6, True), (1, False), (1, False), (1, False)]


def test_generate_sampling(test_mixer):
    model = _tiny(test_mixer).eval()
    prompt = torch.randint(0, 32, (3, 4))
    a = model.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(1))
    b = model.generate(prompt, 6, temperature=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert torch.equal(a[:, :4], prompt)
    # top_k=1 keeps only the argmax, whatever the temperature
    assert torch.equal(model.generate(prompt, 6, temperature=5.0, top_k=1), model.generate(prompt, 6))
    assert torch.equal(model.generate(prompt, 0), prompt)


def test_generate_sampling_equals_reference_draws(test_mixer):
    # reference: full re-run each step, temperature + top-k by hand, one torch.multinomial draw
    # per step from the global generator (what transformers' sampling does with the same seed)
    model = _tiny(test_mixer, n_layers=2, init_std=0.5).eval()
    prompt = torch.randint(0, 32, (3, 4))
    torch.manual_seed(11)
    got = model.generate(prompt, 6, temperature=0.7, top_k=5)
    torch.manual_seed(11)
    seq = prompt
    for _ in range(6):
        logits = model(seq).logits[:, -1].float() / 0.7
        kth = logits.sort(dim=-1, descending=True).values[:, 4:5]
        probs = torch.softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)
        seq = torch.cat([seq, torch.multinomial(probs, 1)], dim=1)
    assert torch.equal(got, seq)
    assert not torch.equal(got, model.generate(prompt, 6))  # really sampled, not the argmax


def _sequence_logprob(model: MixerLM, seq: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Summed log-probability ``[B]`` of the tokens after the prompt in ``seq: [B, L]`` (one full forward)."""
    logp = torch.log_softmax(model(seq).logits[:, prompt_len - 1 : -1].double(), dim=-1)
    return logp.gather(-1, seq[:, prompt_len:].unsqueeze(-1)).squeeze(-1).sum(-1)


def _reference_beam_search(model: MixerLM, prompt: torch.Tensor, steps: int, beams: int) -> torch.Tensor:
    """Textbook beam search, one prompt row ``[T]`` at a time, re-running every prefix in full.

    Keeps the ``beams`` best (summed float64 log-prob) sequences of each length; returns the best
    final one ``[T + steps]``. No state is carried, so it is independent of the mixers' decoding.
    """
    vocab = model.config.vocab_size
    live = [(0.0, prompt.tolist())]
    for _ in range(steps):
        candidates = []
        for score, seq in live:
            logp = torch.log_softmax(model(torch.tensor([seq])).logits[0, -1].double(), dim=-1)
            candidates += [(score + logp[v].item(), [*seq, v]) for v in range(vocab)]
        live = sorted(candidates, key=lambda c: -c[0])[:beams]
    return torch.tensor(live[0][1])


@pytest.mark.parametrize("mixer", ALL_MIXERS)
def test_beam_search_equals_reference_beam_search(mixer):
    # every mixer: the per-beam state selection (map_state + index_select) must follow the beams
    model = _tiny(mixer, n_layers=2, vocab_size=12, init_std=0.5).double().eval()
    prompt = torch.randint(0, 12, (2, 4))
    got = model.generate(prompt, 4, num_beams=3)
    expected = torch.stack([_reference_beam_search(model, row, 4, 3) for row in prompt])
    assert torch.equal(got, expected)
    # never worse than greedy, which is beam search with one beam
    greedy = model.generate(prompt, 4)
    assert torch.equal(model.generate(prompt, 4, num_beams=1), greedy)
    assert (_sequence_logprob(model, got, 4) >= _sequence_logprob(model, greedy, 4) - 1e-6).all()


def test_beam_search_with_enough_beams_is_exhaustive_search(test_mixer):
    # with num_beams >= V^(steps-1) no prefix is ever dropped, so beam search must return the
    # best of all V^steps continuations (also when num_beams > V: the unused beams stay dead)
    vocab, steps = 5, 3
    model = _tiny(test_mixer, n_layers=2, vocab_size=vocab, init_std=0.5).double().eval()
    prompt = torch.randint(0, vocab, (6, 3))
    got = model.generate(prompt, steps, num_beams=vocab ** (steps - 1))
    tails = torch.cartesian_prod(*[torch.arange(vocab)] * steps)  # [V^steps, steps]
    for row, out in zip(prompt, got, strict=True):
        seqs = torch.cat([row.expand(len(tails), -1), tails], dim=1)
        best = seqs[_sequence_logprob(model, seqs, 3).argmax()]
        assert torch.equal(out, best)
    # the rows where greedy is not optimal make this a test of the search, not of argmax
    assert not torch.equal(got, model.generate(prompt, steps))


def test_generate_argument_errors(test_mixer):
    model = _tiny(test_mixer, max_seq_len=10)
    prompt = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"max_new_tokens: expected an int >= 0, got -1"):
        model.generate(prompt, -1)
    with pytest.raises(ValueError, match=r"temperature: expected >= 0 \(0 = greedy\), got -0.5"):
        model.generate(prompt, 2, temperature=-0.5)
    with pytest.raises(ValueError, match=r"top_k: expected None or an int >= 1, got 0"):
        model.generate(prompt, 2, temperature=1.0, top_k=0)
    with pytest.raises(ValueError, match=r"num_beams: expected an int >= 1, got 0"):
        model.generate(prompt, 2, num_beams=0)
    with pytest.raises(ValueError, match=r"num_beams=2 with temperature=1.0: beam search is deterministic"):
        model.generate(prompt, 2, temperature=1.0, num_beams=2)
    with pytest.raises(ValueError, match=r"prompt length \+ max_new_tokens = 11 exceeds max_seq_len=10"):
        model.generate(prompt, 7)


def test_aux_loss_flows_from_test_mixer(test_mixer):
    model = _tiny(test_mixer, n_layers=2)
    ids = torch.randint(0, 32, (2, 6))
    out = model(ids)
    # recompute each layer's aux loss from its own output to check the sum
    x = model.embed(ids)
    per_layer = []
    for block in model.blocks:
        y, _ = block.mixer(block.mixer_norm(x))
        per_layer.append(y.pow(2).mean())
        x, _ = block(x)
    torch.testing.assert_close(out.aux_loss, sum(per_layer))
    out.aux_loss.backward()
    assert model.blocks[0].mixer.w_v.weight.grad.abs().sum() > 0
    # eval mode: no aux loss, and the stale training value is not reused
    model.eval()
    assert model(ids).aux_loss.item() == 0.0


def test_aux_loss_flows_for_mom():
    model = _tiny("mom", n_layers=1, d_model=16).train()
    out = model(torch.randint(0, 32, (2, 8)))
    assert out.aux_loss.item() > 0
    out.aux_loss.backward()
    # the load-balancing loss trains the router
    router = model.blocks[0].mixer.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0


def test_loss_helper_matches_cross_entropy(test_mixer):
    model = _tiny(test_mixer).eval()
    ids, targets = torch.randint(0, 32, (2, 6)), torch.randint(0, 32, (2, 6))
    targets[0, 0] = -100
    logits = model(ids).logits
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    torch.testing.assert_close(model.loss(ids, targets), ref)


def test_state_size_sums_layers():
    model = MixerLM(ModelConfig(d_model=16, n_layers=3, block_pattern="GGA"))
    gla, attn = model.blocks[0].mixer, model.blocks[2].mixer
    for n in (1, 100):
        assert model.state_size(n) == 2 * gla.state_size(n) + attn.state_size(n)
    # the softmax layer's KV cache grows with the context, the GLA layers' state does not
    assert model.state_size(100) - model.state_size(1) == attn.state_size(100) - attn.state_size(1) > 0


def test_tied_and_untied_heads(test_mixer):
    tied = _tiny(test_mixer)
    assert tied.lm_head is None
    assert not any("lm_head" in name for name in tied.state_dict())
    untied = _tiny(test_mixer, tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.embed.weight.data_ptr()
    ids = torch.randint(0, 32, (1, 5))
    torch.testing.assert_close(
        untied(ids).logits,
        untied.lm_head(untied.norm(untied(ids, return_hidden_states=True).hidden_states[-1])),
    )


@pytest.mark.parametrize("mlp", ["glu", "mlp", "none"])
def test_mlp_kinds(test_mixer, mlp):
    model = _tiny(test_mixer, mlp=mlp, mlp_ratio=3.0)
    if mlp == "none":
        assert model.blocks[0].mlp is None
    else:
        hidden = model.blocks[0].mlp.fc_out.in_features
        assert hidden == (32 if mlp == "glu" else 48)
    assert model(torch.randint(0, 32, (1, 4))).logits.shape == (1, 4, 32)


def test_forward_does_not_step_repbn_advance_schedules_does(test_mixer):
    model = _tiny(test_mixer, norm="repbn", repbn_warmup_steps=4)
    norms = [m for m in model.modules() if isinstance(m, RepBN)]
    assert len(norms) == 2 * 2 + 1
    ids = torch.randint(0, 32, (2, 5))
    # two training forwards (e.g. gradient accumulation) are not two schedule steps
    model.train()
    model.loss(ids, ids).backward()
    model.loss(ids, ids).backward()
    assert [int(n.num_steps) for n in norms] == [0] * 5
    assert all(n.gamma == 1.0 for n in norms)
    model.advance_schedules()
    assert [int(n.num_steps) for n in norms] == [1] * 5
    assert all(n.gamma == 0.75 for n in norms)
    model.advance_schedules()
    # eval forwards and no-grad forwards do not step it either
    model.eval()
    model(ids)
    with torch.no_grad():
        model.train()(ids)
    assert [int(n.num_steps) for n in norms] == [2] * 5
    # without RepBN it is a no-op, so a training loop may call it on any MixerLM
    _tiny(test_mixer).advance_schedules()
