"""Gated Linear Attention (per-key vector gate): chunked, recurrent and naive forms.

``S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t``, ``o_t = (scale q_t) S_t``; see README.md.
"""

from linearlab.ops.gla.chunk import chunk_gla
from linearlab.ops.gla.naive import naive_recurrent_gla
from linearlab.ops.gla.recurrent import fused_recurrent_gla

__all__ = ["chunk_gla", "fused_recurrent_gla", "naive_recurrent_gla"]
