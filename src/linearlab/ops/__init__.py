"""Pure tensor ops with fla-compatible names, layouts and return values.

Each family lives in ``ops/<family>/`` with ``naive.py`` (token-by-token ground truth),
``chunk.py`` (fast matmul-based form) and ``recurrent.py`` (decoding form). ``common.py`` holds what
the chunk kernels share (chunk layout, segment sizing, subnormal-flush thresholds) and ``utils.py``
the input checks every op runs. The names below are re-exported lazily, so
``from linearlab.ops import chunk_gla`` works like ``from fla.ops.gla import chunk_gla`` and
importing one family never imports the others.
"""

from __future__ import annotations

import importlib

_FAMILIES: dict[str, tuple[str, ...]] = {
    "linear_attn": ("chunk_linear_attn", "fused_recurrent_linear_attn", "naive_recurrent_linear_attn"),
    "simple_gla": (
        "chunk_simple_gla",
        "fused_recurrent_simple_gla",
        "naive_recurrent_simple_gla",
        "chunk_retention",
        "fused_recurrent_retention",
    ),
    "lightning_attn": ("chunk_lightning_attn", "fused_recurrent_lightning_attn", "lightning_attn_decay"),
    "gla": ("chunk_gla", "fused_recurrent_gla", "naive_recurrent_gla"),
    "delta_rule": ("chunk_delta_rule", "fused_recurrent_delta_rule", "naive_recurrent_delta_rule"),
    "gated_delta_rule": (
        "chunk_gated_delta_rule",
        "fused_recurrent_gated_delta_rule",
        "naive_recurrent_gated_delta_rule",
    ),
    "lolcats_attn": ("chunk_lolcats_attn", "fused_recurrent_lolcats_attn", "naive_lolcats_attn"),
    "still_attn": ("chunk_still_attn", "fused_recurrent_still_attn", "naive_still_attn"),
    # non-causal (every token sees every token; no state carries over): diffusion / vision mixers
    "noncausal_linear_attn": ("fused_noncausal_linear_attn", "naive_noncausal_linear_attn"),
    # the family folder is not called "attention": a subpackage of that name would shadow the op
    "softmax_attn": ("attention", "attention_step", "naive_attention"),
}

_WHERE = {name: family for family, names in _FAMILIES.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    family = _WHERE.get(name)
    if family is None:
        raise AttributeError(f"module 'linearlab.ops' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{family}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
