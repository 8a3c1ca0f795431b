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
- ``hedgehog``: ``[exp(z), exp(-z)]`` with ``z = x W_h + b_h`` learned per head (Zhang et al.,
  "The Hedgehog & the Porcupine", arXiv 2402.04347), stabilised by its ``role`` (below). ``F = 2 D``.
- ``hedgehog_split``: ``[softmax(z), softmax(-z)]``, each half normalised on its own (LoLCATs'
  ``SoftmaxDim``, Zhang et al., arXiv 2410.10254). ``F = 2 D``.
- ``norm_preserving``: STILL's NP-Map (Meng et al., arXiv 2602.02180; only its abstract is known:
  "decouples the feature direction from the magnitude and re-injects the pretrained norm"). Our
  form: ``||x|| * u / ||u||`` with ``u = [softmax(z), softmax(-z)]`` (``hedgehog_split``'s direction),
  so ``phi(q) . phi(k) = ||q|| ||k|| cos(u_q, u_k)`` keeps the magnitude part of ``q . k`` that the
  pretrained model learned and lets training shape only the angle. ``F = 2 D``.
The learned maps start from ``W = I, b = 0``: ``t2r`` then equals ``relu`` and ``hedgehog`` is
``[exp(x), exp(-x)]`` on the raw channels, so a freshly linearised model starts from a sensible kernel.

Roles and the Hedgehog stabiliser. Every map takes ``role="query"`` or ``role="key"`` (default
``"key"``; ``create_feature_map(name, head_dim, num_heads)`` keeps working). Only ``hedgehog`` uses
it, because a raw ``exp`` overflows (float32 at ``z > 88``, bfloat16 likewise) and the safe way to
shift it differs between the two sides of normalised attention
``a_ts = phi(q_t) . phi(k_s) / sum_{s' <= t} phi(q_t) . phi(k_s')``:

- ``role="query"``: ``phi(x) = exp([z, -z] - m)`` with ``m = max(|z|)`` over the ``D`` channels of
  that one vector (the max of ``[z, -z]``). Features lie in ``(0, 1]``, whatever the input, so no
  overflow. ``exp(-m)`` is one constant per query; it multiplies the numerator and the denominator
  of ``a_ts`` alike and cancels, so the attention weights are exactly the paper's (up to the op's
  ``eps = 1e-6`` in the denominator, see below). This is the logsumexp trick; it is *not* exact
  without the denominator (``normalize=False``), where the per-query factor rescales the output,
  so an unnormalised consumer should create both maps with ``role="key"``.
- ``role="key"``: ``phi(x) = exp([c, -c])`` with the exponent soft-capped at ``KEY_CAP = 10``:
  ``c = z`` where ``|z| <= KEY_CAP``, else ``c = sign(z) (KEY_CAP + log(1 + |z| - KEY_CAP))``, so
  beyond the cap ``exp(c)`` continues ``exp`` linearly, ``e^10 (1 + |z| - 10)``, and ``exp(-c)`` as
  ``e^-10 / (1 + |z| - 10)`` (value and slope match at the cap).
  Why not a per-key shift: any per-key constant (such as the old per-vector softmax, which divided
  each key by its own ``sum(exp([z, -z]))``) changes the weights of keys relative to one another;
  a key that matches the query strongly has large features, and dividing them by their own sum
  caps how much attention it can take. Only a constant shared by *all* keys (of every sequence and
  every call, since the recurrent state carries key sums across calls) leaves the weights
  unchanged, and no data-dependent shift is shared that way. So keys get a bounded exponent
  instead, with no shift at all: wherever ``|z| <= KEY_CAP`` the map is exactly
  ``[exp(z), exp(-z)]`` and the weights equal the paper's. Why soft, not ``clamp``: a hard clamp
  makes every key beyond the cap tie at ``e^10`` and passes them no gradient; in the MQAR lab 5% of
  the key exponents of a trained model sat there and recall fell well short of the soft cap's. The
  soft cap stays strictly increasing, and ``d phi / d z`` is at most ``e^10`` everywhere.

  Overflow bound (``Z = max |z|``): key features are at most ``e^10 (1 + Z)`` and query features
  at most 1, so the key sum ``z_T`` is at most ``T e^10 (1 + Z)``, the state
  ``S_T = sum phi(k)^T v`` at most ``T e^10 (1 + Z) max|v|`` and the numerator ``phi(q) S_T`` at
  most ``2 D T e^10 (1 + Z) max|v|``. float32 (and bfloat16, same exponent range) holds up to
  ``3.4e38``, so nothing overflows before ``T ~ 1.5e34 / (2 D (1 + Z) max|v|)``, e.g.
  ``T ~ 1e25`` for ``D = 64, Z = 1e4, max|v| = 1000``: never, in practice (trained models here have
  ``Z`` of a few tens). Lower end: the query's largest feature is 1 and a key's feature on it is at
  least ``e^-10 / (1 + Z - 10)``, so the denominator stays far above the op's ``eps = 1e-6``
  unless every key so far lies beyond the cap on the wrong side of the query's dominant channel
  (a query that matches nothing), where ``eps`` shrinks the output towards 0; the weights' ratios
  are never touched.

