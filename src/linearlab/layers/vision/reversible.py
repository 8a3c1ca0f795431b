"""Reversible coupling blocks whose activations are recomputed in backward, not stored.

One block splits the channels into halves ``(x1, x2)`` and computes

    y1 = x1 + F(x2),        y2 = x2 + G(y1)

with the exact inverse ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)`` (Gomez et al.'s RevNet coupling, used
with MBConv ``F``, ``G`` by Pendse et al.'s memory-efficient 3-D U-Net). :class:`ReversibleSequence`
runs a stack of blocks inside one custom :class:`torch.autograd.Function` that saves only the stack's
output. Its backward walks the blocks from last to first: it rebuilds each block's input from its
output, re-runs ``F`` and ``G`` under autograd for that block alone and returns the input and
parameter gradients. Saved activations are therefore one block's worth however deep the stack is;
the price is one extra forward of ``F`` and ``G`` per block.

Requirements on ``F`` and ``G``: deterministic, and no state updated in forward (no dropout, no
BatchNorm in training mode, whose running statistics would be updated twice): use GroupNorm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ReversibleBlock(nn.Module):
    """``(x1, x2) -> (x1 + F(x2), x2 + G(x1 + F(x2)))`` on the two channel halves of ``x``.

    Args:
        f, g: modules mapping ``[B, C/2, ...]`` to the same shape.
    """

    def __init__(self, f: nn.Module, g: nn.Module) -> None:
        super().__init__()
        self.f, self.g = f, g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, ...] -> [B, C, ...]`` (C even); plain autograd (stores activations)."""
        x1, x2 = _halves(x)
        y1 = x1 + self.f(x2)
        return torch.cat([y1, x2 + self.g(y1)], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The input that gives ``y``: ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``."""
        y1, y2 = _halves(y)
        x2 = y2 - self.g(y1)
        return torch.cat([y1 - self.f(x2), x2], dim=1)

    def backward_pass(
        self, y: torch.Tensor, dy: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, ...]]:
        """From the output ``y`` and its gradient ``dy``: ``(x, dx, parameter grads)`` of this block.

        Only ``G(y1)`` and then ``F(x2)`` are re-run under autograd; the parameter grads are in
        ``self.parameters()`` order (None for a parameter the block does not use).
        """
        y1, y2 = _halves(y.detach())
        dy1, dy2 = _halves(dy)
        params_f = list(self.f.parameters())
        params_g = list(self.g.parameters())
        with torch.enable_grad():
            y1_ = y1.requires_grad_(True)
            gy = self.g(y1_)
            d_y1, *d_g = torch.autograd.grad(gy, [y1_, *params_g], dy2, allow_unused=True)
        dy1 = dy1 + d_y1
        with torch.no_grad():
            x2 = y2 - gy
        with torch.enable_grad():
            x2_ = x2.detach().requires_grad_(True)
            fx = self.f(x2_)
            d_x2, *d_f = torch.autograd.grad(fx, [x2_, *params_f], dy1, allow_unused=True)
        with torch.no_grad():
            x1 = y1 - fx
        grads = _match_params(self, params_f, d_f, params_g, d_g)
        return torch.cat([x1, x2], dim=1).detach(), torch.cat([dy1, dy2 + d_x2], dim=1), grads


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[1] % 2:
        raise ValueError(
            f"x: a reversible block splits dim 1 into two halves; got {x.shape[1]} channels (odd)"
        )
    return x.chunk(2, dim=1)


def _match_params(block, params_f, d_f, params_g, d_g) -> tuple[torch.Tensor | None, ...]:
    """Gradients in ``block.parameters()`` order (a parameter shared by F and G gets the sum)."""
    by_id: dict[int, torch.Tensor | None] = {}
    for p, d in [*zip(params_f, d_f), *zip(params_g, d_g)]:
        if d is not None:
            prev = by_id.get(id(p))
            by_id[id(p)] = d if prev is None else prev + d
    return tuple(by_id.get(id(p)) for p in block.parameters())


class _ReversibleFunction(torch.autograd.Function):
    """Runs the blocks without a graph; saves only the output (the inputs are not kept)."""

    @staticmethod
    def forward(ctx, x, blocks, n_params, *params):  # type: ignore[override]
        ctx.blocks = blocks
        ctx.n_params = n_params
        with torch.no_grad():
            for block in blocks:
                x = block(x)
        ctx.save_for_backward(x)
        return x

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        grads: list[tuple[torch.Tensor | None, ...]] = []
        for block in reversed(ctx.blocks):
            y, dy, g = block.backward_pass(y, dy)
            grads.append(g)
        flat = [g for block_grads in reversed(grads) for g in block_grads]
        return (dy, None, None, *flat)


class ReversibleSequence(nn.Module):
    """A stack of :class:`ReversibleBlock` s; ``reversible=False`` runs the same blocks with plain autograd.

    With ``reversible=True`` (training, autograd enabled) the activations inside the stack are
    recomputed in backward from the stack's output, so the memory saved for backward does not grow
    with the number of blocks. The two modes compute the same function with the same parameters.

    Args:
        blocks: the blocks, applied in order.
        reversible: use the memory-saving custom autograd Function.

    Example:
        >>> blocks = [ReversibleBlock(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))]
        >>> ReversibleSequence(blocks)(torch.randn(2, 8, 5, 5)).shape
        torch.Size([2, 8, 5, 5])
    """

    def __init__(self, blocks: Sequence[ReversibleBlock], reversible: bool = True) -> None:
        super().__init__()
        for i, b in enumerate(blocks):
            if not isinstance(b, ReversibleBlock):
                raise TypeError(f"blocks[{i}]: expected a ReversibleBlock, got {type(b).__name__}")
        self.blocks = nn.ModuleList(blocks)
        self.reversible = reversible

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [B, C, ...] -> [B, C, ...]``."""
        _halves(x)
        if not self.reversible or not torch.is_grad_enabled() or not self.blocks:
            for block in self.blocks:
                x = block(x)
            return x
        params = [p for block in self.blocks for p in block.parameters()]
        return _ReversibleFunction.apply(x, list(self.blocks), len(params), *params)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """The input that gives ``y`` (exact up to rounding)."""
        for block in reversed(self.blocks):
            y = block.inverse(y)
        return y


class SavedTensorBytes:
    """Context manager counting the bytes autograd saves for backward (parameters excluded).

    Uses ``torch.autograd.graph.saved_tensors_hooks``; a storage saved twice is counted once.

    Example:
        >>> with SavedTensorBytes(exclude=model.parameters()) as counter:
        ...     loss = model(x).sum()
        >>> counter.bytes
    """

    def __init__(self, exclude=()) -> None:
        self._exclude = {p.untyped_storage().data_ptr() for p in exclude}
        self._seen: set[int] = set()
        self.bytes = 0

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._exclude and ptr not in self._seen:
            self._seen.add(ptr)
            self.bytes += storage.nbytes()
        return t

    def __enter__(self) -> SavedTensorBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
