"""LoLCATs hybrid attention: sliding-window softmax plus linear attention sharing one normaliser.

See README.md; the state layout is documented in ``_common.py``.
"""

from linearlab.ops.lolcats_attn.chunk import chunk_lolcats_attn
from linearlab.ops.lolcats_attn.naive import naive_lolcats_attn
from linearlab.ops.lolcats_attn.recurrent import fused_recurrent_lolcats_attn

__all__ = ["chunk_lolcats_attn", "fused_recurrent_lolcats_attn", "naive_lolcats_attn"]
