"""Gated delta rule (Gated DeltaNet; the default memory of Mixture-of-Memories).

``S_t = exp(g_t) S_{t-1} + beta_t k_t^T (v_t - k_t exp(g_t) S_{t-1})``, ``o_t = (scale q_t) S_t``.
Signatures are fla 0.6's: the chunk and naive forms take ``(q, k, v, g, beta, scale, ...)``, the
recurrent form ``(q, k, v, g, gk, gv, beta, scale, ...)`` (pass ``beta`` by keyword); see ``README.md``.
"""

from linearlab.ops.gated_delta_rule.chunk import chunk_gated_delta_rule
from linearlab.ops.gated_delta_rule.naive import naive_recurrent_gated_delta_rule
from linearlab.ops.gated_delta_rule.recurrent import fused_recurrent_gated_delta_rule

__all__ = ["chunk_gated_delta_rule", "fused_recurrent_gated_delta_rule", "naive_recurrent_gated_delta_rule"]
