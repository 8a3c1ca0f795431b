"""VQ-Logits: an output head with a small codebook and a vocabulary-to-code map (arXiv 2505.10202).

Shao, Huang, Wu, Cheng, Wu, Shan, Zheng, "VQ-Logits: Compressing the Output Bottleneck of Large
Language Models via Vector Quantized Logits", 2025 (no code released; see
``shared/notes/linear-layer-replacements.md`` §5).

The ``V x d`` output matrix is replaced by a codebook ``C: [K, d]`` (``K << V``) and a map
``M: {0..V-1} -> {0..K-1}``::

    code logits  L_c = h C^T                       [..., K]
    token logits L_v[..., i] = L_c[..., M(i)]      [..., V]   (a gather: the "scatter" of the paper)

so all tokens of one code share a logit. The softmax over ``V`` then has the closed form
``log P(i) = L_c[M(i)] - logsumexp_k (L_c[k] + log n_k)`` with ``n_k = |M^-1(k)|``: the loss costs
``O(K)`` per token instead of ``O(V)`` (:meth:`VQLogitsHead.nll`). ``C`` and ``M`` start from k-means of a
trained head's rows (:meth:`VQLogitsHead.from_head`); ``C`` is trainable, ``M`` is a buffer.

Tokens in one code are indistinguishable, which caps the quality (``log n_{M(y)}`` nats above a
perfect within-code model). ``per_token_bias=True`` adds a learned bias per token (``V`` numbers, still
``O(K)`` per token in :meth:`~VQLogitsHead.nll`) as an optional, non-paper, remedy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.papers import LAYERS, declare_paper


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class VQLogitsHead(nn.Module):
    """Logits over ``vocab_size`` tokens from ``num_codes`` code vectors (module docstring).

    Args:
        in_features: hidden size ``d``.
        vocab_size: ``V``.
        num_codes: ``K`` (``1 <= K <= V``).
        per_token_bias: add a learned bias per token (default False: the paper's pure form).

    Attributes: ``codebook [K, d]`` (parameter), ``code_of [V]`` (int64 buffer, the map ``M``),
    ``token_bias [V]`` (parameter, only with ``per_token_bias``).

    Shapes: ``forward(h: [..., d]) -> [..., V]`` logits; ``code_logits(h) -> [..., K]``;
    ``nll(h: [..., d], targets: [...]) -> [...]`` negative log-likelihood in nats.

    Example:
        >>> head = VQLogitsHead.from_head(model.lm_head, num_codes=256)   # k-means of the trained rows
        >>> loss = head.nll(hidden, targets).mean()
    """

    def __init__(
        self, in_features: int, vocab_size: int, num_codes: int, per_token_bias: bool = False
    ) -> None:
        super().__init__()
        _positive_int("in_features", in_features)
        _positive_int("vocab_size", vocab_size)
        _positive_int("num_codes", num_codes)
        if num_codes > vocab_size:
            raise ValueError(f"num_codes: expected at most vocab_size={vocab_size}, got {num_codes}")
        self.in_features = in_features
        self.vocab_size = vocab_size
        self.num_codes = num_codes
        self.codebook = nn.Parameter(torch.randn(num_codes, in_features) * in_features**-0.5)
        # an even default map so an untrained head is valid; from_head replaces it
        self.register_buffer("code_of", torch.arange(vocab_size) % num_codes)
        self.token_bias = nn.Parameter(torch.zeros(vocab_size)) if per_token_bias else None

    # for code that treats the head like nn.Linear (shape checks, dtype lookups)
    @property
    def out_features(self) -> int:
        return self.vocab_size

    @property
    def weight(self) -> torch.Tensor:
        """The effective ``[V, d]`` output matrix ``C[M]`` (a gather; for inspection, not for speed)."""
        return self.codebook[self.code_of]

    def set_mapping(self, code_of: torch.Tensor) -> None:
        """Replace the map ``M`` by ``code_of: [V]`` (ints in ``[0, K)``)."""
        if not isinstance(code_of, torch.Tensor) or code_of.shape != (self.vocab_size,):
            got = tuple(code_of.shape) if isinstance(code_of, torch.Tensor) else type(code_of).__name__
            raise ValueError(f"code_of: expected a [{self.vocab_size}] tensor of code ids, got {got}")
        if code_of.dtype.is_floating_point or code_of.dtype == torch.bool:
            raise ValueError(f"code_of: expected integer code ids, got dtype {code_of.dtype}")
        lo, hi = int(code_of.min()), int(code_of.max())
        if lo < 0 or hi >= self.num_codes:
            raise ValueError(
                f"code_of: code ids must be in [0, {self.num_codes}), got values in [{lo}, {hi}]"
            )
        self.code_of.copy_(code_of.long())

    def code_logits(self, h: torch.Tensor) -> torch.Tensor:
        """``h: [..., d] -> [..., K]``: the ``K`` distinct logit values."""
        if h.shape[-1] != self.in_features:
            raise ValueError(f"h: expected last dim {self.in_features}, got shape {tuple(h.shape)}")
        return F.linear(h, self.codebook)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.code_logits(h)[..., self.code_of]
        if self.token_bias is not None:
            logits = logits + self.token_bias
        return logits

    def code_counts(self) -> torch.Tensor:
        """``n_k``: tokens per code, ``[K]`` (float)."""
        return torch.bincount(self.code_of, minlength=self.num_codes).to(self.codebook.dtype)

    def nll(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-token ``-log P(targets | h)`` in nats, ``[...]``, without forming the ``V`` logits.

        ``log P(i) = L_c[M(i)] + b_i - logsumexp_k (L_c[k] + log sum_{j: M(j)=k} e^{b_j})`` (``b = 0``
        without a per-token bias, so the inner term is ``log n_k``). Codes with no token get ``-inf``.
        """
        if targets.shape != h.shape[:-1]:
            raise ValueError(f"targets: expected shape {tuple(h.shape[:-1])}, got {tuple(targets.shape)}")
        lc = self.code_logits(h)
        if self.token_bias is None:
            log_mass = self.code_counts().log()
            own = 0.0
        else:
            # log sum_{j in code k} exp(b_j), computed once per call in O(V)
            b = self.token_bias
            top = torch.full((self.num_codes,), float("-inf"), dtype=b.dtype, device=b.device)
            top = top.scatter_reduce(0, self.code_of, b.detach(), reduce="amax", include_self=True)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            summed = torch.zeros(self.num_codes, dtype=b.dtype, device=b.device).index_add(
                0, self.code_of, (b - top[self.code_of]).exp()
            )
            log_mass = summed.log() + top
            own = b[targets]
        norm = torch.logsumexp(lc + log_mass, dim=-1)
        picked = lc.gather(-1, self.code_of[targets].unsqueeze(-1)).squeeze(-1)
        return norm - picked - own

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, vocab_size={self.vocab_size}, num_codes={self.num_codes}, "
            f"per_token_bias={self.token_bias is not None}"
        )

    @classmethod
    @torch.no_grad()
    def from_head(
        cls,
        head: nn.Linear | torch.Tensor,
        num_codes: int,
        mapping: torch.Tensor | None = None,
        per_token_bias: bool | None = None,
        seed: int = 0,
        max_iter: int = 50,
    ) -> VQLogitsHead:
        """A VQ head approximating a trained head ``W: [V, d]`` (an ``nn.Linear`` or the matrix itself).

        Args:
            head: the trained output layer (or a tied embedding matrix).
            num_codes: ``K``.
            mapping: ``[V]`` code ids to use; default: k-means of the rows of ``W``
                (scikit-learn ``KMeans``, k-means++ start, ``max_iter`` Lloyd steps, ``seed``).
                The codebook is the mean of each code's rows (with an identity map and ``K = V``
                the head reproduces ``W`` exactly).
            per_token_bias: default True iff ``head`` has a bias (then ``token_bias`` starts at it).
        """
        if isinstance(head, nn.Linear):
            weight, bias = head.weight.detach(), (None if head.bias is None else head.bias.detach())
        elif isinstance(head, torch.Tensor) and head.dim() == 2:
            weight, bias = head.detach(), None
        else:
            got = tuple(head.shape) if isinstance(head, torch.Tensor) else type(head).__name__
            raise TypeError(f"head: expected an nn.Linear or a [V, d] weight tensor, got {got}")
        vocab, d = weight.shape
        with_bias = bias is not None if per_token_bias is None else per_token_bias
        out = cls(d, vocab, num_codes, per_token_bias=with_bias).to(device=weight.device, dtype=weight.dtype)
        if mapping is None:
            mapping = kmeans_assign(weight, num_codes, seed=seed, max_iter=max_iter)
        out.set_mapping(mapping.to(weight.device))
        sums = torch.zeros(num_codes, d, dtype=torch.float64, device=weight.device)
        sums.index_add_(0, out.code_of, weight.double())
        counts = out.code_counts().double().clamp_min(1).unsqueeze(1)
        out.codebook.copy_((sums / counts).to(weight.dtype))
        if with_bias and bias is not None:
            out.token_bias.copy_(bias)
        return out


