"""R-Sparse: rank-aware activation sparsity for a linear layer (arXiv 2504.19449).

Zhang, Liu, Tian, Khaitan, Wang, Li, "R-Sparse: Rank-Aware Activation Sparsity for Efficient LLM
Inference", ICLR 2025 (algorithm as in the official repo ``VITA-Group/R-Sparse``; see
``shared/notes/linear-layer-replacements.md`` §4).

A trained ``y = W x + b`` (``W: [out, in]``) is split per token by input channel::

    m = 1[|x * scale| > tau]                       # scale_i = ||W[:, i]||: a channel's output reach
    y = W (x * m) + b + U_r S_r V_r^T (x * (1 - m))

Channels whose contribution is large go through the exact (sparse) product; the rest go through a
rank-``r`` SVD of ``W``. At a target *sparsity* ``s`` (the fraction of the dense multiply-adds saved)
and a *sparse ratio* ``alpha`` (how much of the remaining budget the sparse path gets):

- sparse channels per token ``c = in (1 - s) alpha``, so the threshold ``tau`` is the
  ``t = 1 - (1 - s) alpha`` quantile of ``|x * scale|`` over one calibration sequence;
- rank ``r = (in out (1 - s) - c out) / (in + out)`` (the low-rank path costs ``r (in + out)``).

``alpha = 1`` is plain activation sparsity (scored by ``|x| * ||W[:, i]||``), ``alpha = 0`` is a plain
low-rank layer. With ``channel_score="magnitude"`` the score is ``|x|`` alone: TEAL-style thresholding,
the baseline of the paper. The per-layer ``(s, alpha)`` come from :func:`search_budgets`, the paper's
evolutionary search on one calibration sequence under a model-level budget.

Apply to a model with :func:`linearlab.convert.sparsify.sparsify_` (calibrates, then ``convert_``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.papers import LAYERS, declare_paper

CHANNEL_SCORES = ("weight_norm", "magnitude")
MODES = ("r_sparse", "dense")


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return float(value)


def budget_split(
    in_features: int, out_features: int, sparsity: float, sparse_ratio: float
) -> tuple[int, float]:
    """The repo's budget split: ``(rank r, low-rank channel fraction t)`` for one ``[out, in]`` layer.

    ``t = 1 - (1 - s) alpha`` of the input channels per token go through the rank-``r`` path,
    ``r = floor((in out (1 - s) - in (1 - s) alpha out) / (in + out))`` (clipped to ``min(in, out)``).
    """
    s = _check_fraction("sparsity", sparsity)
    a = _check_fraction("sparse_ratio", sparse_ratio)
    budget = in_features * out_features * (1.0 - s)
    sparse_cost = in_features * (1.0 - s) * a * out_features
    # a tiny tolerance: (1 - s) * ... in floating point must not lose a whole rank at exact splits
    rank = int(math.floor((budget - sparse_cost) / (in_features + out_features) + 1e-9))
    rank = max(0, min(rank, min(in_features, out_features)))
    return rank, 1.0 - (1.0 - s) * a


class RSparseLinear(nn.Module):
    """Drop-in ``nn.Linear`` computing ``W (x m) + b + U_r S_r V_r^T (x (1 - m))`` (module docstring).

    Build it with :meth:`from_linear` (or :func:`linearlab.convert.sparsify.sparsify_` for a model);
    the constructor only allocates the buffers, so a saved state dict loads into
    ``RSparseLinear(in_features, out_features, rank, bias)``.

    Args:
        in_features, out_features: as ``nn.Linear``.
        rank: ``r``, columns of the low-rank factors (0: no low-rank path).
        bias: keep a bias parameter.
        channel_score: ``"weight_norm"`` (R-Sparse: ``|x_i| ||W[:, i]||``) or ``"magnitude"`` (TEAL: ``|x_i|``).

    Attributes (all in ``state_dict``): ``weight [out, in]``, ``bias [out]``, ``lr_out = U_r S_r [out, r]``,
    ``lr_in = V_r^T [r, in]``, ``scale [in]``, ``threshold`` (scalar; ``-inf`` keeps every channel
    sparse-exact, ``+inf`` sends every channel to the low-rank path, NaN = not calibrated).

    Shapes: ``forward(x: [..., in]) -> [..., out]``. ``mode = "dense"`` bypasses the split.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        channel_score: str = "weight_norm",
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if (
            not isinstance(rank, int)
            or isinstance(rank, bool)
            or not 0 <= rank <= min(in_features, out_features)
        ):
            raise ValueError(f"rank: expected an int in [0, {min(in_features, out_features)}], got {rank!r}")
        if channel_score not in CHANNEL_SCORES:
            raise ValueError(f"channel_score: expected one of {CHANNEL_SCORES}, got {channel_score!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.rank = rank
        self.channel_score = channel_score
        self.mode = "r_sparse"
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_buffer("lr_out", torch.zeros(out_features, rank))
        self.register_buffer("lr_in", torch.zeros(rank, in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.register_buffer("threshold", torch.tensor(float("nan")))
        # the fraction t of channels the calibration sent to the low-rank path (for FLOP counts)
        self.lowrank_fraction = float("nan")

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        sparsity: float = 0.5,
        sparse_ratio: float = 0.75,
        calibration: torch.Tensor | None = None,
        channel_score: str = "weight_norm",
    ) -> RSparseLinear:
        """R-Sparse version of ``linear`` at ``sparsity`` / ``sparse_ratio`` (module docstring).

        Args:
            linear: the trained layer (weights are copied).
            sparsity, sparse_ratio: ``s`` and ``alpha`` in ``[0, 1]``.
            calibration: inputs ``[..., in]`` the layer saw on a calibration sequence; they fix the
                threshold. May be None only when no threshold is needed (``t`` is 0 or 1); otherwise
                call :meth:`calibrate` before the first forward.
            channel_score: see the class.
        """
        return LayerFactors.from_linear(linear, calibration, channel_score).build(sparsity, sparse_ratio)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, lowrank_fraction: float) -> None:
        """Set the threshold to the ``lowrank_fraction`` quantile of ``|x * scale|`` over ``x: [..., in]``."""
        t = _check_fraction("lowrank_fraction", lowrank_fraction)
        scores = channel_scores(x, self.scale, self.in_features).flatten().sort().values
        self.threshold.fill_(threshold_at(scores, t))
        self.lowrank_fraction = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features}, got shape {tuple(x.shape)}")
        if self.mode == "dense":
            return F.linear(x, self.weight, self.bias)
        if torch.isnan(self.threshold):
            raise RuntimeError(
                "RSparseLinear: not calibrated (threshold is NaN); call calibrate(x, lowrank_fraction) "
                "or build the model with linearlab.convert.sparsify.sparsify_"
            )
        keep = (x * self.scale).abs() > self.threshold
        sparse_x = torch.where(keep, x, torch.zeros_like(x))
        y = F.linear(sparse_x, self.weight, self.bias)
        if self.rank:
            rest = x - sparse_x
            y = y + F.linear(F.linear(rest, self.lr_in), self.lr_out)
        return y

    def macs_per_token(self) -> float:
        """Multiply-adds per token the calibrated split costs: ``(1 - t) in out + r (in + out)``.

        (What the paper's budget counts; the sparse path is only that cheap with a sparse kernel.)
        """
        t = self.lowrank_fraction if self.lowrank_fraction == self.lowrank_fraction else 0.0
        return (1.0 - t) * self.in_features * self.out_features + self.rank * (
            self.in_features + self.out_features
        )

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}, channel_score={self.channel_score}"
        )


