"""Assembled networks: ``ModelConfig`` + ``MixerLM`` (any mixer or hybrid) and one HF wrapper.

``LinearLabConfig`` / ``LinearLabForCausalLM`` live in ``linearlab.models.hf`` and are loaded
lazily (importing transformers is slow); importing that module registers them with
``AutoConfig`` / ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import importlib

from linearlab.models.config import ModelConfig
from linearlab.models.lm import LMOutput, MixerLM, fuse_repbn_

_LAZY = {"LinearLabConfig": "linearlab.models.hf", "LinearLabForCausalLM": "linearlab.models.hf"}

__all__ = ["LMOutput", "LinearLabConfig", "LinearLabForCausalLM", "MixerLM", "ModelConfig", "fuse_repbn_"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'linearlab.models' has no attribute {name!r}")
