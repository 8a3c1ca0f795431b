"""Quartet: native FP4 (MXFP4) training of linear layers (arXiv 2505.14669), emulated on CPU.

Castro, Panferov, Tabesh, Sieberling, Chen, Nikdan, Ashkboos, Alistarh, "Quartet: Native FP4 Training
Can Be Optimal for Large Language Models", NeurIPS 2025 (code: IST-DASLab/Quartet). The algorithm
below follows ``shared/notes/linear-layer-replacements.md`` section 1.

For ``y = X W^T`` (``X: [N, K]``, ``W: [M, K]``, inner dim ``K`` in blocks of 32), with ``H`` the 32x32
orthonormal Hadamard matrix applied block-wise along ``K``:

Forward (QuEST): ``X_h = X H``, ``W_h = W H``; each 32-block gets the scale
``s = 2^floor(log2(0.487 rms(block)))`` and its values are rounded to the nearest FP4 (E2M1) number
(saturating at +-6); ``y = Q(X_h) Q(W_h)^T`` (the two rotations cancel, so no un-rotation).

Backward, with ``E = dL/dy``: the two gradient GEMMs run in FP4 too, each operand quantised along the
GEMM's inner dim after a block Hadamard with **fresh random signs** (``R = diag(+-1) H``, drawn anew
every call) with the no-clipping scale ``s = 2^(floor(log2 max|block|) - 2) / 0.75`` and **stochastic
rounding**, so ``E[Q(a R) Q(b R)^T] = a b^T`` (unbiased):

- ``dL/dX_h = Q(E) Q(Q(W_h)^T)^T`` (inner dim ``M``), ``dL/dW_h = Q(E^T) Q(Q(X_h)^T)^T`` (inner dim ``N``);
- then straight-through with the trust mask (``|X_h / s| <= 6``, values the forward did not clip) and
  un-rotation: ``dL/dX = (mask * dL/dX_h) H^T`` (the same for ``W``).

Master weights stay in float32 and the optimizer is unchanged. On CPU every quantised tensor is kept
as float32 numbers that MXFP4 can represent exactly (emulation, no speed-up).

Switches for ablations (the ``quartet`` recipe): ``forward`` = ``"quest"`` (RMS scale), ``"quest_std"``
(the kernel's mean-subtracted std: breaks on outliers at block position 0 with a fixed Hadamard),
``"rtn"`` (OCP absmax scale, round to nearest); ``backward`` = ``"sr"`` (Quartet), ``"rtn"``
(deterministic round-to-nearest with the OCP absmax scale: biased), ``"none"`` (float32 backward GEMMs,
straight-through only); ``hadamard=False`` drops every rotation; ``rerotate=False`` keeps the fixed
Hadamard in the backward.

Example:
    >>> layer = QuartetLinear.from_linear(nn.Linear(64, 32))
    >>> y = layer(torch.randn(4, 10, 64))          # [4, 10, 32], forward in emulated MXFP4
    >>> convert_(model, QuartetConfig(), filter_fn=lambda m, fqn: "blocks" in fqn)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from linearlab.layers.linear.mx_format import (
    MX_BLOCK,
    block_rotate,
    check_block_size,
    hadamard_matrix,
    mx_quantize,
    pad_to_block,
)
from linearlab.papers import LAYERS, declare_paper

FORWARD_QUANTIZERS = ("quest", "quest_std", "rtn")
BACKWARD_QUANTIZERS = ("sr", "rtn", "none")
_FORWARD_RULE = {"quest": "quest", "quest_std": "quest_std", "rtn": "floor"}


def random_signs(n: int, device: torch.device | None = None) -> torch.Tensor:
    """``n`` independent +-1 values (float32) from the global RNG."""
    return torch.randint(0, 2, (n,), device=device).float() * 2 - 1


def quantized_gemm(
    a: torch.Tensor, b: torch.Tensor, scheme: str, hadamard: bool, rerotate: bool
) -> torch.Tensor:
    """``a b^T`` for ``a: [P, K]``, ``b: [Q, K]`` with both operands in MXFP4 along the inner dim ``K``.

    ``scheme="sr"``: shared rotation ``R = diag(signs) H`` (fresh random signs if ``rerotate``),
    no-clip scale and stochastic rounding (unbiased); ``"rtn"``: OCP absmax scale, round to nearest
    (biased); ``"none"``: the float32 product. Returns ``[P, Q]`` float32.
    """
    if scheme == "none":
        return a.float() @ b.float().T
    a, b = pad_to_block(a.float()), pad_to_block(b.float())
    if hadamard:
        h = hadamard_matrix(MX_BLOCK, device=a.device)
        if rerotate and scheme == "sr":
            signs = random_signs(a.shape[-1], a.device)
            a, b = a * signs, b * signs
        a, b = block_rotate(a, h), block_rotate(b, h)
    if scheme == "sr":
        aq, _ = mx_quantize(a, "absmax_sr", stochastic=True)
        bq, _ = mx_quantize(b, "absmax_sr", stochastic=True)
    else:
        aq, _ = mx_quantize(a, "floor")
        bq, _ = mx_quantize(b, "floor")
    return aq @ bq.T


class QuartetMatmul(torch.autograd.Function):
    """``y = Q(X H) Q(W H)^T`` with Quartet's FP4 backward (see the module docstring).

    ``x: [N, K]``, ``w: [M, K]`` -> ``y: [N, M]`` (float32).
    """

    @staticmethod
    def forward(ctx, x, w, forward_q: str, backward_q: str, hadamard: bool, rerotate: bool):  # type: ignore[override]
        k = x.shape[-1]
        xp, wp = pad_to_block(x.float()), pad_to_block(w.float())
        if hadamard:
            h = hadamard_matrix(MX_BLOCK, device=x.device)
            xp, wp = block_rotate(xp, h), block_rotate(wp, h)
        rule = _FORWARD_RULE[forward_q]
        xq, x_trust = mx_quantize(xp, rule)
        wq, w_trust = mx_quantize(wp, rule)
        ctx.save_for_backward(xq, wq, x_trust, w_trust)
        ctx.k, ctx.backward_q, ctx.hadamard, ctx.rerotate = k, backward_q, hadamard, rerotate
        ctx.dtypes = (x.dtype, w.dtype)
        return xq @ wq.T

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        xq, wq, x_trust, w_trust = ctx.saved_tensors
        e = grad_y.float()
        scheme, hadamard, rerotate = ctx.backward_q, ctx.hadamard, ctx.rerotate
        # dL/dX_h = E Q(W_h) (inner dim M); dL/dW_h = E^T Q(X_h) (inner dim N, the tokens)
        gx = quantized_gemm(e, wq.T, scheme, hadamard, rerotate) * x_trust
        gw = quantized_gemm(e.T, xq.T, scheme, hadamard, rerotate) * w_trust
        if hadamard:
            h = hadamard_matrix(MX_BLOCK, device=e.device)  # symmetric and orthogonal: H^-1 = H
            gx, gw = block_rotate(gx, h), block_rotate(gw, h)
        gx, gw = gx[:, : ctx.k].to(ctx.dtypes[0]), gw[:, : ctx.k].to(ctx.dtypes[1])
        return gx, gw, None, None, None, None


class QuartetLinear(nn.Module):
    """Drop-in ``nn.Linear`` trained in emulated MXFP4 with Quartet's forward and backward.

    Args:
        in_features, out_features, bias: as ``nn.Linear`` (``weight: [out, in]``, float32 master copy).
        forward: ``"quest"`` | ``"quest_std"`` | ``"rtn"`` forward quantiser of inputs and weights.
        backward: ``"sr"`` | ``"rtn"`` | ``"none"`` quantiser of the two backward GEMMs.
        hadamard: rotate blocks of 32 by a Hadamard matrix (forward and backward).
        rerotate: fresh random signs on the backward Hadamard at every call.
        block_size: must be 32 (the MX block).

    Shapes: ``x: [..., in] -> [..., out]``; ``in`` need not be a multiple of 32 (zero-padded inside).
    The bias is added in float32 outside the FP4 GEMM. The state dict has the keys of ``nn.Linear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        forward: str = "quest",
        backward: str = "sr",
        hadamard: bool = True,
        rerotate: bool = True,
        block_size: int = MX_BLOCK,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_options(forward, backward, block_size)
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        self.forward_q, self.backward_q = forward, backward
        self.hadamard, self.rerotate, self.block_size = hadamard, rerotate, block_size
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device))
        self.bias = nn.Parameter(torch.empty(out_features, device=device)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialisation."""
        ref = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            self.weight.copy_(ref.weight)
            if self.bias is not None:
                self.bias.copy_(ref.bias)

    @classmethod
    def from_linear(cls, linear: nn.Linear, **kwargs) -> QuartetLinear:
        """A QuartetLinear holding a float32 copy of ``linear``'s weight and bias (options as ``__init__``)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            device=linear.weight.device,
            **kwargs,
        )
        with torch.no_grad():
            layer.weight.copy_(linear.weight.float())
            if linear.bias is not None:
                layer.bias.copy_(linear.bias.float())
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        y = QuartetMatmul.apply(
            x.reshape(-1, self.in_features), self.weight, self.forward_q, self.backward_q, self.hadamard,
            self.rerotate,
        )  # fmt: skip
        if self.bias is not None:
            y = y + self.bias.float()
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"forward={self.forward_q}, backward={self.backward_q}, hadamard={self.hadamard}, "
            f"rerotate={self.rerotate}"
        )


