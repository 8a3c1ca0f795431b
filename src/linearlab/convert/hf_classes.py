"""Hugging Face classes that save and reload linearised models through the Auto classes.

``linearize_`` on a Hugging Face model records what it did in ``config.linearize``
(``{"config": LinearizeConfig fields, "layers": [replaced layer indices]}``) and moves the model
and its config to subclasses made here: ``LlamaForCausalLM`` becomes
``LinearizedLlamaForCausalLM`` with ``model_type = "linearlab_linearized_llama"``, and so on for
Mistral, Qwen2 and linearlab's own ``LinearLabForCausalLM``. The subclasses add no weights and no
behaviour except that constructing one from a config with ``linearize`` rebuilds the linearised
layers, so ``from_pretrained`` fills feature maps and window factors from the checkpoint.

Importing :mod:`linearlab` registers these model types with ``AutoConfig`` /
``AutoModelForCausalLM`` as soon as ``transformers`` is imported (see :mod:`linearlab.hf_registration`).
"""

from __future__ import annotations

import importlib
from functools import cache

from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

#: base causal-LM classes that have a linearised twin: (module, model class, config class)
BASES = {
    "llama": ("transformers.models.llama.modeling_llama", "LlamaForCausalLM", "LlamaConfig"),
    "mistral": ("transformers.models.mistral.modeling_mistral", "MistralForCausalLM", "MistralConfig"),
    "qwen2": ("transformers.models.qwen2.modeling_qwen2", "Qwen2ForCausalLM", "Qwen2Config"),
    "linearlab": ("linearlab.models.hf", "LinearLabForCausalLM", "LinearLabConfig"),
}


def _base_classes(family: str) -> tuple[type, type]:
    module_name, model_name, config_name = BASES[family]
    module = importlib.import_module(module_name)
    model_cls = getattr(module, model_name)
    return model_cls, model_cls.config_class


@cache
def _make(family: str) -> tuple[type, type]:
    base_model, base_config = _base_classes(family)
    config_cls = type(
        f"Linearized{base_config.__name__}",
        (base_config,),
        {"model_type": f"linearlab_linearized_{base_config.model_type}", "__module__": __name__},
    )

    def __init__(self, config, *args, **kwargs):  # noqa: N807 - the subclass's constructor
        base_model.__init__(self, config, *args, **kwargs)
        if getattr(config, "linearize", None):
            from linearlab.convert.linearize import apply_saved_linearization

            apply_saved_linearization(self)

    model_cls = type(
        f"Linearized{base_model.__name__}",
        (base_model,),
        {"config_class": config_cls, "__init__": __init__, "__module__": __name__},
    )
    return config_cls, model_cls


def linearized_classes(model_cls: type[PreTrainedModel]) -> tuple[type, type]:
    """``(config class, model class)`` of the linearised twin of ``model_cls`` (itself if already one)."""
    for family in BASES:
        config_cls, linear_cls = _make(family)
        if issubclass(model_cls, linear_cls):
            return config_cls, linear_cls
    for family in BASES:
        base_model, _ = _base_classes(family)
        if model_cls is base_model:
            return _make(family)
    supported = ", ".join(BASES[f][1] for f in BASES)
    raise ValueError(
        f"model: saving a linearised {model_cls.__name__} is not supported; supported: {supported}"
    )


def register_auto_classes() -> None:
    """Register every linearised twin with ``AutoConfig`` and ``AutoModelForCausalLM``.

    A family whose base module is still being imported (``linearlab.models.hf`` importing
    transformers is what set off this registration) is skipped; that module calls this again
    when it is complete.
    """
    for family in BASES:
        try:
            config_cls, model_cls = _make(family)
        except AttributeError:  # the base module is half initialised: it registers later
            continue
        AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
        AutoModelForCausalLM.register(config_cls, model_cls, exist_ok=True)


register_auto_classes()
