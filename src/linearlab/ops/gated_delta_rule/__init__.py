"""Gated delta rule (Gated DeltaNet; the default memory of Mixture-of-Memories).

``S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - k_t exp(g_t) S_{t-1})``, ``o_t = (scale q_t) S_t``.
All three forms take ``(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False,
use_qk_l2norm_in_kernel=False, cu_seqlens=None)``; see ``README.md``.
"""

from linearlab.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
from linearlab.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from linearlab.ops.gated_delta_rule.recurrent import fused_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule", "naive_recurrent_gated_delta_rule"]
