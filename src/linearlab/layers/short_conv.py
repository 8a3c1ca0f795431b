"""Causal short convolutions: :class:`ShortConvolution` and the q/k/v form of the delta-rule mixers.

- :class:`ShortConvolution`: causal depthwise conv1d over time with a conv-state buffer, so a
  sequence can be processed in one call or token by token with identical results (BaseConv,
  SLAB's depthwise conv on ``v``, and the q/k/v convs below).
- :class:`ShortConvQKV`: a mixin for mixers that project ``x`` to ``q, k, v`` and run each through
  its own ``SiLU(ShortConv(.))`` (DeltaNet, Gated DeltaNet, MoM), with the buffers carried in the
  state as ``"conv_q"``, ``"conv_k"``, ``"conv_v"``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.mixer_state import StateShapes, shape


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


class ShortConvolution(nn.Conv1d):
    """Causal depthwise 1-D convolution over time with a carried conv state.

    Output at step t mixes inputs ``t - kernel_size + 1 .. t`` of the same channel, so no future
    token leaks in. The state ("cache") is the last ``kernel_size - 1`` inputs; passing it back
    continues the sequence exactly (zeros stand for the tokens before the start).

    Args:
        hidden_size: number of channels ``D`` (one filter per channel).
        kernel_size: filter length. Default: 4 (DeltaNet, Gated DeltaNet, MoM).
        bias: add a per-channel bias. Default: False.
        activation: ``"silu"`` or None (identity). Default: ``"silu"``.

    Shapes:
        ``x: [B, T, D]``, ``cache: [B, D, kernel_size - 1]`` -> ``(y: [B, T, D], cache)``.

    Example:
        >>> conv = ShortConvolution(8)
        >>> x = torch.randn(2, 5, 8)
        >>> y, cache = conv(x)
        >>> y_last, _ = conv(torch.randn(2, 1, 8), cache=cache)  # next decoding step
    """

    def __init__(
        self, hidden_size: int, kernel_size: int = 4, bias: bool = False, activation: str | None = "silu"
    ) -> None:
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"hidden_size: expected a positive int, got {hidden_size!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size: expected a positive int, got {kernel_size!r}")
        if activation not in (None, "silu"):
            raise ValueError(f"activation: expected 'silu' or None, got {activation!r}")
        super().__init__(hidden_size, hidden_size, kernel_size, groups=hidden_size, bias=bias, padding=0)
        self.hidden_size = hidden_size
        self.activation = activation

    def state_size(self) -> int:
        """Scalars in the conv state per sequence: ``D * (kernel_size - 1)``."""
        return self.hidden_size * (self.kernel_size[0] - 1)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolve ``x: [B, T, D]`` causally; return ``(y: [B, T, D], cache: [B, D, kernel_size - 1])``."""
        if x.dim() != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x: expected shape [B, T, {self.hidden_size}], got {_shape(x)}")
        B, T, D = x.shape
        width = self.kernel_size[0] - 1
        if cache is None:
            cache = x.new_zeros(B, D, width)
        elif tuple(cache.shape) != (B, D, width):
            raise ValueError(
                f"cache: expected shape [B, D, kernel_size - 1] = {[B, D, width]}, got {_shape(cache)}"
            )
        # prepend the carried inputs instead of zero padding: the same code serves prefill and steps
        xp = torch.cat([cache.to(x.dtype).transpose(1, 2), x], dim=1)  # [B, width + T, D]
        taps = self.weight.to(x.dtype)[:, 0, :].T  # [kernel_size, D]; the last tap is the current token
        # explicit taps in [B, T, D] layout instead of F.conv1d on [B, D, T]: no transposes, and
        # the backward of the activation then runs on contiguous tensors (2-4x faster on CPU for
        # long inputs; for T == 1 steps ~50x faster than the conv kernel's fixed cost)
        y = xp[:, :T] * taps[0]
        for j in range(1, width + 1):
            y = y + xp[:, j : j + T] * taps[j]
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        if self.activation == "silu":
            y = F.silu(y)
        # a compact copy: a view would keep the whole prefill buffer alive inside the state
        return y, xp[:, xp.shape[1] - width :].transpose(1, 2).contiguous()


class ShortConvQKV(nn.Module):
    """Mixin: ``q, k, v = SiLU(ShortConv(x W_q)), SiLU(ShortConv(x W_k)), SiLU(ShortConv(x W_v))``.

    The mixer creates ``q_proj``, ``k_proj``, ``v_proj`` (``nn.Linear``) and sets ``use_short_conv``
    itself, then calls :meth:`init_qkv_convs`; the mixer keeps the order in which its modules are
    created (it fixes the seeded initial weights). Without short convolutions the projections go
    through a plain SiLU and the state has no conv entries.

    Shapes:
        :meth:`project_qkv` maps ``x: [B, T, D]`` to flat ``q: [B, T, Cq]``, ``k: [B, T, Ck]``,
        ``v: [B, T, Cv]`` (``C*`` = the projections' widths) and the conv state
        ``{"conv_q": [B, Cq, conv_size - 1], "conv_k": [B, Ck, conv_size - 1], "conv_v": [B, Cv, conv_size - 1]}``.
    """

    use_short_conv: bool
    q_proj: nn.Linear
    k_proj: nn.Linear
    v_proj: nn.Linear
    q_conv1d: ShortConvolution
    k_conv1d: ShortConvolution
    v_conv1d: ShortConvolution

    def init_qkv_convs(self, conv_size: int, conv_bias: bool) -> None:
        """Create ``q_conv1d``, ``k_conv1d``, ``v_conv1d`` as wide as the projections (if ``use_short_conv``)."""
        if self.use_short_conv:
            self.q_conv1d = ShortConvolution(self.q_proj.out_features, conv_size, bias=conv_bias)
            self.k_conv1d = ShortConvolution(self.k_proj.out_features, conv_size, bias=conv_bias)
            self.v_conv1d = ShortConvolution(self.v_proj.out_features, conv_size, bias=conv_bias)

    def project_qkv(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Flat ``q, k, v`` after the activated short convs, and the new conv state (``{}`` without convs)."""
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if not self.use_short_conv:
            return F.silu(q), F.silu(k), F.silu(v), {}
        get = (lambda name: None) if state is None else state.get
        conv_state: dict[str, torch.Tensor] = {}
        q, conv_state["conv_q"] = self.q_conv1d(q, get("conv_q"))
        k, conv_state["conv_k"] = self.k_conv1d(k, get("conv_k"))
        v, conv_state["conv_v"] = self.v_conv1d(v, get("conv_v"))
        return q, k, v, conv_state

    def qkv_conv_state_shapes(self, batch_size: int) -> StateShapes:
        """The conv entries of the state (none without short convs)."""
        if not self.use_short_conv:
            return {}
        return {
            f"conv_{name}": shape("B C kernel-1", batch_size, conv.hidden_size, conv.kernel_size[0] - 1)
            for name, conv in (("q", self.q_conv1d), ("k", self.k_conv1d), ("v", self.v_conv1d))
        }

    def qkv_conv_state_size(self) -> int:
        """Scalars in the conv buffers per sequence (0 without short convs)."""
        if not self.use_short_conv:
            return 0
        return sum(c.state_size() for c in (self.q_conv1d, self.k_conv1d, self.v_conv1d))
