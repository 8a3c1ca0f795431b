"""Lightning Attention-2 (TransNormerLLM): linear attention with a fixed per-head, per-layer decay.

Implemented on simple GLA with ``g_gamma = lightning_attn_decay(H, layer_idx, num_layers)``.
"""

from linearlab.ops.lightning_attn._common import lightning_attn_decay
from linearlab.ops.lightning_attn.chunk import chunk_lightning_attn
from linearlab.ops.lightning_attn.recurrent import fused_recurrent_lightning_attn

__all__ = ["chunk_lightning_attn", "fused_recurrent_lightning_attn", "lightning_attn_decay"]