def kmeans_assign(rows: torch.Tensor, num_codes: int, seed: int = 0, max_iter: int = 50) -> torch.Tensor:
    """k-means cluster of each row of ``rows: [V, d]`` into ``num_codes`` clusters (scikit-learn), ``[V]`` int64."""
    from sklearn.cluster import KMeans

    if num_codes > rows.shape[0]:
        raise ValueError(f"num_codes: expected at most {rows.shape[0]} (one per row), got {num_codes}")
    km = KMeans(n_clusters=num_codes, n_init=1, max_iter=max_iter, random_state=seed)
    labels = km.fit_predict(rows.detach().double().cpu().numpy())
    return torch.as_tensor(labels, dtype=torch.long)


class VQLogitsConfig:
    """``convert_`` config turning an output ``nn.Linear`` (e.g. HF ``lm_head``) into a :class:`VQLogitsHead`.

    Example:
        >>> convert_(model, VQLogitsConfig(num_codes=256), filter_fn=lambda m, fqn: fqn == "lm_head")
    """

    def __init__(self, num_codes: int, per_token_bias: bool | None = None, seed: int = 0, max_iter: int = 50):
        self.num_codes = _positive_int("num_codes", num_codes)
        self.per_token_bias = per_token_bias
        self.seed = seed
        self.max_iter = _positive_int("max_iter", max_iter)

    def replace(self, module: nn.Linear, fqn: str) -> VQLogitsHead:
        if module.out_features < self.num_codes:
            raise ValueError(
                f"num_codes: {self.num_codes} exceeds the {module.out_features} outputs of {fqn!r}; "
                "is filter_fn choosing the output head?"
            )
        return VQLogitsHead.from_head(
            module, self.num_codes, None, self.per_token_bias, self.seed, self.max_iter
        )


declare_paper(
    arxiv="2505.10202",
    short="VQ-Logits",
    title="VQ-Logits: Compressing the Output Bottleneck of Large Language Models via Vector Quantized Logits",
    authors="Shao, Huang, Wu, Cheng, Wu, Shan, Zheng",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.layers.heads.vq_logits.VQLogitsHead",
        "linearlab.layers.heads.vq_logits.VQLogitsConfig",
    ),
    recipes=("vq-logits",),
    usage=(
        "from linearlab.layers.heads.vq_logits import VQLogitsHead\n"
        "head = VQLogitsHead.from_head(model.embed.weight, num_codes=16); logits = head(x)  # [2, 32, 256]"
    ),
    claim="Up to 99% fewer output-layer parameters and 6x faster logits at only +4% perplexity on "
    "WikiText-103 and C4 (abstract).",
    note="No code was released: the map is fixed after k-means (the paper's learned-map variant is not "
    "reproduced); the per-token bias is our optional addition.",
)
