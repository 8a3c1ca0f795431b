"""Non-causal (bidirectional) linear attention for token grids, optionally mean-normalised. See README.md."""

from linearlab.ops.noncausal_linear_attn.fused import fused_noncausal_linear_attn
from linearlab.ops.noncausal_linear_attn.naive import naive_noncausal_linear_attn

__all__ = ["fused_noncausal_linear_attn", "naive_noncausal_linear_attn"]
