"""``ModelConfig``: one validated dataclass for every MixerLM, pure or hybrid."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from linearlab.layers.norms import NORMS
from linearlab.papers import MIXERS, declare_paper

MLPS = ("glu", "mlp", "none")

# one letter per layer in ``block_pattern``; e.g. "GGGA" = three GLA layers then one softmax layer
DEFAULT_PATTERN_MIXERS: dict[str, str] = {
    "A": "softmax",
    "S": "sliding_window",
    "L": "linear_attention",
    "G": "gla",
    "D": "deltanet",
    "N": "gated_deltanet",
    "M": "mom",
    "R": "retnet",
    "T": "transnormer",
    "H": "lightning",
    "B": "slab",
    "Z": "lssl",
}


@dataclass
class ModelConfig:
    """Configuration of :class:`linearlab.models.MixerLM`.

    Args:
        vocab_size: number of token ids V (default 256: bytes).
        d_model: residual width D (default 64).
        n_layers: number of blocks (default 2).
        mixer: registered mixer name used by every layer when ``block_pattern`` is None
            (default ``"gla"``).
        mixer_kwargs: extra kwargs for ``mixer`` (e.g. ``{"num_heads": 4}``); with a
            ``block_pattern`` they apply to the layers whose mixer is ``mixer``.
        block_pattern: one letter per layer (``len == n_layers``) choosing that layer's mixer
            through ``pattern_mixers``; e.g. ``"GGGA"`` is a 3:1 GLA/softmax hybrid (default None).
        pattern_mixers: letter -> mixer name (default: A softmax, S sliding_window,
            L linear_attention, G gla, D deltanet, N gated_deltanet, M mom, R retnet,
            T transnormer, H lightning, B slab, Z lssl).
        pattern_kwargs: letter -> kwargs for that letter's layers (default {}).
        mlp: channel mixer after each token mixer: ``"glu"`` (SwiGLU), ``"mlp"`` (GELU) or
            ``"none"`` (default ``"glu"``).
        mlp_ratio: hidden width / d_model (default 4.0; a GLU uses 2/3 of it so both kinds have
            the same parameter count).
        norm: ``"rmsnorm"``, ``"layernorm"`` or ``"repbn"`` (SLAB's progressive BatchNorm;
            default ``"rmsnorm"``).
        norm_eps: epsilon of every norm (default 1e-5).
        repbn_warmup_steps: optimizer steps (``MixerLM.advance_schedules`` calls) over which
            RepBN anneals LayerNorm -> BatchNorm (default 1000; only used with ``norm="repbn"``).
        tie_embeddings: LM head shares the embedding matrix (default True).
        max_seq_len: longest sequence accepted by ``forward`` / ``generate`` (validation only; no
            positional table depends on it; default 2048).
        init_std: std of the normal init of embedding, MLP and head weights (default 0.02;
            mixers keep their own initialisation).

    Example:
        >>> cfg = ModelConfig(d_model=128, n_layers=4, block_pattern="GGGA",
        ...                   pattern_kwargs={"G": {"num_heads": 4}})
    """

    vocab_size: int = 256
    d_model: int = 64
    n_layers: int = 2
    mixer: str = "gla"
    mixer_kwargs: dict[str, Any] = field(default_factory=dict)
    block_pattern: str | None = None
    pattern_mixers: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PATTERN_MIXERS))
    pattern_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    mlp: str = "glu"
    mlp_ratio: float = 4.0
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    repbn_warmup_steps: int = 1000
    tie_embeddings: bool = True
    max_seq_len: int = 2048
    init_std: float = 0.02

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raises ValueError naming the field, the value and what is allowed.

        Called on construction and again by ``MixerLM`` (``--set`` overrides assign fields after
        construction, which skips ``__post_init__``).
        """
        for name in ("vocab_size", "d_model", "n_layers", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if not isinstance(self.mixer, str) or not self.mixer:
            raise ValueError(f"ModelConfig.mixer must be a non-empty mixer name, got {self.mixer!r}")
        if not isinstance(self.mixer_kwargs, dict):
            raise ValueError(
                f"ModelConfig.mixer_kwargs must be a dict, got {type(self.mixer_kwargs).__name__}"
            )
        if self.mlp not in MLPS:
            raise ValueError(f"ModelConfig.mlp must be one of {MLPS}, got {self.mlp!r}")
        if self.norm not in NORMS:
            raise ValueError(f"ModelConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if not self.mlp_ratio > 0:
            raise ValueError(f"ModelConfig.mlp_ratio must be > 0, got {self.mlp_ratio!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"ModelConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if not self.init_std > 0:
            raise ValueError(f"ModelConfig.init_std must be > 0, got {self.init_std!r}")
        if not isinstance(self.repbn_warmup_steps, int) or self.repbn_warmup_steps < 0:
            raise ValueError(
                f"ModelConfig.repbn_warmup_steps must be an int >= 0, got {self.repbn_warmup_steps!r}"
            )
        self._check_pattern()

    def _check_pattern(self) -> None:
        for letter, name in self.pattern_mixers.items():
            if not (isinstance(letter, str) and len(letter) == 1) or not isinstance(name, str):
                raise ValueError(
                    f"ModelConfig.pattern_mixers maps one letter to a mixer name, got {letter!r}: {name!r}"
                )
        allowed = ", ".join(f"{k}={v}" for k, v in sorted(self.pattern_mixers.items()))
        for letter, kwargs in self.pattern_kwargs.items():
            if letter not in self.pattern_mixers:
                raise ValueError(
                    f"ModelConfig.pattern_kwargs: unknown letter {letter!r}; allowed letters: {allowed}"
                )
            if not isinstance(kwargs, dict):
                raise ValueError(
                    f"ModelConfig.pattern_kwargs[{letter!r}] must be a dict, got {type(kwargs).__name__}"
                )
        if self.block_pattern is None:
            return
        if not isinstance(self.block_pattern, str):
            raise ValueError(
                f"ModelConfig.block_pattern must be a string of layer letters, got {self.block_pattern!r}"
            )
        if len(self.block_pattern) != self.n_layers:
            raise ValueError(
                f"ModelConfig.block_pattern {self.block_pattern!r} has {len(self.block_pattern)} letters but "
                f"n_layers={self.n_layers}; give exactly one letter per layer"
            )
        for i, letter in enumerate(self.block_pattern):
            if letter not in self.pattern_mixers:
                raise ValueError(
                    f"ModelConfig.block_pattern {self.block_pattern!r}: unknown letter {letter!r} at layer {i}; "
                    f"allowed letters: {allowed}"
                )

    def layer_mixers(self) -> list[tuple[str, dict[str, Any]]]:
        """``(mixer_name, mixer_kwargs)`` for each of the ``n_layers`` layers, in order."""
        if self.block_pattern is None:
            return [(self.mixer, dict(self.mixer_kwargs)) for _ in range(self.n_layers)]
        layers = []
        for letter in self.block_pattern:
            name = self.pattern_mixers[letter]
            kwargs = dict(self.mixer_kwargs) if name == self.mixer else {}
            kwargs.update(self.pattern_kwargs.get(letter, {}))
            layers.append((name, kwargs))
        return layers

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the channel mixer (GLU: 2/3 of ``mlp_ratio * d_model``, rounded)."""
        hidden = self.mlp_ratio * self.d_model
        if self.mlp == "glu":
            hidden = 2 * hidden / 3
        return max(1, round(hidden))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (inverse: ``ModelConfig(**d)``)."""
        return dataclasses.asdict(self)


declare_paper(
    arxiv="2507.06457",
    short="Hybrid Linear Attention analysis",
    title="A Systematic Analysis of Hybrid Linear Attention",
    authors="Wang, Zhu, Abreu, Shan, Kergan, Pan, Chou, Li, Zhang, Huang, Eshraghian",
    area=MIXERS,
    status="partial",
    objects=("linearlab.models.ModelConfig", "linearlab.models.MixerLM"),
    recipes=("hybrid-ratio",),
    usage=(
        "from linearlab.models import MixerLM, ModelConfig\n"
        'lm = MixerLM(ModelConfig(vocab_size=256, d_model=64, n_layers=4, block_pattern="NNNA"))  # 3:1 Gated DeltaNet:softmax'
    ),
    claim=(
        "Over 72 models (340M/20B and 1.3B/100B tokens, six linear mixers, five linear:full ratios) "
        "language modelling stays roughly flat across ratios while recall rises steeply with full "
        "attention, most below 3:1; selective gating, hierarchical recurrence and controlled "
        "forgetting matter; HGRN-2 or Gated DeltaNet at 3:1 to 6:1 reach Transformer-level recall "
        "with a much smaller KV cache."
    ),
    note=(
        "HGRN and HGRN-2 (two of the paper's six mixers, one of its two recommendations) are not "
        "implemented; the recipe sweeps GLA, DeltaNet, Gated DeltaNet and RetNet."
    ),
)
