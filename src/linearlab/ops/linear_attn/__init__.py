"""Causal linear attention (no decay), optionally with the Katharopoulos denominator. See README.md."""

from linearlab.ops.linear_attn.chunk import chunk_linear_attn
from linearlab.ops.linear_attn.naive import naive_recurrent_linear_attn
from linearlab.ops.linear_attn.recurrent import fused_recurrent_linear_attn

__all__ = ["chunk_linear_attn", "fused_recurrent_linear_attn", "naive_recurrent_linear_attn"]
