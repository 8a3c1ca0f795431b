"""Mixture-of-experts routers: the activation dense-to-sparse gate.

Nguyen, Akbarian, Ho, "Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?",
ICML 2024 (arXiv 2401.13875).

The usual dense-to-sparse (D2S) router is a linear layer followed by a tempered softmax,
``G(x) = softmax((W x + b) / tau)``. Its logits are degree-1 homogeneous in ``(W, b)`` and divided by
``tau``, so ``W . dG/dW + b . dG/db + tau dG/dtau = 0`` (a PDE between the parameters) and maximum
likelihood recovers them more slowly than any polynomial rate. Putting an activation between the
linear map and the temperature, ``G(x) = softmax(sigma(W x + b) / tau)``, breaks that identity for
activations such as ``tanh`` or ``sigmoid`` (not for the identity or ReLU, which are positively
homogeneous) and restores polynomial rates. :class:`ActivationD2SGate` is that router; with
``activation="identity"`` it is exactly the linear router, so it drops in where a ``nn.Linear``
router followed by a softmax was.

Example::

    gate = ActivationD2SGate(64, n_experts=4, activation="tanh", tau=0.5)
    probs = gate(x)                      # x: [B, T, 64] -> probs: [B, T, 4], rows sum to 1
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.papers import LAYERS, declare_paper

#: activations the gate accepts, by name; "identity" is the plain (linear) D2S router
GATE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "identity": lambda z: z,
    "relu": F.relu,
    "gelu": F.gelu,
}


class ActivationD2SGate(nn.Module):
    """Router ``softmax(sigma(W x + b) / tau)`` over ``n_experts`` experts.

    Args:
        d_in: input width ``D``.
        n_experts: number of experts ``E``.
        activation: ``sigma``, one of :data:`GATE_ACTIVATIONS` (default ``"tanh"``; ``"identity"``
            gives the linear D2S router ``softmax((W x + b) / tau)``).
        tau: temperature (> 0); small = sparse, large = dense. Default 1.0.
        learn_tau: make ``tau`` a parameter (stored as ``log tau`` so it stays positive). Default False.
        bias: learn ``b`` (the paper's ``beta_0``); it sits inside the activation. Default True.

    Shapes:
        ``forward(x: [..., D]) -> [..., E]`` probabilities (sum to 1 over the last axis);
        ``logits(x: [..., D]) -> [..., E]`` (``sigma(W x + b) / tau``, what the softmax sees).
    """

    def __init__(
        self,
        d_in: int,
        n_experts: int,
        activation: str = "tanh",
        tau: float = 1.0,
        learn_tau: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("n_experts", n_experts)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if activation not in GATE_ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(GATE_ACTIVATIONS)}, got {activation!r}")
        if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: expected a finite number > 0, got {tau!r}")
        self.d_in, self.n_experts, self.activation = d_in, n_experts, activation
        self.proj = nn.Linear(d_in, n_experts, bias=bias)
        log_tau = torch.tensor(math.log(tau))
        if learn_tau:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        self.learn_tau = learn_tau

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, activation: str = "tanh", tau: float = 1.0, learn_tau: bool = False
    ) -> ActivationD2SGate:
        """A gate whose ``W, b`` are copies of an existing linear router's weight and bias."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear router, got {type(linear).__name__}")
        gate = cls(
            linear.in_features,
            linear.out_features,
            activation=activation,
            tau=tau,
            learn_tau=learn_tau,
            bias=linear.bias is not None,
        )
        gate = gate.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            gate.proj.weight.copy_(linear.weight)
            if linear.bias is not None:
                gate.proj.bias.copy_(linear.bias)
        return gate

    @property
    def tau(self) -> torch.Tensor:
        """The temperature (a 0-dim tensor)."""
        return self.log_tau.exp()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``sigma(W x + b) / tau``: ``[..., D] -> [..., E]``."""
        if x.shape[-1] != self.d_in:
            raise ValueError(f"x: expected last dim d_in={self.d_in}, got shape {tuple(x.shape)}")
        return GATE_ACTIVATIONS[self.activation](self.proj(x)) / self.tau.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Gate probabilities ``[..., E]`` for ``x: [..., D]``."""
        return self.logits(x).softmax(-1)

    def extra_repr(self) -> str:
        return (
            f"d_in={self.d_in}, n_experts={self.n_experts}, activation={self.activation!r}, "
            f"tau={float(self.tau):.4g}, learn_tau={self.learn_tau}"
        )


declare_paper(
    arxiv="2401.13875",
    short="Temperature in softmax Gaussian MoE",
    title="Is Temperature Sample Efficient for Softmax Gaussian Mixture of Experts?",
    authors="Nguyen, Akbarian, Ho",
    venue="ICML 2024",
    area=LAYERS,
    status="implemented",
    objects=("linearlab.layers.routers.ActivationD2SGate",),
    recipes=("moe-temperature",),
    usage=(
        "from linearlab.layers.routers import ActivationD2SGate\n"
        'probs = ActivationD2SGate(64, n_experts=4, activation="tanh", tau=0.5)(x)  # [2, 32, 4]'
    ),
    claim=(
        "With the dense-to-sparse gate softmax((W x + b)/tau), parameter estimation by MLE can be as slow as "
        "O(1/log n) because of a PDE linking W, b and tau; an activation before the tempered softmax "
        "restores polynomial rates (about n^-1/2 for the gate); simulations confirm (abstract)."
    ),
    note="MoM takes the gate as its router with create_mixer('mom', ..., router='tanh', router_tau=...).",
)
