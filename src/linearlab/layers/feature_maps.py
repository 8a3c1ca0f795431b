"""Feature maps ``phi`` for linear attention, with a small registry.

A feature map acts on per-head queries or keys ``x: [B, T, H, D]`` and returns ``phi(x): [B, T, H, F]``
(``F = feature_dim``). Linear attention then uses ``phi(q_t) . phi(k_s)`` in place of
``exp(q_t . k_s)``. Maps are created by name so that mixers and the linearisation code share them:

    >>> phi = create_feature_map("hedgehog", head_dim=16, num_heads=4)
    >>> phi(torch.randn(2, 10, 4, 16)).shape
    torch.Size([2, 10, 4, 32])

Available maps:
- ``identity``: ``phi(x) = x`` (no kernel; only sensible without the denominator).
- ``elu``: ``elu(x)`` (TransNormer T1: negative values allowed because NormAttention has no denominator).
- ``elu1``: ``elu(x) + 1`` (Katharopoulos et al., "Transformers are RNNs", arXiv 2006.16236).
- ``relu``: ``relu(x)`` (SLAB / LiT simplified linear attention).
- ``t2r``: ``relu(x W_h + b_h)`` with a learned per-head linear map (Kasai et al., "Finetuning
  Pretrained Transformers into RNNs", arXiv 2103.13076; the T2R baseline of LoLCATs).
- ``hedgehog``: ``softmax([z, -z])`` over the ``2 D`` features, ``z = x W_h + b_h`` learned per head
  (Zhang et al., "The Hedgehog & the Porcupine", arXiv 2402.04347; the paper's ``[exp(z), exp(-z)]``
  up to one per-vector constant, which cancels for queries in normalised attention). ``F = 2 D``.
- ``hedgehog_split``: ``[softmax(z), softmax(-z)]``, each half normalised on its own (LoLCATs'
  ``SoftmaxDim``, Zhang et al., arXiv 2410.10254). ``F = 2 D``.
The learned maps start from ``W = I, b = 0``: ``t2r`` then equals ``relu`` and ``hedgehog`` is a
softmax over the raw channels, so a freshly linearised model starts from a sensible kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.registry import Registry

FEATURE_MAPS: Registry[type[FeatureMap]] = Registry("feature map", argument="feature_map")


def register_feature_map(name: str) -> Callable[[type[FeatureMap]], type[FeatureMap]]:
    """Class decorator: make a feature map creatable by ``name`` (sets ``cls.map_name``)."""

    def wrap(cls: type[FeatureMap]) -> type[FeatureMap]:
        FEATURE_MAPS.register(name, cls)
        cls.map_name = name
        return cls

    return wrap


def list_feature_maps() -> list[str]:
    """Names of all registered feature maps, sorted."""
    return FEATURE_MAPS.names()


def create_feature_map(name: str, head_dim: int, num_heads: int) -> FeatureMap:
    """Build the feature map registered as ``name`` for ``num_heads`` heads of size ``head_dim``.

    An unknown ``name`` raises :class:`~linearlab.registry.UnknownNameError` listing the maps.
    """
    cls = FEATURE_MAPS.get(name)
    if head_dim < 1 or num_heads < 1:
        raise ValueError(f"head_dim, num_heads: must be >= 1, got head_dim={head_dim}, num_heads={num_heads}")
    return cls(head_dim, num_heads)


class FeatureMap(nn.Module):
    """Base class: ``forward(x: [B, T, H, D]) -> [B, T, H, feature_dim]``."""

    map_name: str = ""

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.num_heads = num_heads

    @property
    def feature_dim(self) -> int:
        return self.head_dim

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[-2:] != (self.num_heads, self.head_dim):
            raise ValueError(
                f"x: expected [B, T, H={self.num_heads}, D={self.head_dim}], got shape {list(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.phi(x)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, num_heads={self.num_heads}, feature_dim={self.feature_dim}"


@register_feature_map("identity")
class IdentityMap(FeatureMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return x


@register_feature_map("elu")
class EluMap(FeatureMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x)


@register_feature_map("elu1")
class Elu1Map(FeatureMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.elu(x) + 1.0


@register_feature_map("relu")
class ReluMap(FeatureMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


class _LearnedPerHead(FeatureMap):
    """A per-head affine map ``x W_h + b_h`` (``W: [H, D, D]``), initialised to the identity."""

    def __init__(self, head_dim: int, num_heads: int) -> None:
        super().__init__(head_dim, num_heads)
        self.weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_heads, head_dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bthd,hde->bthe", x, self.weight) + self.bias


@register_feature_map("t2r")
class T2RMap(_LearnedPerHead):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(x))


@register_feature_map("hedgehog")
class HedgehogMap(_LearnedPerHead):
    @property
    def feature_dim(self) -> int:
        return 2 * self.head_dim

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        # softmax over features = exp(.) up to a per-vector constant: exp-like spikiness without overflow
        z = self.project(x)
        return torch.softmax(torch.cat([z, -z], dim=-1), dim=-1)


@register_feature_map("hedgehog_split")
class HedgehogSplitMap(HedgehogMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(x)
        return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)
