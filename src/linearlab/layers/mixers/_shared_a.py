"""Small pieces shared by the attention-family mixers (softmax, linear attention, TransNormer, ...)."""

from __future__ import annotations

import torch
from torch import nn


def check_heads(d_model: int, num_heads: int) -> int:
    """Return the head dim, with a clear error when ``num_heads`` does not divide ``d_model``."""
    if num_heads < 1 or d_model % num_heads:
        raise ValueError(f"num_heads: must be >= 1 and divide d_model = {d_model}, got {num_heads}")
    return d_model // num_heads


def check_choice(name: str, value: str, allowed: tuple[str, ...] | list[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, T, H * D] -> [B, T, H, D]``."""
    return t.unflatten(-1, (num_heads, -1))


def merge_heads(t: torch.Tensor) -> torch.Tensor:
    """``[B, T, H, D] -> [B, T, H * D]``."""
    return t.flatten(-2)


def get_position(state: dict | None) -> int:
    """Absolute position of the next token (0 at the start of a sequence)."""
    return 0 if state is None else int(state["pos"])


def position_tensor(pos: int, device: torch.device) -> torch.Tensor:
    # kept as a 0-dim tensor so that the whole state is a dict of tensors
    return torch.tensor(pos, dtype=torch.long, device=device)


class SimpleRMSNorm(nn.Module):
    """SimpleRMSNorm (TransNormer): ``x / RMS(x)`` over the last dim, with no affine parameters."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def linear_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state: torch.Tensor | None,
    *,
    normalize: bool,
    scale: float | None = None,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal linear attention with a carried state: ``o_t = q_t S_t`` (optionally ``/ q_t z_t``).

    ``q, k: [B, T, H, K]``, ``v: [B, T, H, V]``; ``state: [B, H, K, V]`` (``[B, H, K, V + 1]`` with
    ``normalize``: the running key sum ``z`` rides along as an extra value column of ones, so one
    op call gives numerator and denominator and one tensor carries both). Prefill uses
    ``chunk_linear_attn``; single-token steps use ``fused_recurrent_linear_attn``.
    """
    from linearlab.ops import chunk_linear_attn, fused_recurrent_linear_attn

    if normalize:
        v = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)
        scale = 1.0  # cancels between numerator and denominator
    op = fused_recurrent_linear_attn if q.shape[1] == 1 else chunk_linear_attn
    o, final = op(q, k, v, scale=scale, initial_state=state, output_final_state=True, normalize=False)
    if normalize:
        o = o[..., :-1] / (o[..., -1:] + eps)
    return o, final


def simple_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g_gamma: torch.Tensor,
    state: torch.Tensor | None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear attention with a constant per-head log decay ``g_gamma: [H]`` and a carried state."""
    from linearlab.ops import chunk_simple_gla, fused_recurrent_simple_gla

    op = fused_recurrent_simple_gla if q.shape[1] == 1 else chunk_simple_gla
    return op(q, k, v, g_gamma=g_gamma, scale=scale, initial_state=state, output_final_state=True)
