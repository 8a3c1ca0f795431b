"""Simple GLA: linear attention with one scalar log decay per head and token (RetNet, Mamba-2-like).

``S_t = exp(g_t + g_gamma) S_{t-1} + k_t^T v_t``, ``o_t = scale * q_t S_t``. See README.md.
"""

from linearlab.ops.simple_gla.chunk import chunk_retention, chunk_simple_gla
from linearlab.ops.simple_gla.naive import naive_recurrent_simple_gla
from linearlab.ops.simple_gla.recurrent import fused_recurrent_retention, fused_recurrent_simple_gla

__all__ = [
    "chunk_retention",
    "chunk_simple_gla",
    "fused_recurrent_retention",
    "fused_recurrent_simple_gla",
    "naive_recurrent_simple_gla",
]
