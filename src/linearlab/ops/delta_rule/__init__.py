"""Delta rule (DeltaNet): ``S_t = S_{t-1} + beta_t k_t^T (v_t - k_t S_{t-1})``, ``o_t = (scale q_t) S_t``.

The three forms share their code with :mod:`linearlab.ops.gated_delta_rule` (the ``g = 0`` case);
see ``README.md``.
"""

from linearlab.ops.delta_rule.chunk import chunk_delta_rule
from linearlab.ops.delta_rule.naive import naive_recurrent_delta_rule
from linearlab.ops.delta_rule.recurrent import fused_recurrent_delta_rule

__all__ = ["chunk_delta_rule", "fused_recurrent_delta_rule", "naive_recurrent_delta_rule"]
