"""Normalisation layers: a small factory, SLAB's progressive re-parameterised BatchNorm, and the
norms used inside mixers (:class:`SimpleRMSNorm`, :class:`GatedRMSNorm`, :func:`l2norm`).

``RepBN`` follows "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive
Re-parameterized Batch Normalization" (Guo, Chen, Tang, Wang, ICML 2024, arXiv 2405.11582):

    RepBN(x)  = BN(x) + eta * x                       (eta: learnable scalar, init 1)
    PRepBN(x) = gamma * LN(x) + (1 - gamma) * RepBN(x)

``gamma`` starts at 1 (pure LayerNorm) and is annealed linearly to 0 over ``warmup_steps`` calls
of :meth:`RepBN.step` (after ``hold_steps`` of pure LayerNorm). Once ``gamma == 0`` and the module
is in eval mode, RepBN is a per-channel affine map, so it can be folded into the next
``nn.Linear`` (:meth:`RepBN.fuse_into`) or replaced by a :class:`ChannelAffine`: inference then
pays for no normalisation at all, which is the paper's point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.precision import compute_dtype
from linearlab.ops.utils import l2norm  # noqa: F401  (re-exported: one definition for ops and layers)

NORMS = ("rmsnorm", "layernorm", "repbn")


class ChannelAffine(nn.Module):
    """``y = x * weight + bias`` per channel: what an eval-mode, fully annealed RepBN reduces to.

    Args:
        dim: number of channels D (last axis of the input).

    Shapes: ``x: [..., D] -> [..., D]``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


