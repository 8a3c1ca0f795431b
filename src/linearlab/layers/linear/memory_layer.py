"""MemoryFormer's memory layer: a linear map replaced by hash-table lookups (arXiv 2411.12992).

Ding, Tang, Qin, Zhou, Xu, Li, Han, Liao, Wang, "MemoryFormer: Minimize Transformer Computation by
Removing Fully-Connected Layers", NeurIPS 2024 (official code ``C0-Design/MemoryFormer``,
``memory_module/memory.py``; see ``shared/notes/linear-layer-replacements.md`` §6).

The input ``x: [..., d_in]`` is cut into ``K = ceil(d_in / tau)`` chunks ``z_k`` of ``tau`` numbers (the
last one zero-padded). Each chunk is hashed by the signs of its entries,
``h(z_k) = sum_i 1[z_{k,i} >= 0] 2^(tau-1-i)``, to a row of its own table ``T_k: [2^tau, d_out]``, and

    y = sum_k p(z_k) T_k[h(z_k)] + b,      p(z) = prod_i sigmoid(2 |z_i|)

``p`` is the softmax probability of the hashed corner ``sign(z)`` among all ``2^tau`` corners
``s in {-1, 1}^tau`` with logits ``<s, z>`` (the paper's ``exp(sum |z_i|) / prod (e^{z_i} + e^{-z_i})``);
``score="repo"`` multiplies it by ``||z||_1`` as the current official code does. The index is piecewise
constant, so gradients reach the input only through ``p`` (its derivative carries ``sign(z)``) and the
tables only at the retrieved rows: the layer trains end to end.

Cost per token: ``K d_out`` multiply-adds for the weighted sum (``1/tau`` of a linear layer's
``d_in d_out``) plus ``O(d_in)`` for hashing and scores; parameters ``K 2^tau d_out`` (``2^tau / tau`` times a
linear layer's). There is no conversion from a trained ``nn.Linear``: the paper trains from scratch, so
:class:`MemoryLayerConfig` builds fresh tables of the replaced layer's shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.papers import LAYERS, declare_paper

SCORES = ("paper", "repo")


class MemoryLayer(nn.Module):
    """Hashing memory layer ``[..., in_features] -> [..., out_features]`` (module docstring).

    Args:
        in_features, out_features: as ``nn.Linear``.
        code_length: ``tau``, bits per hash (1..16); ``K = ceil(in_features / tau)`` tables of ``2^tau`` rows.
        bias: learn an output bias.
        score: ``"paper"`` (``p(z)``) or ``"repo"`` (``||z||_1 p(z)``).
        init_std: std of the table entries at init (the official code's 0.02).

    Attributes: ``tables [K * 2^tau, out_features]`` (one parameter; rows ``k 2^tau .. (k+1) 2^tau - 1``
    are table ``k``), ``bias [out_features]``.

    Example:
        >>> layer = MemoryLayer(64, 128, code_length=8)
        >>> y = layer(torch.randn(2, 10, 64))              # [2, 10, 128]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        code_length: int = 8,
        bias: bool = True,
        score: str = "paper",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if not isinstance(code_length, int) or isinstance(code_length, bool) or not 1 <= code_length <= 16:
            raise ValueError(
                f"code_length: expected an int in [1, 16] (2^tau table rows), got {code_length!r}"
            )
        if score not in SCORES:
            raise ValueError(f"score: expected one of {SCORES}, got {score!r}")
        if not init_std > 0:
            raise ValueError(f"init_std: expected > 0, got {init_std!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.code_length = code_length
        self.num_tables = math.ceil(in_features / code_length)
        self.score = score
        rows = self.num_tables * 2**code_length
        self.tables = nn.Parameter(torch.randn(rows, out_features) * init_std)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        # bit weights 2^(tau-1-i) and each table's first row, as buffers so they follow .to(device)
        self.register_buffer("bit_values", 2 ** torch.arange(code_length - 1, -1, -1), persistent=False)
        self.register_buffer(
            "table_offsets", torch.arange(self.num_tables) * 2**code_length, persistent=False
        )

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [..., in] -> [N, K, tau]`` (zero-padded to ``K tau``)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected last dim {self.in_features}, got shape {tuple(x.shape)}")
        flat = x.reshape(-1, self.in_features)
        pad = self.num_tables * self.code_length - self.in_features
        if pad:
            flat = F.pad(flat, (0, pad))
        return flat.view(-1, self.num_tables, self.code_length)

    def hash_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Sign-bit code of every chunk ``z: [N, K, tau] -> [N, K]`` in ``[0, 2^tau)`` (int64)."""
        return ((z >= 0).long() * self.bit_values).sum(-1)

    def scores(self, z: torch.Tensor) -> torch.Tensor:
        """Weight of each retrieved row, ``[N, K]``: ``prod_i sigmoid(2|z_i|)`` (times ``||z||_1`` for "repo")."""
        # log-space product: tau factors in (1/2, 1] cannot underflow, but the sum is cheaper and stabler
        p = F.logsigmoid(2 * z.abs()).sum(-1).exp()
        if self.score == "repo":
            p = p * z.abs().sum(-1)
        return p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.chunks(x)
        rows = self.hash_codes(z) + self.table_offsets  # [N, K] rows of the flat table
        weights = self.scores(z).to(self.tables.dtype)
        # one weighted bag of K rows per token: never forms the [N, K, out] gather
        y = F.embedding_bag(rows, self.tables, mode="sum", per_sample_weights=weights)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)

    def macs_per_token(self) -> int:
        """Multiply-adds per token of the weighted sum ``K out`` (hashing and scores are ``O(in)`` extra)."""
        return self.num_tables * self.out_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, code_length={self.code_length}, "
            f"num_tables={self.num_tables}, bias={self.bias is not None}, score={self.score}"
        )


class MemoryLayerConfig:
    """``convert_`` config: each chosen ``nn.Linear`` becomes a fresh :class:`MemoryLayer` of its shape.

    The replaced weights are not used (MemoryFormer trains from scratch); the bias is kept iff the
    linear had one.

    Example:
        >>> convert_(model, MemoryLayerConfig(code_length=8), filter_fn=lambda m, fqn: "blocks" in fqn)
    """

    def __init__(self, code_length: int = 8, score: str = "paper", init_std: float = 0.02) -> None:
        MemoryLayer(1, 1, code_length, score=score, init_std=init_std)  # validates the arguments
        self.code_length = code_length
        self.score = score
        self.init_std = init_std

    def replace(self, module: nn.Linear, fqn: str) -> MemoryLayer:
        layer = MemoryLayer(
            module.in_features,
            module.out_features,
            self.code_length,
            bias=module.bias is not None,
            score=self.score,
            init_std=self.init_std,
        )
        return layer.to(device=module.weight.device, dtype=module.weight.dtype)


declare_paper(
    arxiv="2411.12992",
    short="MemoryFormer",
    title="MemoryFormer: Minimize Transformer Computation by Removing Fully-Connected Layers",
    authors="Ding, Tang, Qin, Zhou, Xu, Li, Han, Liao, Wang",
    venue="NeurIPS 2024",
    area=LAYERS,
    status="partial",
    objects=(
        "linearlab.layers.linear.memory_layer.MemoryLayer",
        "linearlab.layers.linear.memory_layer.MemoryLayerConfig",
    ),
    recipes=("memoryformer",),
    usage=(
        "from linearlab.layers.linear.memory_layer import MemoryLayer\n"
        "y = MemoryLayer(64, 128, code_length=8)(x)   # [2, 32, 128]"
    ),
    claim="Hash-table memory layers replace the fully-connected layers and match or beat Pythia baselines "
    "at lower FLOPs per block (third-party summaries; tables not verified).",
    note="Every linear layer is swapped one for one; the paper's expanded-bit FFN (ML1 -> LayerNorm -> ML2 "
    "with tau + 2 bit codes) is not built, and no CUDA gather kernel, so FLOPs are analytic.",
)
