"""One generic Hugging Face wrapper around :class:`~linearlab.models.MixerLM` (transformers >= 5).

- :class:`LinearLabConfig` (``model_type="linearlab"``) holds the :class:`ModelConfig` fields;
- :class:`LinearLabForCausalLM` wraps ``MixerLM`` for ``save_pretrained`` / ``from_pretrained``
  (safetensors) and ``generate``;
- :class:`LinearLabCache` is the ``transformers`` ``Cache`` that carries the per-layer mixer
  states between generation steps, so HF decoding is recurrent (one token per step), not a
  re-run of the prefix.

Importing this module registers the pair with ``AutoConfig`` / ``AutoModelForCausalLM``.

Example:
    >>> from linearlab.models.hf import LinearLabConfig, LinearLabForCausalLM
    >>> model = LinearLabForCausalLM(LinearLabConfig(mixer="deltanet", n_layers=2)).eval()
    >>> model.save_pretrained("tiny")                      # config.json + model.safetensors
    >>> again = AutoModelForCausalLM.from_pretrained("tiny")
    >>> out = again.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=8, do_sample=False)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from linearlab.models.config import ModelConfig
from linearlab.models.lm import MixerLM, map_state

_MODEL_FIELDS = [f.name for f in dataclasses.fields(ModelConfig)]


class LinearLabConfig(PreTrainedConfig):
    """HF config for :class:`LinearLabForCausalLM`: the :class:`ModelConfig` fields, same names and defaults.

    ``tie_embeddings`` is mirrored into HF's ``tie_word_embeddings``. Dict fields left as None
    take ``ModelConfig``'s defaults. Invalid values raise the same ValueError as ``ModelConfig``.
    """

    model_type = "linearlab"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers"}

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    mixer: str = "gla"
    mixer_kwargs: dict | None = None
    block_pattern: str | None = None
    pattern_mixers: dict | None = None
    pattern_kwargs: dict | None = None
    mlp: str = "glu"
    mlp_ratio: float = 4.0
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    repbn_warmup_steps: int = 1000
    tie_embeddings: bool = True
    max_seq_len: int = 2048
    init_std: float = 0.02
    use_cache: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        # validate once, through the library's own config, and store its normalised values
        defaults = ModelConfig()
        for name in ("mixer_kwargs", "pattern_mixers", "pattern_kwargs"):
            if getattr(self, name) is None:
                setattr(self, name, dict(getattr(defaults, name)))
        self.to_model_config()
        self.tie_word_embeddings = self.tie_embeddings
        super().__post_init__(**kwargs)

    def to_model_config(self) -> ModelConfig:
        """The equivalent :class:`ModelConfig` (validated)."""
        return ModelConfig(**{name: getattr(self, name) for name in _MODEL_FIELDS})

    @classmethod
    def from_model_config(cls, config: ModelConfig, **kwargs: Any) -> LinearLabConfig:
        """Build from a :class:`ModelConfig` (extra HF kwargs such as ``eos_token_id`` pass through)."""
        return cls(**config.to_dict(), **kwargs)


class LinearLabCache(Cache):
    """``transformers`` cache holding MixerLM's per-layer mixer states (recurrent matrices, KV caches, ...).

    Attributes:
        states: list of per-layer mixer states (None before the first forward).
        seen_tokens: number of tokens absorbed so far.
    """

    def __init__(self, states: list[Any] | None = None, seen_tokens: int = 0) -> None:
        # no HF layer objects: each mixer owns the layout of its own state
        super().__init__(layers=[])
        self.states = states
        self.seen_tokens = seen_tokens

    def update_states(self, states: list[Any], num_new_tokens: int) -> None:
        """Replace the states after a forward over ``num_new_tokens`` tokens."""
        self.states = states
        self.seen_tokens += num_new_tokens

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def get_max_length(self, layer_idx: int | None = None) -> int:
        return -1

    @property
    def is_compileable(self) -> bool:
        return False

    @property
    def is_croppable(self) -> bool:
        # a recurrent state cannot forget its last tokens
        return False

    def reset(self) -> None:
        self.states = None
        self.seen_tokens = 0

    def crop(self, tokens_to_remove: int) -> None:
        raise ValueError(
            f"LinearLabCache.crop({tokens_to_remove}): recurrent mixer states cannot drop tokens; "
            "assisted / speculative decoding is not supported"
        )

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: keep the batch rows ``beam_idx`` of every state tensor."""
        self.states = map_state(self.states, lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.states = map_state(self.states, lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.states = map_state(self.states, lambda t: t[indices])

    @property
    def batch_size(self) -> int:
        found: list[int] = []
        map_state(self.states, lambda t: found.append(t.shape[0]) or t)
        return found[0] if found else -1


class LinearLabForCausalLM(PreTrainedModel, GenerationMixin):
    """Causal LM for the HF ecosystem: ``MixerLM`` inside, ``LinearLabCache`` for generation.

    ``forward(input_ids: [B, T], cache=None, labels=None, ...) -> CausalLMOutputWithPast`` with
    ``logits [B, T, V]``, ``cache`` (a :class:`LinearLabCache`) and, with ``labels``, the
    shifted next-token loss (+ mixers' aux losses). Padding is not supported: an
    ``attention_mask`` containing zeros is rejected, because a recurrent state cannot skip tokens.
    """

    config_class = LinearLabConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["Block"]
    # a recurrent state cannot be rolled back to verify draft tokens (assisted decoding)
    _is_stateful = True

    def __init__(self, config: LinearLabConfig) -> None:
        super().__init__(config)
        self.model = MixerLM(config.to_model_config())
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        # MixerLM and its mixers initialise themselves in their constructors
        return

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> LinearLabForCausalLM:
        """``PreTrainedModel.from_pretrained``, then rebuild the non-persistent buffers."""
        model = super().from_pretrained(*args, **kwargs)
        model._restore_nonpersistent_buffers()
        return model

    @torch.no_grad()
    def _restore_nonpersistent_buffers(self) -> None:
        # transformers builds the model on the meta device and fills it from the checkpoint;
        # buffers that are not saved (RoPE frequencies, fixed decay rates) would stay garbage.
        # They are pure functions of the config, so rebuild them from a fresh CPU model.
        with torch.random.fork_rng(devices=[]):  # do not disturb the caller's random stream
            fresh = dict(MixerLM(self.config.to_model_config()).named_modules())
        for name, module in self.model.named_modules():
            for buf in getattr(module, "_non_persistent_buffers_set", ()):
                current = getattr(module, buf)
                if current is None:
                    continue
                source = getattr(fresh[name], buf)
                device = "cpu" if current.is_meta else current.device
                # keep the dtype transformers chose (e.g. from_pretrained(dtype=torch.float64))
                dtype = current.dtype if source.is_floating_point() else source.dtype
                setattr(module, buf, source.to(device=device, dtype=dtype))

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # our forward creates a LinearLabCache itself; a DynamicCache would not fit mixer states
        return False

    def get_input_embeddings(self) -> torch.nn.Embedding:
        return self.model.embed

    def set_input_embeddings(self, value: torch.nn.Embedding) -> None:
        self.model.embed = value

    def get_output_embeddings(self) -> torch.nn.Module | None:
        # tied models have no head module (logits use embed.weight directly)
        return self.model.lm_head

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        cache: LinearLabCache | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        past_key_values: LinearLabCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        if inputs_embeds is not None or input_ids is None:
            raise ValueError("LinearLabForCausalLM: pass input_ids [B, T]; inputs_embeds is not supported")
        if cache is None:
            # transformers < 5 name of the same argument
            cache = past_key_values
        if cache is not None and not isinstance(cache, LinearLabCache):
            raise ValueError(f"cache: expected a LinearLabCache or None, got {type(cache).__name__}")
        if attention_mask is not None and not bool((attention_mask != 0).all()):
            raise ValueError(
                "attention_mask: padding (zeros) is not supported by recurrent mixers; "
                "pass unpadded sequences of equal length"
            )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        state = cache.states if cache is not None else None
        out = self.model(input_ids, state=state, return_hidden_states=bool(output_hidden_states))

        loss = None
        if labels is not None:
            if labels.shape != input_ids.shape:
                raise ValueError(
                    f"labels: expected shape {tuple(input_ids.shape)} like input_ids, got {tuple(labels.shape)}"
                )
            # HF convention: labels are the inputs; position t predicts token t + 1
            loss = F.cross_entropy(
                out.logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten().long(), ignore_index=-100
            )
            loss = loss + out.aux_loss

        if use_cache:
            if cache is None:
                cache = LinearLabCache()
            cache.update_states(out.state, input_ids.shape[1])
        else:
            cache = None
        hidden = tuple(out.hidden_states) if out.hidden_states is not None else None
        result = CausalLMOutputWithPast(loss=loss, logits=out.logits, cache=cache, hidden_states=hidden)
        if return_dict is None:
            return_dict = self.config.return_dict
        return result if return_dict else result.to_tuple()


AutoConfig.register(LinearLabConfig.model_type, LinearLabConfig, exist_ok=True)
AutoModelForCausalLM.register(LinearLabConfig, LinearLabForCausalLM, exist_ok=True)


def _register_linearized_twin() -> None:
    # when this module was the first to import transformers, the twins' registration skipped the
    # LinearLab family (this module was half initialised then); it is complete now. If the twins'
    # module is the half-initialised one, it registers everything at its own end.
    import linearlab.convert.hf_classes as twins

    if hasattr(twins, "register_auto_classes"):
        twins.register_auto_classes()


_register_linearized_twin()