class RepBN(nn.Module):
    """Progressive re-parameterised BatchNorm (SLAB's PRepBN) for token sequences.

    Output ``gamma * LayerNorm(x) + (1 - gamma) * (BatchNorm(x) + eta * x)``, where BatchNorm's
    statistics are taken over all (batch, time) tokens of the input.

    Warning:
        In TRAINING mode the BatchNorm statistics mix every token of the batch, including later
        time steps, so a token's output depends on the future: the layer is not causal and a
        training-mode forward cannot be split into prefix + continuation. In EVAL mode it uses
        the running statistics and acts on each token alone (causal, streamable).

    Args:
        dim: channels D.
        warmup_steps: number of :meth:`step` calls over which ``gamma`` goes linearly from 1 to
            0 (default 1000; 0 means pure RepBN from the start).
        hold_steps: pure-LayerNorm steps before the annealing starts (SLAB's ``warm``; default 0).
        eps: epsilon of both LayerNorm and BatchNorm (default 1e-5).
        momentum: BatchNorm running-statistics momentum (default 0.1).

    Shapes: ``x: [B, T, D]`` (or ``[N, D]``) ``-> same shape``.

    Example:
        >>> norm = RepBN(64, warmup_steps=100)
        >>> y = norm(torch.randn(2, 10, 64)); norm.step()
    """

    def __init__(
        self,
        dim: int,
        warmup_steps: int = 1000,
        hold_steps: int = 0,
        eps: float = 1e-5,
        momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if warmup_steps < 0:
            raise ValueError(f"RepBN: warmup_steps must be >= 0, got {warmup_steps}")
        if hold_steps < 0:
            raise ValueError(f"RepBN: hold_steps must be >= 0, got {hold_steps}")
        self.dim = dim
        self.warmup_steps = warmup_steps
        self.hold_steps = hold_steps
        self.ln = nn.LayerNorm(dim, eps=eps)
        self.bn = nn.BatchNorm1d(dim, eps=eps, momentum=momentum)
        self.eta = nn.Parameter(torch.ones(1))
        # a buffer, so the schedule position is saved in checkpoints and restored on resume
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    @property
    def gamma(self) -> float:
        """Current LayerNorm weight in [0, 1]: 1 during ``hold_steps``, then linear to 0."""
        done = int(self.num_steps) - self.hold_steps
        if done <= 0:
            return 1.0 if self.warmup_steps > 0 or self.hold_steps > 0 else 0.0
        if self.warmup_steps == 0:
            return 0.0
        return max(0.0, 1.0 - done / self.warmup_steps)

    @torch.no_grad()
    def step(self) -> None:
        """Advance the LayerNorm -> RepBN schedule by one training step."""
        self.num_steps += 1

    def _repbn(self, x: torch.Tensor) -> torch.Tensor:
        # BatchNorm1d wants [N, C]: every (batch, time) token is one sample
        flat = x.reshape(-1, self.dim)
        return self.bn(flat).reshape(x.shape) + self.eta * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"RepBN: expected last dim {self.dim}, got input of shape {tuple(x.shape)}")
        gamma = self.gamma
        if gamma >= 1.0:
            return self.ln(x)
        if gamma <= 0.0:
            return self._repbn(x)
        return gamma * self.ln(x) + (1.0 - gamma) * self._repbn(x)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) with ``RepBN(x) == x * scale + shift`` in eval mode, both ``[D]``."""
        if self.training:
            raise ValueError("RepBN: fusing needs eval mode (running statistics); call model.eval() first")
        if self.gamma > 0.0:
            raise ValueError(
                f"RepBN: cannot fuse while LayerNorm still contributes (gamma={self.gamma:.3f} after "
                f"{int(self.num_steps)} of {self.hold_steps + self.warmup_steps} steps); fuse after the warmup"
            )
        bn = self.bn
        inv_std = torch.rsqrt(bn.running_var + bn.eps)
        weight = bn.weight if bn.affine else torch.ones_like(inv_std)
        bias = bn.bias if bn.affine else torch.zeros_like(inv_std)
        scale = weight * inv_std + self.eta
        shift = bias - bn.running_mean * weight * inv_std
        return scale.detach(), shift.detach()

    @torch.no_grad()
    def to_affine(self) -> ChannelAffine:
        """A :class:`ChannelAffine` equal to this module (eval mode, ``gamma == 0``)."""
        scale, shift = self.affine()
        affine = ChannelAffine(self.dim).to(device=scale.device, dtype=scale.dtype)
        affine.weight.copy_(scale)
        affine.bias.copy_(shift)
        return affine

    @torch.no_grad()
    def fuse_into(self, linear: nn.Linear) -> nn.Linear:
        """A new ``nn.Linear`` computing ``linear(self(x))`` in one matmul (eval mode, ``gamma == 0``).

        ``W' = W * scale`` (column-wise) and ``b' = b + W @ shift``; ``linear`` is not modified.
        """
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"RepBN.fuse_into: expected an nn.Linear, got {type(linear).__name__}")
        if linear.in_features != self.dim:
            raise ValueError(
                f"RepBN.fuse_into: linear.in_features={linear.in_features} does not match RepBN dim={self.dim}"
            )
        scale, shift = self.affine()
        weight = linear.weight
        fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
        fused = fused.to(device=weight.device, dtype=weight.dtype)
        fused.weight.copy_(weight * scale.to(weight.dtype))
        bias = weight @ shift.to(weight.dtype)
        if linear.bias is not None:
            bias = bias + linear.bias
        fused.bias.copy_(bias)
        return fused


def make_norm(kind: str, dim: int, eps: float = 1e-5, repbn_warmup_steps: int = 1000) -> nn.Module:
    """Build a norm by name: ``"rmsnorm"``, ``"layernorm"`` or ``"repbn"`` (see :class:`RepBN`).

    Shapes: ``x: [..., D] -> [..., D]`` with ``D == dim``.
    """
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "repbn":
        return RepBN(dim, warmup_steps=repbn_warmup_steps, eps=eps)
    raise ValueError(f"norm: unknown kind {kind!r}; allowed: {', '.join(NORMS)}")


def repbn_modules(model: nn.Module) -> list[RepBN]:
    """All :class:`RepBN` modules inside ``model`` (in ``named_modules`` order)."""
    return [m for m in model.modules() if isinstance(m, RepBN)]


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class SimpleRMSNorm(nn.Module):
    """SimpleRMSNorm (TransNormer): ``x / RMS(x)`` over the last dim, with no affine parameters.

    The statistics are computed in ``compute_dtype(x)`` (float32, float64 for float64 input).

    Shapes: ``x: [..., D] -> [..., D]`` in x's dtype.
    """

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.to(compute_dtype(x))
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class GatedRMSNorm(nn.Module):
    """RMSNorm over the last dim times ``swish(gate)``: ``y = x / rms(x) * weight * silu(gate)``.

    Used per head on the read-out of GLA, DeltaNet, Gated DeltaNet and MoM (fla's
    ``FusedRMSNormGated``); computed in ``compute_dtype(x)`` (float32, float64 for float64 input).

    Args:
        hidden_size: size of the normalised last dim (the head's value dim).
        eps: added to the mean square. Default: 1e-5.
        elementwise_affine: learn a per-channel weight (init 1). Default: True.

    Shapes:
        ``x: [..., hidden_size]``, ``gate: same shape as x`` -> ``[..., hidden_size]`` in x's dtype.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-5, elementwise_affine: bool = True) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size)) if elementwise_affine else None

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.hidden_size:
            raise ValueError(f"x: last dim must be {self.hidden_size}, got shape {_shape(x)}")
        if gate.shape != x.shape:
            raise ValueError(f"gate: shape {_shape(gate)} must equal x's shape {_shape(x)}")
        dtype = compute_dtype(x)
        weight = None if self.weight is None else self.weight.to(dtype)
        y = F.rms_norm(x.to(dtype), (self.hidden_size,), weight, self.eps)
        return (y * F.silu(gate.to(dtype))).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.hidden_size}, eps={self.eps}, elementwise_affine={self.weight is not None}"
