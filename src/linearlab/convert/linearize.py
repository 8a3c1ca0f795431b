"""``linearize_``: swap a pretrained model's softmax attention for linear (or hybrid) attention, in place.

In the style of torchao's ``quantize_(model, config, filter_fn)``: every pretrained weight is kept
(the ``q/k/v/o`` projections are reused unchanged); only the attention *operator* changes, and
the only new parameters are the feature maps and, for ``lolcats``, one window factor per head.

Supported models: Hugging Face ``LlamaForCausalLM``, ``MistralForCausalLM`` and
``Qwen2ForCausalLM`` (grouped-query attention, RoPE, Qwen2's q/k/v biases, sliding windows), and
linearlab's own ``MixerLM`` / ``LinearLabForCausalLM`` (their ``softmax`` / ``sliding_window``
layers).

Methods (``LinearizeConfig(method=...)``):

- ``t2r`` (Kasai et al., arXiv 2103.13076): feature map ``relu(x W + b)``, normalised linear attention;
- ``hedgehog`` (Zhang et al., arXiv 2402.04347): the exp-based Hedgehog map, trained to mimic the
  softmax weights;
- ``lolcats`` (Zhang et al., arXiv 2410.10254): softmax over the last ``window_size`` tokens plus
  Hedgehog-style linear attention (LoLCATs' ``[softmax(xW), softmax(-xW)]`` map) over everything
  older, one shared normaliser, a learned per-head window factor;
- ``still`` (Meng et al., arXiv 2602.02180, designed from its abstract): window softmax plus a
  bounded set of salient tokens (self-saliency, selected every ``block_size`` tokens) plus linear
  attention with a norm-preserving map over the rest;
- ``liger`` / ``liger_gdn`` (Lan et al., arXiv 2503.01496): half sliding-window softmax, half a
  gated recurrence (GLA / Gated DeltaNet) whose feature map and gates come from the pretrained
  q and k: no new parameters, trained in one stage (LoRA).

A Hugging Face model keeps working with ``generate`` (its cache holds constant-size states for the
linearised layers) and saves with ``save_pretrained``; after ``import linearlab``,
``AutoModelForCausalLM.from_pretrained`` rebuilds it (see :mod:`linearlab.convert.hf_classes`).

Example:
    >>> model = LlamaForCausalLM(LlamaConfig(...))                  # or from_pretrained(local_dir)
    >>> linearize_(model, LinearizeConfig(method="lolcats", window_size=64),
    ...            filter_fn=lambda module, fqn: not fqn.startswith("model.layers.0."))
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from linearlab.convert.operator import LIGER_METHODS, LinearizedOperator
from linearlab.layers.feature_maps import FEATURE_MAPS
from linearlab.papers import LINEARIZE, declare_paper
from linearlab.registry import Registry

#: method -> its default feature map
METHODS: Registry[str] = Registry("linearize method", argument="method")
METHODS.register("t2r", "t2r")
METHODS.register("hedgehog", "hedgehog")
METHODS.register("lolcats", "hedgehog_split")
METHODS.register("still", "norm_preserving")
METHODS.register("liger", "")  # parameter-free: softmax over the head dimension
METHODS.register("liger_gdn", "")

#: Hugging Face attention classes linearize_ can replace, by model family
HF_ATTENTION_CLASSES = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaAttention"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "MistralAttention"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2Attention"),
}
SUPPORTED = (
    "Hugging Face LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM; "
    "linearlab MixerLM / LinearLabForCausalLM (softmax and sliding_window layers)"
)

FilterFn = Callable[[nn.Module, str], bool]


@dataclass
class LinearizeConfig:
    """How to linearise.

    Args:
        method: ``"t2r"``, ``"hedgehog"``, ``"lolcats"``, ``"still"``, ``"liger"`` or ``"liger_gdn"``.
            Default: ``"lolcats"``.
        feature_map: a registered feature map; None = the method's own (``t2r``, ``hedgehog``,
            ``hedgehog_split`` for lolcats; Liger's is fixed).
        window_size: ``lolcats`` and ``liger``: the query plus the ``window_size - 1`` tokens before
            it get softmax attention. Default: 64 (both papers).
        init_window_factor: ``lolcats`` / ``still``: starting window factor in (0, 1). Default: 0.1 (LoLCATs).
        chunk_size: chunk length of the chunked ops. Default: 64.
        budget: ``still``: salient tokens kept for softmax attention per head. Default: 32.
        block_size: ``still``: tokens between two selections (the delay). Default: 16.

    Example:
        >>> LinearizeConfig(method="hedgehog")
    """

    method: str = "lolcats"
    feature_map: str | None = None
    window_size: int = 64
    init_window_factor: float = 0.1
    chunk_size: int = 64
    budget: int = 32
    block_size: int = 16

    def __post_init__(self) -> None:
        METHODS.get(self.method)
        if self.feature_map is not None:
            FEATURE_MAPS.get(self.feature_map)
            if self.method in LIGER_METHODS:
                raise ValueError(
                    f"feature_map: method {self.method!r} has a fixed map; leave feature_map None"
                )
        if (
            isinstance(self.window_size, bool)
            or not isinstance(self.window_size, int)
            or self.window_size < 1
        ):
            raise ValueError(f"window_size: expected an int >= 1, got {self.window_size!r}")
        if not 0 < self.init_window_factor < 1:
            raise ValueError(f"init_window_factor: must be in (0, 1), got {self.init_window_factor}")
        for name, low in (("chunk_size", 1), ("budget", 0), ("block_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")

    @property
    def map_name(self) -> str:
        return self.feature_map or METHODS.get(self.method)

    def make_operator(
        self, head_dim: int, num_heads: int, scale: float, teacher_window: int | None
    ) -> LinearizedOperator:
        return LinearizedOperator(
            self.method,
            self.map_name,
            head_dim,
            num_heads,
            scale,
            window_size=self.window_size,
            init_window_factor=self.init_window_factor,
            chunk_size=self.chunk_size,
            teacher_window=teacher_window,
            budget=self.budget,
            block_size=self.block_size,
        )


def _hf_attention_classes() -> tuple[type, ...]:
    import importlib

    return tuple(getattr(importlib.import_module(mod), name) for mod, name in HF_ATTENTION_CLASSES.values())


def _targets(model: nn.Module) -> tuple[str, list[tuple[str, nn.Module]]]:
    """``("hf" | "mixer", [(fqn, attention module), ...])`` of every replaceable softmax attention."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    from linearlab.layers.mixers.softmax import SoftmaxAttention

    mixers = [(name, m) for name, m in model.named_modules() if isinstance(m, SoftmaxAttention)]
    if mixers:
        return "mixer", mixers
    attention_classes = _hf_attention_classes()
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, attention_classes)]
    if found:
        return "hf", found
    attention_like = sorted(
        {type(m).__name__ for m in model.modules() if type(m).__name__.endswith("Attention")}
    )
    what = f" (its attention classes: {', '.join(attention_like)})" if attention_like else ""
    raise ValueError(
        f"model: {type(model).__name__}{what} has no attention linearize_ can replace; supported: {SUPPORTED}"
    )


