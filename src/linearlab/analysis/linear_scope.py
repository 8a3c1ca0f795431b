"""LinearScope: a piecewise-linear CNN seen as the affine map it computes at one input.

Navarrete Michelini, Liu, Lu, Jiang (ICCV 2019), "A Tour of Convolutional Networks Guided by Linear
Interpreters". Freeze every non-linearity's decision at the input ``x0`` (ReLU: the mask
``x0 > 0``; leaky ReLU: the gain; max-pool: the selected indices) and the network becomes an affine
map of its input, ``g_x0(x) = A(x0) x + b(x0)`` with ``g_x0(x0) = f(x0)``. The scope runs the network
on ``x0`` and, layer by layer next to it, the linear interpreter on a second input ``x1`` with the
masks and indices of ``x0``; no activation is stored between layers.

- ``apply(x0, x1)``: ``A(x0) x1`` (the interpreter without bias terms);
- ``bias(x0)``: ``b(x0)`` (the interpreter with bias terms on ``x1 = 0``);
- ``matrix(x0)``: ``A(x0)`` itself, by pushing the input basis through the interpreter;
- ``apply_transpose(x0, u)``: ``A(x0)^T u`` (autograd of the linear map ``x1 -> A x1``, which is
  exact for a linear map at any point: the paper's transposed interpreter).

Supported modules (in an ``nn.Sequential``, nested Sequentials allowed): ``nn.Linear``,
``nn.Conv1d/2d``, ``nn.ReLU``, ``nn.LeakyReLU``, ``nn.MaxPool1d/2d``, ``nn.AvgPool1d/2d``,
``nn.AdaptiveAvgPool1d/2d``, ``nn.BatchNorm1d/2d`` in eval mode (an affine map with the running
statistics), ``nn.Flatten``, ``nn.Identity`` and ``nn.Dropout`` in eval mode. Anything else is
refused with an error naming the module and the supported types.

Example:
    >>> scope = LinearScope(cnn.eval())              # cnn: nn.Sequential of supported modules
    >>> A = scope.matrix(x0)                         # x0: [B, 1, 8, 8] -> A: [B, 10, 64]
    >>> b = scope.bias(x0)                           # [B, 10]; f(x0) = A x0 + b
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# module types whose interpreter is the module itself, minus its bias terms
_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d)
# linear modules without bias: the interpreter is the module
_LINEAR = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Identity,
)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
_DROPOUT = (nn.Dropout,)
_GATES = (nn.ReLU, nn.LeakyReLU)
SUPPORTED: tuple[type[nn.Module], ...] = (
    *_AFFINE,
    *_GATES,
    *_MAXPOOL,
    *_BATCHNORM,
    *_LINEAR,
    *_DROPOUT,
    nn.Sequential,
)


def supported_names() -> list[str]:
    """Names of the module types LinearScope can linearise."""
    return [f"nn.{t.__name__}" for t in SUPPORTED]


def _flatten_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(model, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in model.named_children():
            out.extend(_flatten_layers(child, f"{prefix}.{name}" if prefix else name))
        return out
    if not isinstance(model, SUPPORTED):
        where = f" at {prefix!r}" if prefix else ""
        raise TypeError(
            f"model: LinearScope cannot linearise module {type(model).__name__}{where}; supported "
            f"(inside nn.Sequential): {', '.join(supported_names())}"
        )
    return [(prefix or "<model>", model)]


class LinearScope:
    """The linear interpreter of a ReLU / max-pool / (eval) batch-norm network.

    Args:
        model: an ``nn.Sequential`` (nested allowed) of supported modules, or one such module.
            Batch norm and dropout must be in eval mode when the scope is used.

    All methods take ``x0: [B, *in_shape]`` (a batch of inputs; each row has its own affine map) and
    return float tensors of the model's dtype; ``out_shape`` is the model's output shape per row.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        self.model = model
        self.layers = _flatten_layers(model)

    # -- the parallel pass ------------------------------------------------------------------------

    def _check_modes(self) -> None:
        for name, layer in self.layers:
            if isinstance(layer, (*_BATCHNORM, *_DROPOUT)) and layer.training:
                raise ValueError(
                    f"model: {type(layer).__name__} at {name!r} is in training mode; its output depends on "
                    "the batch (or on random draws), so it is not a function of one input. Call model.eval()"
                )

    def _step(
        self, layer: nn.Module, h0: torch.Tensor, h1: torch.Tensor, k: int, with_bias: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer: ``h0: [B, *s]`` through the network, ``h1: [B * k, *s]`` through the interpreter."""
        if isinstance(layer, _AFFINE):
            y0 = layer(h0)
            if with_bias or layer.bias is None:
                y1 = layer(h1)
            elif isinstance(layer, nn.Linear):
                y1 = F.linear(h1, layer.weight)
            else:
                y1 = layer._conv_forward(h1, layer.weight, None)
            return y0, y1
        if isinstance(layer, _GATES):
            slope = layer.negative_slope if isinstance(layer, nn.LeakyReLU) else 0.0
            gain = torch.where(h0 > 0, 1.0, slope).to(h0.dtype)
            return layer(h0), h1 * gain.repeat_interleave(k, dim=0)
        if isinstance(layer, _MAXPOOL):
            y0, idx = (
                F.max_pool1d_with_indices(
                    h0, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
                )
                if isinstance(layer, nn.MaxPool1d)
                else F.max_pool2d_with_indices(
                    h0, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode
                )
            )
            # the indices address the flattened spatial positions of each channel
            idx = idx.repeat_interleave(k, dim=0)
            flat = h1.flatten(2)
            y1 = flat.gather(2, idx.flatten(2)).reshape(idx.shape)
            return y0, y1
        if isinstance(layer, _BATCHNORM):
            y0 = layer(h0)
            # eval batch norm: x * g + c with g = weight / sqrt(var + eps), c = bias - mean * g
            g = torch.rsqrt(layer.running_var + layer.eps)
            if layer.weight is not None:
                g = g * layer.weight
            shape = [1, -1] + [1] * (h1.dim() - 2)
            y1 = h1 * g.reshape(shape)
            if with_bias:
                c = -layer.running_mean * g
                if layer.bias is not None:
                    c = c + layer.bias
                y1 = y1 + c.reshape(shape)
            return y0, y1
        # linear, bias-free modules (pools, flatten, identity, eval dropout)
        return layer(h0), layer(h1)

    def _run(self, x0: torch.Tensor, x1: torch.Tensor, with_bias: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``x0: [B, *s]``, ``x1: [B, k, *s]`` -> ``(f(x0): [B, *o], g(x1): [B, k, *o])``."""
        self._check_modes()
        if x1.shape[0] != x0.shape[0] or x1.shape[2:] != x0.shape[1:]:
            raise ValueError(
                f"x1: expected shape [B={x0.shape[0]}, k, {', '.join(map(str, x0.shape[1:]))}], got {tuple(x1.shape)}"
            )
        b, k = x1.shape[:2]
        h0, h1 = x0, x1.reshape(b * k, *x1.shape[2:])
        for _, layer in self.layers:
            h0, h1 = self._step(layer, h0, h1, k, with_bias)
        return h0, h1.reshape(b, k, *h1.shape[1:])

    def _check_x0(self, x0: torch.Tensor) -> None:
        if not isinstance(x0, torch.Tensor) or x0.dim() < 2 or not x0.is_floating_point():
            raise ValueError(
                f"x0: expected a float tensor [B, *in_shape], got {type(x0).__name__} "
                f"{tuple(getattr(x0, 'shape', ()))}"
            )

    # -- public ------------------------------------------------------------------------------------

    @torch.no_grad()
    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network on ``x0: [B, *s]`` and the affine interpreter ``g_x0`` on ``x1: [B, *s]``.

        Returns ``(f(x0), A(x0) x1 + b(x0))``, both ``[B, *out]``; ``g_x0(x0) = f(x0)``.
        """
        self._check_x0(x0)
        y0, y1 = self._run(x0, x1.unsqueeze(1), with_bias=True)
        return y0, y1.squeeze(1)

    __call__ = forward

    def apply(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """``A(x0) x1`` for ``x1: [B, *in_shape]`` (or ``[B, k, *in_shape]``: ``k`` vectors per row)."""
        self._check_x0(x0)
        squeeze = x1.dim() == x0.dim()
        _, y1 = self._run(x0, x1.unsqueeze(1) if squeeze else x1, with_bias=False)
        return y1.squeeze(1) if squeeze else y1

    @torch.no_grad()
    def bias(self, x0: torch.Tensor) -> torch.Tensor:
        """``b(x0): [B, *out]``: the interpreter with its bias terms, on ``x1 = 0``."""
        self._check_x0(x0)
        _, y1 = self._run(x0, torch.zeros_like(x0).unsqueeze(1), with_bias=True)
        return y1.squeeze(1)

    @torch.no_grad()
    def matrix(self, x0: torch.Tensor) -> torch.Tensor:
        """``A(x0): [B, out_dim, in_dim]`` (outputs and inputs flattened), one input basis vector
        at a time through the interpreter (``in_dim`` interpreter rows per input)."""
        self._check_x0(x0)
        b, in_shape = x0.shape[0], x0.shape[1:]
        n = in_shape.numel()
        basis = (
            torch.eye(n, dtype=x0.dtype, device=x0.device).reshape(1, n, *in_shape).expand(b, n, *in_shape)
        )
        _, cols = self._run(x0, basis, with_bias=False)  # [B, in_dim, *out]
        return cols.reshape(b, n, -1).transpose(1, 2)

    def apply_transpose(self, x0: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``A(x0)^T u`` for ``u: [B, *out]`` -> ``[B, *in_shape]`` (the transposed interpreter)."""
        self._check_x0(x0)
        x1 = torch.zeros_like(x0)
        _, vjp = torch.func.vjp(lambda v: self._run(x0, v.unsqueeze(1), with_bias=False)[1].squeeze(1), x1)
        (out,) = vjp(u)
        return out

    @torch.no_grad()
    def decompose(self, x0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(f(x0), A(x0) x0, b(x0))``, each ``[B, *out]``; the first equals the sum of the others."""
        self._check_x0(x0)
        y0, lin = self._run(x0, x0.unsqueeze(1), with_bias=False)
        return y0, lin.squeeze(1), self.bias(x0)
