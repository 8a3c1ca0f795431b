"""Softmax attention (causal, sliding window, packed varlen) and a KV-cache decoding step. See README.md."""

from linearlab.ops.attention.naive import naive_attention
from linearlab.ops.attention.sdpa import attention, attention_step

__all__ = ["attention", "attention_step", "naive_attention"]
