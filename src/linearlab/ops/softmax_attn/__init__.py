"""Softmax attention (causal, sliding window, packed varlen) and a KV-cache decoding step. See README.md."""

from linearlab.ops.softmax_attn.naive import naive_attention
from linearlab.ops.softmax_attn.sdpa import attention, attention_step

__all__ = ["attention", "attention_step", "naive_attention"]
