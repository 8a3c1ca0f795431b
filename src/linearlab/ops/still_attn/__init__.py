"""STILL intra-layer hybrid attention: softmax over the window and a bounded set of salient tokens
chosen by self-saliency at block boundaries, linear attention over the rest, one normaliser.

See README.md; the state layout is documented in ``_common.py``.
"""

from linearlab.ops.still_attn.chunk import chunk_still_attn
from linearlab.ops.still_attn.naive import naive_still_attn
from linearlab.ops.still_attn.recurrent import fused_recurrent_still_attn

__all__ = ["chunk_still_attn", "fused_recurrent_still_attn", "naive_still_attn"]