def _check_options(forward: str, backward: str, block_size: int) -> None:
    if forward not in FORWARD_QUANTIZERS:
        raise ValueError(f"forward: expected one of {FORWARD_QUANTIZERS}, got {forward!r}")
    if backward not in BACKWARD_QUANTIZERS:
        raise ValueError(f"backward: expected one of {BACKWARD_QUANTIZERS}, got {backward!r}")
    check_block_size(block_size)


@dataclass(frozen=True)
class QuartetConfig:
    """Turn linear layers into :class:`QuartetLinear` with ``convert_(model, QuartetConfig(), filter_fn)``.

    Fields as :class:`QuartetLinear`. The defaults are Quartet; ``QuartetConfig(forward="rtn",
    backward="rtn")`` is the biased round-to-nearest baseline and ``hadamard=False`` drops the rotation.
    """

    forward: str = "quest"
    backward: str = "sr"
    hadamard: bool = True
    rerotate: bool = True
    block_size: int = MX_BLOCK

    def __post_init__(self) -> None:
        _check_options(self.forward, self.backward, self.block_size)

    def replace(self, module: nn.Linear, fqn: str) -> QuartetLinear:
        """The QuartetLinear that takes ``module``'s place (``fqn`` is not needed)."""
        return QuartetLinear.from_linear(
            module,
            forward=self.forward,
            backward=self.backward,
            hadamard=self.hadamard,
            rerotate=self.rerotate,
            block_size=self.block_size,
        )


declare_paper(
    arxiv="2505.14669",
    short="Quartet",
    title="Quartet: Native FP4 Training Can Be Optimal for Large Language Models",
    authors="Castro, Panferov, Tabesh, Sieberling, Chen, Nikdan, Ashkboos, Alistarh",
    venue="NeurIPS 2025",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.layers.linear.quartet.QuartetLinear",
        "linearlab.layers.linear.quartet.QuartetConfig",
        "linearlab.layers.linear.mx_format.mx_quantize",
    ),
    recipes=("quartet",),
    usage=(
        "from linearlab.convert.linear_swap import convert_; from linearlab.layers.linear.quartet import QuartetConfig\n"
        "convert_(model, QuartetConfig(), filter_fn=lambda m, fqn: fqn.startswith('blocks'))  # then train as usual"
    ),
    claim=(
        "Fully MXFP4 training (QuEST forward with Hadamard, unbiased stochastic-rounding backward) is a "
        "competitive alternative to FP16 and FP8 training of Llama-type models, and near-optimal under the "
        "paper's low-precision scaling law; Blackwell kernels (abstract)."
    ),
    figures=("quartet:*",),
)
