"""MXFP4 arithmetic on CPU: FP4 (E2M1) rounding, per-block scales and the block Hadamard rotation.

MXFP4 (OCP Microscaling) stores blocks of ``32`` consecutive values along the contraction dimension
with one shared power-of-two scale (E8M0) and 4-bit elements (E2M1: sign and a magnitude in
``{0, 0.5, 1, 1.5, 2, 3, 4, 6}``). Everything here is *emulation*: values are kept in float32 but
are exactly the numbers the format can represent, so a matmul of dequantised operands equals what an
FP4 tensor core computes with fp32 accumulation (up to summation order).

Scale rules (``x`` a block, ``a = x / s`` is rounded to the E2M1 grid):

- ``"floor"`` (OCP / torchao ``ScaleCalculationMode.FLOOR``): ``s = 2^(floor(log2 max|x|) - 2)``;
  the block max lands in ``[4, 8)`` so values above 6 saturate. Bit-identical to torchao's
  ``MXTensor.to_mx(x, torch.float4_e2m1fn_x2, 32)`` (tested).
- ``"quest"`` (Quartet's forward): ``s = 2^floor(log2(c * rms(x) + 1e-8))`` with ``c = 2.92247856 / 6``,
  the Gaussian-MSE-optimal clip ``2.92 sigma`` mapped onto the FP4 maximum 6. Quartet's kernel uses
  the mean-subtracted std; ``"quest_std"`` keeps that variant for comparison (with a fixed Hadamard an
  outlier at block position 0 shifts all 32 rotated values alike, std ignores it and the block clips:
  see ``shared/notes/linear-layer-replacements.md``).
- ``"absmax_sr"`` (Quartet's backward): ``s = 2^(floor(log2 max|x|) - 2) / 0.75``, which puts the block
  max in ``[3, 6)``: nothing clips, so stochastic rounding is unbiased.
"""

from __future__ import annotations

import math

import torch

#: non-negative magnitudes of FP4 E2M1
E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
MX_BLOCK = 32
QUEST_CLIP = 2.92247856 / 6.0
SCALE_RULES = ("floor", "quest", "quest_std", "absmax_sr")


def _step(mag: torch.Tensor) -> torch.Tensor:
    """Spacing of the E2M1 grid around ``mag``: 0.5 below 2, 1 in [2, 4), 2 in [4, 6] (one mantissa bit)."""
    return torch.where(mag < 2, 0.5, torch.where(mag < 4, 1.0, 2.0))


def rtn_e2m1(a: torch.Tensor) -> torch.Tensor:
    """Round ``a`` (already divided by its scale) to the nearest E2M1 value, saturating at +-6.

    Ties go to the value with an even mantissa (``torch.round`` rounds half to even on the grid's
    spacing), as torchao's cast does. Returns float32 values on the grid, any shape.
    """
    mag = a.abs().float().clamp(max=E2M1_MAX)
    step = _step(mag)
    return torch.copysign(torch.round(mag / step) * step, a.float())


