"""Calling a causal LM the same way whatever it is: Hugging Face model, ``MixerLM``, or a peft wrapper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lm_logits(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``input_ids: [B, T]`` -> logits ``[B, T, V]``, without a cache."""
    from linearlab.models.lm import MixerLM

    inner = getattr(model, "module", model)  # DDP under torchrun
    if hasattr(inner, "get_base_model"):  # a peft wrapper
        inner = inner.get_base_model()
    if isinstance(inner, MixerLM):
        return model(input_ids).logits
    return model(input_ids=input_ids, use_cache=False).logits


def next_token_loss(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token ``t + 1`` from tokens ``<= t`` (nats)."""
    logits = lm_logits(model, input_ids)
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), input_ids[:, 1:].flatten())


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