Gradients stay finite for any finite input: the query map's exponents are ``<= 0`` and the key
map's slope is at most ``e^10``. ``hedgehog_split`` ignores ``role`` (LoLCATs' map, kept as it is).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.papers import LINEARIZE, declare_paper
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


def create_feature_map(name: str, head_dim: int, num_heads: int, role: str | None = None) -> FeatureMap:
    """Build the feature map registered as ``name`` for ``num_heads`` heads of size ``head_dim``.

    ``role``: ``"query"`` or ``"key"``, the side of attention the map is applied to (only
    ``hedgehog`` depends on it, see the module docstring); ``None`` leaves the map's default
    (``"key"``, safe on either side). An unknown ``name`` raises
    :class:`~linearlab.registry.UnknownNameError` listing the maps.
    """
    cls = FEATURE_MAPS.get(name)
    if head_dim < 1 or num_heads < 1:
        raise ValueError(f"head_dim, num_heads: must be >= 1, got head_dim={head_dim}, num_heads={num_heads}")
    return cls(head_dim, num_heads) if role is None else cls(head_dim, num_heads, role=role)


ROLES = ("query", "key")


class FeatureMap(nn.Module):
    """Base class: ``forward(x: [B, T, H, D]) -> [B, T, H, feature_dim]``.

    ``role`` (``"query"`` or ``"key"``) says which side of attention the map is applied to.
    """

    map_name: str = ""

    def __init__(self, head_dim: int, num_heads: int, role: str = "key") -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"role: expected 'query' or 'key', got {role!r}")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.role = role

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
        return (
            f"head_dim={self.head_dim}, num_heads={self.num_heads}, feature_dim={self.feature_dim}, "
            f"role={self.role}"
        )


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

    def __init__(self, head_dim: int, num_heads: int, role: str = "key") -> None:
        super().__init__(head_dim, num_heads, role)
        self.weight = nn.Parameter(torch.eye(head_dim).repeat(num_heads, 1, 1))
        self.bias = nn.Parameter(torch.zeros(num_heads, head_dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bthd,hde->bthe", x, self.weight) + self.bias


@register_feature_map("t2r")
class T2RMap(_LearnedPerHead):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(x))


#: keys' exponents are exact up to ``|z| = KEY_CAP``, then grow logarithmically (module docstring)
KEY_CAP = 10.0


def soft_cap(z: torch.Tensor, cap: float = KEY_CAP) -> torch.Tensor:
    """``z`` on ``[-cap, cap]``, ``sign(z) (cap + log(1 + |z| - cap))`` beyond (C1, strictly increasing)."""
    over = F.relu(z.abs() - cap)  # relu: slope 0 at |z| = cap, so the total slope there is 1, not 2
    return z.clamp(-cap, cap) + torch.sign(z) * torch.log1p(over)


@register_feature_map("hedgehog")
class HedgehogMap(_LearnedPerHead):
    """``[exp(z), exp(-z)]``, ``z = x W_h + b_h``; queries shifted by their own max, keys soft-capped."""

    @property
    def feature_dim(self) -> int:
        return 2 * self.head_dim

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(x)
        if self.role == "query":
            # exp([z, -z] - max|z|): a per-query constant, which cancels in normalised attention
            zz = torch.cat([z, -z], dim=-1)
            return torch.exp(zz - zz.amax(dim=-1, keepdim=True))
        # keys: no shift (a per-key one would reweight keys); exact wherever |z| <= KEY_CAP
        c = soft_cap(z)
        return torch.exp(torch.cat([c, -c], dim=-1))


@register_feature_map("hedgehog_split")
class HedgehogSplitMap(HedgehogMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        z = self.project(x)
        return torch.cat([torch.softmax(z, dim=-1), torch.softmax(-z, dim=-1)], dim=-1)


@register_feature_map("norm_preserving")
class NormPreservingMap(HedgehogSplitMap):
    def phi(self, x: torch.Tensor) -> torch.Tensor:
        u = super().phi(x)
        # u > 0 (softmax), so its norm is bounded away from 0 and the direction is well defined
        return u * (x.norm(dim=-1, keepdim=True) / u.norm(dim=-1, keepdim=True))


declare_paper(
    arxiv="2402.04347",
    short="Hedgehog",
    title="The Hedgehog & the Porcupine: Expressive Linear Attentions with Softmax Mimicry",
    authors="Zhang, Bhatia, Kumbong, Ré",
    venue="ICLR 2024",
    area=LINEARIZE,
    status="implemented",
    objects=(
        "linearlab.layers.feature_maps.HedgehogMap",
        "linearlab.layers.mixers.linear_attention.LinearAttention",
        "linearlab.convert.LinearizeConfig",
        "linearlab.convert.linearize_",
        "linearlab.convert.distill_attention",
    ),
    registered=("feature map:hedgehog", "linearize method:hedgehog"),
    recipes=("mqar", "lm", "linearize"),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("linear_attention", d_model=64, feature_map="hedgehog")(x)  # x: [B, T, 64]'
    ),
    claim=(
        "Recovers over 99% of standard Transformer quality, training from scratch and converting "
        "finetuned models; up to 6 perplexity points better than prior linear attentions on "
        "WikiText-103 and up to 8.7 GLUE points (converted BERT); a converted GPT-2 reaches 16.7 "
        "perplexity on WikiText-103 (abstract)."
    ),
    figures=("mqar:hedgehog *", "lm:hedgehog *", "linearize:hedgehog *"),
    note=(
        'Converting a pretrained model: linearize_(model, LinearizeConfig(method="hedgehog")), then '
        "distill_attention (the attention cross-entropy loss)."
    ),
)

declare_paper(
    arxiv="2103.13076",
    short="T2R",
    title="Finetuning Pretrained Transformers into RNNs",
    authors="Kasai et al.",
    venue="EMNLP 2021",
    area=LINEARIZE,
    status="implemented",
    objects=(
        "linearlab.layers.feature_maps.T2RMap",
        "linearlab.convert.LinearizeConfig",
        "linearlab.convert.linearize_",
    ),
    registered=("feature map:t2r", "linearize method:t2r"),
    recipes=("linearize",),
    usage=(
        "from linearlab.convert import LinearizeConfig, linearize_\n"
        'linearize_(model, LinearizeConfig(method="t2r"))  # model: HF Llama / Mistral / Qwen2 or MixerLM'
    ),
    figures=("linearize:t2r *",),
    note="Used as the learned-map baseline of the linearisation recipe; the paper's own results are not reproduced.",
)