def sr_e2m1(a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Stochastically round ``a`` to a neighbouring E2M1 value: ``E[sr(a)] = a`` for ``|a| <= 6``.

    ``P(round up) = (|a| - lo) / (hi - lo)`` between the two grid points around ``|a|``; values beyond
    6 saturate (the caller's scale must keep them inside, as ``"absmax_sr"`` does).
    """
    mag = a.abs().float().clamp(max=E2M1_MAX)
    step = _step(mag)
    lo = torch.floor(mag / step) * step
    u = torch.rand(mag.shape, generator=generator, device=mag.device)
    q = lo + step * (u * step < mag - lo)
    return torch.copysign(q, a.float())


def check_block_size(block_size: int) -> int:
    """MX formats share one scale per 32 elements; other sizes are not MXFP4."""
    if block_size != MX_BLOCK:
        raise ValueError(f"block_size: MXFP4 blocks hold exactly {MX_BLOCK} elements, got {block_size!r}")
    return block_size


def to_blocks(x: torch.Tensor, block: int = MX_BLOCK) -> tuple[torch.Tensor, int]:
    """``x: [..., K] -> ([..., ceil(K / block), block], K)``, zero-padding the last dim (zeros change no
    dot product and never raise a block's scale)."""
    k = x.shape[-1]
    pad = (-k) % block
    if pad:
        x = torch.nn.functional.pad(x, (0, pad))
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block), k


def from_blocks(xb: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`to_blocks`: ``[..., G, block] -> [..., k]``."""
    return xb.reshape(*xb.shape[:-2], -1)[..., :k]


def block_scale(xb: torch.Tensor, rule: str) -> torch.Tensor:
    """Per-block scale ``[..., G, 1]`` of blocks ``xb: [..., G, 32]`` under ``rule`` (see module doc)."""
    xb = xb.float()
    if rule == "floor" or rule == "absmax_sr":
        amax = xb.abs().amax(dim=-1, keepdim=True)
        # an all-zero block: any scale works; use 1 so 0/s stays 0 (and log2(0) is avoided)
        exp = torch.floor(torch.log2(torch.where(amax > 0, amax, torch.ones_like(amax)))) - 2
        s = torch.exp2(exp)
        return s / 0.75 if rule == "absmax_sr" else s
    if rule == "quest":
        spread = xb.pow(2).mean(dim=-1, keepdim=True).sqrt()
    elif rule == "quest_std":
        spread = (
            (xb.pow(2).mean(dim=-1, keepdim=True) - xb.mean(dim=-1, keepdim=True).pow(2)).clamp_min(0).sqrt()
        )
    else:
        raise ValueError(f"rule: expected one of {SCALE_RULES}, got {rule!r}")
    return torch.exp2(torch.floor(torch.log2(QUEST_CLIP * spread + 1e-8)))


def mx_quantize(
    x: torch.Tensor,
    rule: str = "floor",
    stochastic: bool = False,
    block_size: int = MX_BLOCK,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise ``x: [..., K]`` to MXFP4 along its last dim and dequantise again.

    Returns ``(x_hat, trust)``, both ``[..., K]``: ``x_hat`` float32 on the format's grid (scale times
    an E2M1 value) and ``trust`` the mask ``|x / s| <= 6`` of values that did not saturate (the
    straight-through estimator passes gradients only there).
    """
    check_block_size(block_size)
    xb, k = to_blocks(x.float(), block_size)
    s = block_scale(xb, rule)
    a = xb / s
    q = sr_e2m1(a, generator) if stochastic else rtn_e2m1(a)
    return from_blocks(q * s, k), from_blocks(a.abs() <= E2M1_MAX, k)


def hadamard_matrix(
    n: int = MX_BLOCK, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Sylvester Hadamard matrix ``[n, n]`` divided by ``sqrt(n)``: orthogonal and symmetric (``H H = I``)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"n: a Sylvester Hadamard matrix needs a power of two, got {n}")
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(n)).to(dtype=dtype, device=device)


def block_rotate(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Multiply each consecutive block of ``n = h.shape[0]`` entries of the last dim by ``h``:
    ``x: [..., K] -> [..., K]`` with ``K`` a multiple of ``n`` (pad first, see :func:`pad_to_block`).

    With an orthogonal ``h`` and both matmul operands rotated along their shared inner dim,
    ``(X R)(W R)^T = X W^T``.
    """
    n = h.shape[0]
    if x.shape[-1] % n:
        raise ValueError(
            f"x: last dim {x.shape[-1]} is not a multiple of the rotation block {n}; pad it first"
        )
    xb = x.reshape(*x.shape[:-1], -1, n)
    return (xb @ h.to(xb.dtype)).reshape(x.shape)


def pad_to_block(x: torch.Tensor, block: int = MX_BLOCK, dim: int = -1) -> torch.Tensor:
    """Zero-pad ``x`` along ``dim`` to a multiple of ``block`` (zeros add nothing to a dot product)."""
    pad = (-x.shape[dim]) % block
    if not pad:
        return x
    shape = list(x.shape)
    shape[dim] = pad
    return torch.cat([x, x.new_zeros(shape)], dim=dim)
