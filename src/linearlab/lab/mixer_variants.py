"""The mixer variants the sequence-model recipes (``mqar``, ``lm``) compare.

A *variant* is a label for one mixer configuration, e.g. ``"hedgehog"`` ->
``("linear_attention", {"feature_map": "hedgehog"})``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from linearlab.registry import Registry

# label -> (registered mixer, kwargs); the paper mixers the lab compares
MIXER_VARIANTS: Registry[tuple[str, dict[str, Any]]] = Registry("mixer variant", argument="mixers")
for _label, _spec in {
    "softmax": ("softmax", {}),
    "sliding_window": ("sliding_window", {"window_size": 16}),
    "linear_elu1": ("linear_attention", {"feature_map": "elu1"}),
    "hedgehog": ("linear_attention", {"feature_map": "hedgehog"}),
    "retnet": ("retnet", {}),
    "lightning": ("lightning", {}),
    "transnormer": ("transnormer", {}),
    "slab": ("slab", {}),
    "gla": ("gla", {}),
    "deltanet": ("deltanet", {}),
    "gated_deltanet": ("gated_deltanet", {}),
    # top-1 routing over 4 memories (+ the shared one): MoM's recall benefit at about 2x DeltaNet's cost
    "mom": ("mom", {"num_memories": 4, "topk": 1}),
    "lssl": ("lssl", {}),
}.items():
    MIXER_VARIANTS.register(_label, _spec)

# relative training cost at the lab's sizes: the slowest jobs are started first
COST_HINT: dict[str, float] = {"mom": 3.0, "lssl": 2.0, "gated_deltanet": 1.6, "deltanet": 1.5, "retnet": 1.2}

# mixers without heads
_HEADLESS = ("lssl", "base_conv")


def parse_variants(text: str | Sequence[str]) -> list[str]:
    """``"softmax,gla"`` -> ``["softmax", "gla"]``; unknown labels raise UnknownNameError listing the known ones."""
    return MIXER_VARIANTS.check(text)


def variant(label: str, num_heads: int | None = None) -> tuple[str, dict[str, Any]]:
    """Mixer name and kwargs for ``label`` (adds ``num_heads`` if given and the mixer has heads)."""
    name, kwargs = MIXER_VARIANTS.get(label)
    kwargs = dict(kwargs)
    if num_heads is not None and name not in _HEADLESS:
        kwargs["num_heads"] = num_heads
    return name, kwargs