def _teacher_window(attn: nn.Module) -> int | None:
    # Qwen2 sets it per layer (sliding or full); Mistral reads it from the config; Llama has none
    if hasattr(attn, "sliding_window"):
        return attn.sliding_window
    return getattr(attn.config, "sliding_window", None)


def linearize_(
    model: nn.Module, config: LinearizeConfig | None = None, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Replace the softmax attention of ``model`` in place; return ``model``.

    Args:
        model: a supported model (see the module docstring), e.g. loaded with ``from_pretrained``.
        config: the method and its settings. Default: ``LinearizeConfig()`` (lolcats, window 64).
        filter_fn: ``filter_fn(module, fqn) -> bool`` picks which attention modules to replace
            (default: all), e.g. keep the first layer softmax with
            ``lambda m, fqn: fqn != "model.layers.0.self_attn"``.

    Raises:
        ValueError: an unsupported model (naming its class and listing the supported ones), a
            ``filter_fn`` that selects nothing.
    """
    config = LinearizeConfig() if config is None else config
    if not isinstance(config, LinearizeConfig):
        raise ValueError(f"config: expected a LinearizeConfig, got {type(config).__name__}")
    kind, targets = _targets(model)
    chosen = [(fqn, m) for fqn, m in targets if filter_fn is None or filter_fn(m, fqn)]
    if not chosen:
        names = ", ".join(fqn for fqn, _ in targets[:4]) + (", ..." if len(targets) > 4 else "")
        raise ValueError(f"filter_fn: selected none of the {len(targets)} attention modules ({names})")
    layers = _replace(model, kind, chosen, config)
    _record(model, kind, config, layers)
    return model


def _replace(
    model: nn.Module, kind: str, chosen: list[tuple[str, nn.Module]], config: LinearizeConfig
) -> list[int]:
    """Swap each chosen module for its linearised version; return the layer indices replaced."""
    layers = []
    for fqn, attn in chosen:
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if kind == "hf":
            from linearlab.convert.hf_attention import HFLinearizedAttention

            heads = attn.q_proj.out_features // attn.head_dim
            operator = config.make_operator(attn.head_dim, heads, attn.scaling, _teacher_window(attn))
            weight = attn.q_proj.weight
            new: nn.Module = HFLinearizedAttention(
                attn, operator.to(device=weight.device, dtype=weight.dtype)
            )
            layers.append(int(attn.layer_idx))
        else:
            from linearlab.convert.mixer_attention import LinearizedMixer

            operator = config.make_operator(
                attn.head_dim, attn.num_heads, attn.head_dim**-0.5, attn.window_size
            )
            weight = attn.qkv_proj.weight
            new = LinearizedMixer(attn, operator.to(device=weight.device, dtype=weight.dtype))
            layers.append(_block_index(fqn))
        setattr(parent, child, new)
    return layers


def _block_index(fqn: str) -> int:
    # "...blocks.<i>.mixer"
    parts = fqn.split(".")
    return int(parts[parts.index("blocks") + 1])


def _record(model: nn.Module, kind: str, config: LinearizeConfig, layers: list[int]) -> None:
    """Note the conversion in a Hugging Face model's config and give it the class that reloads it."""
    hf_config = getattr(model, "config", None)
    # only a Hugging Face model records the conversion (a bare MixerLM's ModelConfig has a to_dict
    # too, but nothing saves it through Hugging Face); such a model means transformers is loaded
    transformers = sys.modules.get("transformers")
    if transformers is None or not isinstance(model, transformers.PreTrainedModel):
        return
    from linearlab.convert.hf_classes import linearized_classes

    previous = getattr(hf_config, "linearize", None) or {}
    if previous and previous.get("config") != dataclasses.asdict(config):
        raise ValueError(
            f"config: the model was already linearised with {previous.get('config')}; "
            f"a second linearize_ must use the same settings, got {dataclasses.asdict(config)}"
        )
    hf_config.linearize = {
        "config": dataclasses.asdict(config),
        "layers": sorted(set(previous.get("layers", [])) | set(layers)),
    }
    config_cls, model_cls = linearized_classes(type(model))
    hf_config.__class__ = config_cls
    model.__class__ = model_cls


def apply_saved_linearization(model: nn.Module) -> None:
    """Rebuild the linearised layers a saved config lists (used when a saved model is loaded)."""
    spec = model.config.linearize
    config = LinearizeConfig(**spec["config"])
    wanted = set(spec["layers"])
    kind, targets = _targets(model)
    chosen = []
    for fqn, attn in targets:
        index = int(attn.layer_idx) if kind == "hf" else _block_index(fqn)
        if index in wanted:
            chosen.append((fqn, attn))
    _replace(model, kind, chosen, config)


def linearized_modules(model: nn.Module) -> list[tuple[str, LinearizedOperator]]:
    """``[(fqn, operator), ...]`` of every linearised layer in ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LinearizedOperator)]


declare_paper(
    arxiv="2410.10254",
    short="LoLCATs",
    title="LoLCATs: On Low-Rank Linearizing of Large Language Models",
    authors="Zhang, Arora, Chalamala, Wu, Spector, Singhal, Ramesh, Ré",
    venue="ICLR 2025",
    area=LINEARIZE,
    status="implemented",
    objects=(
        "linearlab.convert.LinearizeConfig",
        "linearlab.convert.linearize_",
        "linearlab.convert.distill_attention",
        "linearlab.convert.finetune_lora",
        "linearlab.layers.feature_maps.HedgehogSplitMap",
        "linearlab.ops.chunk_lolcats_attn",
        "linearlab.ops.fused_recurrent_lolcats_attn",
        "linearlab.ops.naive_lolcats_attn",
    ),
    registered=("linearize method:lolcats", "feature map:hedgehog_split"),
    recipes=("linearize",),
    usage=(
        "from linearlab.convert import LinearizeConfig, linearize_\n"
        'linearize_(model, LinearizeConfig(method="lolcats", window_size=64))  # then distill_attention, finetune_lora'
    ),
    claim=(
        "Linearised Llama 3 8B and Mistral 7B score 20+ points of 5-shot MMLU above prior "
        "linearisations while training 0.2% of their parameters on 0.4% of their tokens; the first "
        "linearised 70B and 405B models close 77.8% and 78.1% of the 5-shot MMLU gap to the originals "
        "(abstract)."
    ),
    figures=("linearize:teacher *", "linearize:lolcats *", "linearize:lolcats_lora_only *"),
)

declare_paper(
    arxiv="2503.01496",
    short="Liger",
    title="Liger: Linearizing Large Language Models to Gated Recurrent Structures",
    authors="Lan, Sun, Hu, Du, Cheng",
    venue="ICML 2025",
    area=LINEARIZE,
    status="implemented",
    objects=(
        "linearlab.convert.LinearizeConfig",
        "linearlab.convert.linearize_",
        "linearlab.convert.finetune_lora",
    ),
    registered=("linearize method:liger", "linearize method:liger_gdn"),
    recipes=("linearize",),
    usage=(
        "from linearlab.convert import LinearizeConfig, linearize_\n"
        'linearize_(model, LinearizeConfig(method="liger"))  # or "liger_gdn"; then finetune_lora only'
    ),
    claim=(
        "Recovers 93% of the Transformer LLM's performance with 0.02% of its pre-training tokens "
        "(about 0.02B), for models from 1B to 8B parameters, beating LoLCATs at lower cost (abstract)."
    ),
    figures=("linearize:liger *", "linearize:liger_gdn *"),
)

declare_paper(
    arxiv="2602.02180",
    short="STILL",
    title="STILL: Selecting Tokens for Intra-Layer Hybrid Attention to Linearize LLMs",
    authors="Meng, Huo, Luo, Guan, Zhang, Li, Zhang",
    area=LINEARIZE,
    status="partial",
    objects=(
        "linearlab.convert.LinearizeConfig",
        "linearlab.convert.linearize_",
        "linearlab.layers.feature_maps.NormPreservingMap",
        "linearlab.ops.chunk_still_attn",
        "linearlab.ops.fused_recurrent_still_attn",
        "linearlab.ops.naive_still_attn",
    ),
    registered=("linearize method:still", "feature map:norm_preserving"),
    recipes=("linearize",),
    usage=(
        "from linearlab.convert import LinearizeConfig, linearize_\n"
        'linearize_(model, LinearizeConfig(method="still", budget=32, block_size=16))  # salient tokens keep softmax'
    ),
    claim=(
        "Matches or beats the original pretrained model on commonsense and general reasoning, and "
        "improves by up to 86.2% (relative) over prior linearised attentions on long-context "
        "benchmarks (abstract)."
    ),
    figures=("linearize:still *",),
    note=(
        "Designed from the abstract alone: the paper's exact self-saliency score, NP-Map formula and "
        "training recipe were not available; the choices made are in src/linearlab/ops/still_attn/README.md."
    ),
)
