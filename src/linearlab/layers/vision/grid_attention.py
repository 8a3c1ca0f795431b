"""Non-causal attention over 2-D token grids: softmax (the teacher), LiT and LinFusion.

Every mixer maps ``x: [B, N, D]`` with ``N = h * w`` tokens laid out row-major on an ``(h, w)`` grid to
``[B, N, D]``; all share the projection names ``q_proj, k_proj, v_proj, o_proj`` (``nn.Linear(D, D)``),
so a softmax attention's weights load into either linear one (weight inheritance).

- ``softmax``: multi-head scaled dot-product attention.
- ``lit`` (Wang et al., LiT): ``o = ReLU(Q)(ReLU(K)^T V) / (ReLU(Q) ReLU(K)^T 1) + DWC_5x5(V)``, any
  number of heads; the depthwise conv restores the local detail linear attention blurs.
- ``linfusion`` (Liu et al., LinFusion): ``q = W_q(x + MLP_q(x))``, ``k = W_k(x + MLP_k(x))``,
  ``phi = elu + 1``, mean-normalised non-causal linear attention; ``MLP = Linear -> LayerNorm ->
  LeakyReLU -> Linear`` with the last layer zero-initialised, so right after inheritance
  ``q = W_q x`` exactly.

``normalize=False`` turns the linear mixers into the un-normalised sum ``phi(q) sum_j phi(k_j)^T v_j``
(Mamba2-like), whose scale grows with the token count: the comparison LinFusion draws.

These mixers are not causal, so they are not in the causal mixer registry
(:mod:`linearlab.layers.registry`); they live in :data:`GRID_MIXERS`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from linearlab.ops.noncausal_linear_attn import fused_noncausal_linear_attn
from linearlab.registry import Registry

GRID_MIXERS: Registry[type[nn.Module]] = Registry("grid mixer", argument="attention")


def create_grid_mixer(name: str, d_model: int, num_heads: int, **kwargs) -> nn.Module:
    """Build the grid mixer called ``name`` (``softmax``, ``lit``, ``linfusion``)."""
    return GRID_MIXERS.create(name, d_model=d_model, num_heads=num_heads, **kwargs)


def check_grid(x: torch.Tensor, grid: tuple[int, int], d_model: int) -> tuple[int, int]:
    """``x`` must be ``[B, h * w, d_model]``; returns ``(h, w)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x: expected tokens [B, N, D] (3 dims), got {got}")
    if len(grid) != 2 or any(not isinstance(g, int) or g < 1 for g in grid):
        raise ValueError(f"grid: expected (h, w) positive ints, got {grid!r}")
    h, w = grid
    if x.shape[1] != h * w:
        raise ValueError(f"grid: (h, w) = {tuple(grid)} holds {h * w} tokens but x has N = {x.shape[1]}")
    if x.shape[2] != d_model:
        raise ValueError(f"x: expected D = {d_model} features in dim 2, got {x.shape[2]}")
    return h, w


class _GridAttention(nn.Module):
    """Shared projections and head split."""

    def __init__(self, d_model: int, num_heads: int) -> None:
        super().__init__()
        if isinstance(d_model, bool) or not isinstance(d_model, int) or d_model < 1:
            raise ValueError(f"d_model: expected a positive int, got {d_model!r}")
        if (
            isinstance(num_heads, bool)
            or not isinstance(num_heads, int)
            or num_heads < 1
            or d_model % num_heads
        ):
            raise ValueError(
                f"num_heads: expected a positive divisor of d_model={d_model}, got {num_heads!r}"
            )
        self.d_model, self.num_heads = d_model, num_heads
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.o_proj = nn.Linear(d_model, d_model)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, N, _ = t.shape
        return t.view(B, N, self.num_heads, self.d_model // self.num_heads)


@GRID_MIXERS.register("softmax")
class GridSoftmaxAttention(_GridAttention):
    """Multi-head softmax attention over all tokens (the DiT teacher's attention).

    Example:
        >>> attn = GridSoftmaxAttention(64, 4)
        >>> attn(torch.randn(2, 16, 64), (4, 4)).shape
        torch.Size([2, 16, 64])
    """

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x: [B, h*w, D] -> [B, h*w, D]``."""
        check_grid(x, grid, self.d_model)
        q, k, v = (self._heads(p(x)).transpose(1, 2) for p in (self.q_proj, self.k_proj, self.v_proj))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.o_proj(o.transpose(1, 2).reshape(x.shape))


@GRID_MIXERS.register("lit")
class LiTAttention(_GridAttention):
    """LiT's linear attention: ReLU features, normalised non-causal linear attention, plus a depthwise
    ``kernel_size`` conv on V over the grid.

    Args:
        d_model, num_heads: width and heads (any divisor; LiT: fewer heads are better).
        kernel_size: the depthwise conv (5).
        normalize: attention normalisation (False: un-normalised sums).
        eps: denominator epsilon.
    """

    def __init__(
        self, d_model: int, num_heads: int, kernel_size: int = 5, normalize: bool = True, eps: float = 1e-4
    ) -> None:
        super().__init__(d_model, num_heads)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd int >= 1, got {kernel_size!r}")
        self.normalize, self.eps = normalize, eps
        self.dwc = nn.Conv2d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x: [B, h*w, D] -> [B, h*w, D]``."""
        h, w = check_grid(x, grid, self.d_model)
        B, N, D = x.shape
        q = torch.relu(self._heads(self.q_proj(x)))
        k = torch.relu(self._heads(self.k_proj(x)))
        v = self.v_proj(x)
        o = fused_noncausal_linear_attn(
            q, k, self._heads(v), normalize=self.normalize, mean=self.normalize, eps=self.eps
        )
        local = self.dwc(v.transpose(1, 2).reshape(B, D, h, w)).reshape(B, D, N).transpose(1, 2)
        return self.o_proj(o.reshape(B, N, D) + local)


class _FeatureMLP(nn.Sequential):
    """LinFusion's ``Linear -> LayerNorm -> LeakyReLU -> Linear``; the last layer starts at zero."""

    def __init__(self, d: int) -> None:
        super().__init__(nn.Linear(d, d), nn.LayerNorm(d), nn.LeakyReLU(), nn.Linear(d, d))
        nn.init.zeros_(self[-1].weight)
        nn.init.zeros_(self[-1].bias)


@GRID_MIXERS.register("linfusion")
class LinFusionAttention(_GridAttention):
    """LinFusion's generalised linear attention: MLP-residual q/k, ``elu + 1`` features, mean-normalised.

    Args:
        d_model, num_heads: width and heads.
        normalize: attention normalisation (LinFusion); False gives the un-normalised sum whose scale
            grows with the token count.
        eps: denominator epsilon (LinFusion: 1e-4).
    """

    def __init__(self, d_model: int, num_heads: int, normalize: bool = True, eps: float = 1e-4) -> None:
        super().__init__(d_model, num_heads)
        self.normalize, self.eps = normalize, eps
        self.q_mlp = _FeatureMLP(d_model)
        self.k_mlp = _FeatureMLP(d_model)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x: [B, h*w, D] -> [B, h*w, D]``."""
        check_grid(x, grid, self.d_model)
        q = F.elu(self._heads(self.q_proj(x + self.q_mlp(x)))) + 1
        k = F.elu(self._heads(self.k_proj(x + self.k_mlp(x)))) + 1
        v = self._heads(self.v_proj(x))
        o = fused_noncausal_linear_attn(q, k, v, normalize=self.normalize, mean=self.normalize, eps=self.eps)
        return self.o_proj(o.reshape(x.shape))
