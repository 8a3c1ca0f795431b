"""Rotary position embedding (RoPE) and the xPos length-extrapolation scale.

RoPE (Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding", arXiv 2104.09864)
rotates pairs of channels of ``q`` and ``k`` by a position-dependent angle, so ``q_t . k_s`` depends
only on ``t - s``. We use the "half split" pairing (channel ``i`` with ``i + D/2``), as GPT-NeoX and
LLaMA do. xPos (Sun et al., "A Length-Extrapolatable Transformer", arXiv 2212.10554) additionally
scales ``q_t`` by ``zeta**(t / scale_base)`` and ``k_s`` by ``zeta**(-s / scale_base)``, so the
product decays smoothly with ``t - s``.
"""

from __future__ import annotations

import torch
from torch import nn


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE for ``[B, T, H, D]`` tensors (``D`` even).

    Args:
        dim: rotated head dimension ``D`` (must be even).
        base: wavelength base. Default: 10000.

    Example:
        >>> rope = RotaryEmbedding(8)
        >>> q = rope(torch.randn(1, 5, 2, 8), offset=3)  # positions 3..7
    """

    inv_freq: torch.Tensor

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"dim: rotary embedding needs a positive even head dim, got {dim}")
        self.dim = dim
        self.base = base
        # a buffer (not a parameter): follows .to(device) but is not trained and not saved
        self.register_buffer(
            "inv_freq", base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim), persistent=False
        )

    def cos_sin(
        self, offset: int, length: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``cos, sin: [length, D]`` for positions ``offset .. offset + length - 1``."""
        # angles in float64 so that large positions keep their precision before the cast
        pos = torch.arange(offset, offset + length, dtype=torch.float64, device=device)
        angles = torch.outer(pos, self.inv_freq.to(device))
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x: [B, T, H, D]`` whose first token sits at absolute position ``offset``."""
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"x: expected [B, T, H, {self.dim}], got shape {list(x.shape)}")
        cos, sin = self.cos_sin(offset, x.shape[1], x.dtype, x.device)
        cos, sin = cos[:, None, :], sin[:, None, :]
        return x * cos + _rotate_half(x) * sin


def xpos_scale(
    offset: int,
    length: int,
    dim: int,
    dtype: torch.dtype,
    device: torch.device,
    gamma: float = 0.4,
    scale_base: float = 512.0,
) -> torch.Tensor:
    """xPos scale ``[length, D]`` for positions ``offset ..``: multiply ``q`` by it and divide ``k`` by it.

    ``zeta_i = (2i / D + gamma) / (1 + gamma) < 1`` for pair ``i``, raised to ``position / scale_base``.
    The scale is relative in ``t - s`` after the q/k product, so any fixed origin is valid; it is
    bounded only for moderate positions (the paper re-centres blocks for very long contexts).
    """
    if dim % 2:
        raise ValueError(f"dim: xPos needs an even head dim, got {dim}")
    zeta = (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim + gamma) / (1 + gamma)
    pos = torch.arange(offset, offset + length, dtype=torch.float64, device=device)
    scale = zeta[None, :] ** (pos[:, None] / scale_base)
    return torch.cat((scale, scale), dim=-1).to(dtype)
