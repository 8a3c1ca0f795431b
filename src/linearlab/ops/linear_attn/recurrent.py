"""Recurrent (decoding) form of causal linear attention: one ``[H, K, V]`` state update per token."""

from __future__ import annotations

import torch

from linearlab.ops.linear_attn._common import run_linear_attn
from linearlab.ops.simple_gla.recurrent import recurrent_scalar_decay
from linearlab.ops.utils import check_flag


def fused_recurrent_linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    reverse: bool = False,
    normalize: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal linear attention, token by token; args and returns as in ``chunk_linear_attn``.

    Positional order and defaults are fla 0.6's: ``reverse`` comes before ``normalize``, and
    ``normalize`` defaults to False here but to True in ``chunk_linear_attn``. ``reverse=True``
    runs from the last token to the first: ``o_t`` reads tokens ``t..T-1`` (and with ``normalize``
    ``z_t = sum_{s>=t} k_s``); the final state is the one after token 0.

    Example (decode one token with a carried state):
        >>> q = k = v = torch.randn(1, 1, 2, 8)
        >>> o, s = fused_recurrent_linear_attn(q, k, v, output_final_state=True)
        >>> o, s = fused_recurrent_linear_attn(q, k, v, initial_state=s, output_final_state=True)
    """
    reverse = check_flag("reverse", reverse)
    return run_linear_attn(
        recurrent_scalar_decay,
        q,
        k,
        v,
        scale,
        initial_state,
        output_final_state,
        normalize,
        cu_seqlens,
        reverse=reverse,
    )
