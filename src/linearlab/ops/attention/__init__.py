"""Softmax attention (causal, sliding window, packed varlen) and a KV-cache decoding step. See README.md."""

import sys
import types

from linearlab.ops.attention.naive import naive_attention
from linearlab.ops.attention.sdpa import attention, attention_step

__all__ = ["attention", "attention_step", "naive_attention"]


class _CallableFamily(types.ModuleType):
    """This package shares its name with the function ``attention``. Once the package is imported,
    Python sets ``linearlab.ops.attention`` to the *package*, so ``from linearlab.ops import
    attention`` (after e.g. importing ``attention_step``) would return a module instead of the op.
    Calling the package therefore calls the op, whatever the import order."""

    def __call__(self, *args, **kwargs):
        return attention(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableFamily
