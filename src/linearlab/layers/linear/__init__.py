"""Drop-in replacements for ``nn.Linear`` (each with ``from_linear``), applied with
:func:`linearlab.convert.convert_`. They load on first use, so importing the package stays cheap."""

import importlib

_LAZY = {
    "QuartetLinear": "quartet",
    "QuartetConfig": "quartet",
    "LoRAMixerLinear": "lora_mixer",
    "RSparseLinear": "r_sparse",
    "RSparseConfig": "r_sparse",
    "MemoryLayer": "memory_layer",
    "MemoryLayerConfig": "memory_layer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"linearlab.layers.linear.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'linearlab.layers.linear' has no attribute {name!r}")
