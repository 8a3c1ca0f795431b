"""Model surgery, in place, in the style of torchao's ``quantize_(model, config, filter_fn)``.

- :func:`linearize_` / :class:`LinearizeConfig`: softmax attention -> T2R, Hedgehog or LoLCATs
  (Hugging Face Llama / Mistral / Qwen2 and linearlab's ``MixerLM``);
- :func:`distill_attention`: stage 1, train the new feature maps (and window factors) to mimic
  the softmax attention they replaced;
- :func:`finetune_lora`: stage 2, next-token fine-tuning with LoRA from ``peft``, merged afterwards;
- :func:`convert_`: swap ``nn.Linear`` layers for the drop-in layers of :mod:`linearlab.layers.linear`.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "LinearizeConfig": "linearlab.convert.linearize",
    "linearize_": "linearlab.convert.linearize",
    "linearized_modules": "linearlab.convert.linearize",
    "StageResult": "linearlab.convert.distill",
    "attention_agreement": "linearlab.convert.distill",
    "distill_attention": "linearlab.convert.distill",
    "finetune_lora": "linearlab.convert.lora",
    "convert_": "linearlab.convert.linear_swap",
    "quantize_": "linearlab.convert.quantize",
    "sparsify_": "linearlab.convert.sparsify",
    "assign_bits": "linearlab.convert.quantize",
    "quantvla_calibrate_": "linearlab.convert.quantvla",
    "apply_lora_mixer_": "linearlab.convert.lora_mixer",
    "LoRAMixerConfig": "linearlab.convert.lora_mixer",
    "restore_layers_": "linearlab.convert.restore",
    "interpolate_layers_": "linearlab.convert.restore",
    "sweep_restore": "linearlab.convert.restore",
    "linearize_dit_": "linearlab.convert.linearize_dit",
    "distillation_loss": "linearlab.convert.linearize_dit",
    "linear_layers": "linearlab.convert.linear_swap",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'linearlab.convert' has no attribute {name!r}")