def channel_scores(x: torch.Tensor, scale: torch.Tensor, in_features: int) -> torch.Tensor:
    """``|x * scale|`` as ``[N, in]`` (float32) from inputs ``x: [..., in]``."""
    if x.shape[-1] != in_features:
        raise ValueError(f"calibration: expected inputs [..., {in_features}], got shape {tuple(x.shape)}")
    return (x.detach().reshape(-1, in_features).float() * scale.float()).abs()


def threshold_at(sorted_scores: torch.Tensor, t: float) -> float:
    """The threshold sending a fraction ``t`` of the (ascending) ``sorted_scores`` to the low-rank path.

    Scores ``<= threshold`` go low-rank; ``t = 0`` gives ``-inf`` (all exact), ``t = 1`` ``+inf``. The
    threshold sits midway between the last low-rank score and the next one, so rounding differences
    in recomputing a score do not flip a calibration entry.
    """
    n = sorted_scores.numel()
    k = int(round(t * n))
    if k <= 0:
        return float("-inf")
    if k >= n:
        return float("inf")
    return float((sorted_scores[k - 1] + sorted_scores[k]) / 2)


@dataclass
class LayerFactors:
    """What building an :class:`RSparseLinear` at any ``(s, alpha)`` needs, computed once per layer.

    Holds the weight, bias, the full SVD (float64, then float32) and the sorted calibration scores,
    so a search can rebuild the layer at many budgets without repeating the SVD.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None
    u: torch.Tensor  # [out, k] = U S
    vh: torch.Tensor  # [k, in]
    scale: torch.Tensor  # [in]
    sorted_scores: torch.Tensor | None  # ascending |x * scale| of the calibration inputs
    channel_score: str

    @classmethod
    @torch.no_grad()
    def from_linear(
        cls, linear: nn.Linear, calibration: torch.Tensor | None = None, channel_score: str = "weight_norm"
    ) -> LayerFactors:
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear: expected an nn.Linear, got {type(linear).__name__}")
        if channel_score not in CHANNEL_SCORES:
            raise ValueError(f"channel_score: expected one of {CHANNEL_SCORES}, got {channel_score!r}")
        w = linear.weight.detach()
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        if channel_score == "weight_norm":
            scale = w.double().norm(dim=0).to(w.dtype)
        else:
            scale = torch.ones(w.shape[1], dtype=w.dtype, device=w.device)
        scores = None
        if calibration is not None:
            scores = channel_scores(calibration, scale, w.shape[1]).flatten().sort().values
        return cls(
            weight=w.clone(),
            bias=None if linear.bias is None else linear.bias.detach().clone(),
            u=(u * s).to(w.dtype),
            vh=vh.to(w.dtype),
            scale=scale,
            sorted_scores=scores,
            channel_score=channel_score,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    def build(self, sparsity: float, sparse_ratio: float) -> RSparseLinear:
        """The layer at sparsity ``s`` and sparse ratio ``alpha`` (threshold from the calibration)."""
        out_f, in_f = self.shape
        rank, t = budget_split(in_f, out_f, sparsity, sparse_ratio)
        layer = RSparseLinear(in_f, out_f, rank, self.bias is not None, self.channel_score)
        layer.to(device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.weight)
            if self.bias is not None:
                layer.bias.copy_(self.bias)
            layer.lr_out.copy_(self.u[:, :rank])
            layer.lr_in.copy_(self.vh[:rank])
            layer.scale.copy_(self.scale)
            if t in (0.0, 1.0):
                layer.threshold.fill_(float("-inf") if t == 0.0 else float("inf"))
            elif self.sorted_scores is not None:
                layer.threshold.fill_(threshold_at(self.sorted_scores, t))
        layer.lowrank_fraction = t
        return layer


@dataclass
class RSparseConfig:
    """How :func:`~linearlab.linearlab.convert.linear_swap.convert_` turns each ``nn.Linear`` into R-Sparse.

    Args:
        sparsity: target sparsity ``s`` of every layer (fraction of multiply-adds saved); default 0.5.
        sparse_ratio: ``alpha``, the sparse path's share of the kept budget; default 0.75
            (1: activation sparsity only, 0: low-rank only).
        channel_score: ``"weight_norm"`` (R-Sparse) or ``"magnitude"`` (TEAL-style baseline).
        per_layer: ``fqn -> (sparsity, sparse_ratio)`` overriding the defaults (from :func:`search_budgets`).
        calibration: ``fqn -> inputs [..., in]`` the layer saw on the calibration sequence
            (:func:`linearlab.convert.sparsify.sparsify_` fills it). A layer without it is left
            uncalibrated unless its split needs no threshold.

    Example:
        >>> sparsify_(model, RSparseConfig(sparsity=0.5, sparse_ratio=0.75), calibration_ids)
    """

    sparsity: float = 0.5
    sparse_ratio: float = 0.75
    channel_score: str = "weight_norm"
    per_layer: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    calibration: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity)
        _check_fraction("sparse_ratio", self.sparse_ratio)
        if self.channel_score not in CHANNEL_SCORES:
            raise ValueError(f"channel_score: expected one of {CHANNEL_SCORES}, got {self.channel_score!r}")
        for fqn, pair in self.per_layer.items():
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"per_layer[{fqn!r}]: expected (sparsity, sparse_ratio), got {pair!r}")
            _check_fraction(f"per_layer[{fqn!r}] sparsity", pair[0])
            _check_fraction(f"per_layer[{fqn!r}] sparse_ratio", pair[1])

    def budget(self, fqn: str) -> tuple[float, float]:
        s, a = self.per_layer.get(fqn, (self.sparsity, self.sparse_ratio))
        return float(s), float(a)

    def replace(self, module: nn.Linear, fqn: str) -> RSparseLinear:
        s, a = self.budget(fqn)
        factors = LayerFactors.from_linear(module, self.calibration.get(fqn), self.channel_score)
        return factors.build(s, a)


def layer_macs(in_features: int, out_features: int, sparsity: float, sparse_ratio: float) -> float:
    """Per-token multiply-adds of a layer at ``(s, alpha)`` as the budget counts them (``~ (1 - s) in out``)."""
    rank, t = budget_split(in_features, out_features, sparsity, sparse_ratio)
    return (1 - t) * in_features * out_features + rank * (in_features + out_features)


def project_sparsities(
    raw: torch.Tensor, weights: torch.Tensor, target: float, lo: float = 0.0, hi: float = 0.95
) -> torch.Tensor:
    """Shift per-layer sparsities ``raw: [L]`` so their ``weights``-weighted mean is ``target``, within ``[lo, hi]``.

    Bisection on a common shift (clipping makes the mean monotone in it), so the model-level budget
    (multiply-adds saved, weighted by each layer's ``in * out``) is met by every candidate.
    """
    w = weights / weights.sum()
    a, b = -1.0, 1.0
    for _ in range(60):
        mid = (a + b) / 2
        if float((w * (raw + mid).clamp(lo, hi)).sum()) < target:
            a = mid
        else:
            b = mid
    return (raw + (a + b) / 2).clamp(lo, hi)


@dataclass
class SearchResult:
    """Outcome of :func:`search_budgets`: the best per-layer budgets and the loss trace per generation."""

    per_layer: dict[str, tuple[float, float]]
    best_loss: float
    uniform_loss: float
    history: list[float]


@torch.no_grad()
def search_budgets(
    factors: Mapping[str, LayerFactors],
    evaluate: Callable[[Mapping[str, RSparseLinear]], float],
    target_sparsity: float,
    sparse_ratio: float = 0.75,
    generations: int = 20,
    population: int = 16,
    mutation: float = 0.1,
    seed: int = 0,
) -> SearchResult:
    """The paper's evolutionary search for per-layer ``(s, alpha)`` on one calibration sequence.

    Each candidate assigns every layer a sparsity and a sparse ratio; sparsities are projected so the
    model-level sparsity (weighted by ``in * out``) equals ``target_sparsity``. ``evaluate`` gets the
    built layers by fqn and returns the calibration loss (lower is better). Each generation keeps the
    best quarter, and refills the population by uniform crossover of two survivors plus Gaussian
    mutation (std ``mutation``). The uniform split ``(target_sparsity, sparse_ratio)`` is the seed
    candidate, so the result is never worse on the calibration sequence than the uniform split.
    """
    _check_fraction("target_sparsity", target_sparsity)
    _check_fraction("sparse_ratio", sparse_ratio)
    if not factors:
        raise ValueError("factors: expected at least one layer to search over, got none")
    for name, value in (("generations", generations), ("population", population)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    names = list(factors)
    sizes = torch.tensor(
        [float(factors[n].shape[0] * factors[n].shape[1]) for n in names], dtype=torch.float64
    )
    gen = torch.Generator().manual_seed(seed)
    hi = max(0.95, target_sparsity)

    def fitness(cand: torch.Tensor) -> float:
        layers = {n: factors[n].build(float(cand[0, i]), float(cand[1, i])) for i, n in enumerate(names)}
        return float(evaluate(layers))

    def fix(cand: torch.Tensor) -> torch.Tensor:
        cand = cand.clone()
        cand[0] = project_sparsities(cand[0], sizes, target_sparsity, 0.0, hi)
        cand[1] = cand[1].clamp(0.0, 1.0)
        return cand

    uniform = torch.tensor([[target_sparsity] * len(names), [sparse_ratio] * len(names)], dtype=torch.float64)
    uniform_loss = fitness(uniform)
    pop: list[tuple[float, torch.Tensor]] = [(uniform_loss, uniform)]
    while len(pop) < population:
        cand = fix(uniform + mutation * torch.randn(uniform.shape, generator=gen, dtype=torch.float64))
        pop.append((fitness(cand), cand))
    history = [min(p[0] for p in pop)]
    keep = max(2, population // 4)
    for _ in range(generations):
        pop.sort(key=lambda p: p[0])
        parents = pop[:keep]
        children: list[tuple[float, torch.Tensor]] = []
        while len(parents) + len(children) < population:
            i, j = torch.randint(0, len(parents), (2,), generator=gen).tolist()
            mask = torch.rand(uniform.shape, generator=gen) < 0.5
            child = torch.where(mask, parents[i][1], parents[j][1])
            child = fix(child + mutation * torch.randn(uniform.shape, generator=gen, dtype=torch.float64))
            children.append((fitness(child), child))
        pop = parents + children
        history.append(min(p[0] for p in pop))
    best_loss, best = min(pop, key=lambda p: p[0])
    per_layer = {n: (float(best[0, i]), float(best[1, i])) for i, n in enumerate(names)}
    return SearchResult(per_layer, best_loss, uniform_loss, history)


def model_sparsity(
    per_layer: Mapping[str, tuple[float, float]], shapes: Mapping[str, Sequence[int]]
) -> float:
    """Model-level sparsity: multiply-adds saved over the layers in ``per_layer``, weighted by ``out * in``."""
    total = sum(shapes[n][0] * shapes[n][1] for n in per_layer)
    used = sum(layer_macs(shapes[n][1], shapes[n][0], *per_layer[n]) for n in per_layer)
    return 1.0 - used / total


declare_paper(
    arxiv="2504.19449",
    short="R-Sparse",
    title="R-Sparse: Rank-Aware Activation Sparsity for Efficient LLM Inference",
    authors="Zhang, Liu, Tian, Khaitan, Wang, Li",
    venue="ICLR 2025",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.layers.linear.r_sparse.RSparseLinear",
        "linearlab.layers.linear.r_sparse.RSparseConfig",
        "linearlab.layers.linear.r_sparse.search_budgets",
        "linearlab.convert.sparsify.sparsify_",
    ),
    recipes=("r-sparse",),
    usage=(
        "from linearlab.convert.sparsify import sparsify_; from linearlab.layers.linear.r_sparse import RSparseConfig\n"
        "sparsify_(model, RSparseConfig(sparsity=0.5, sparse_ratio=0.75), torch.randint(0, 256, (1, 64)))"
    ),
    claim=(
        "Comparable accuracy at 50% model-level sparsity on Llama-2/3 and Mistral across ten tasks, "
        "43% faster end to end with custom kernels (abstract)."
    ),
    note="Sparsity is applied to every token (no dense prefill) and measured as quality at equal "
    "multiply-adds; no sparse kernel, so no wall-clock speed-up on CPU.",
)
