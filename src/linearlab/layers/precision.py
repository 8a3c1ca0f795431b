"""The one dtype rule of the mixers.

- A mixer returns ``y`` in the dtype of its input ``x``; projections and feature maps run in that
  dtype (the parameters' dtype, which the caller chose with ``.to(dtype)``).
- Everything that accumulates or is exponentiated runs in :func:`compute_dtype`: recurrent
  states, log gates and decays, norm statistics, router probabilities, the LSSL's state-space
  model. That is float32 for float16 / bfloat16 / float32 input and float64 for float64 input:
  exactly the dtype the ops (``linearlab.ops``) keep their states in, so a state returned by one
  call is fed back unchanged, and a float64 check of a mixer is not silently capped at float32.

Ops take the low-precision ``q, k, v`` as they are and apply the same rule inside, so a mixer
only calls :func:`compute_dtype` for what it computes itself.
"""

from __future__ import annotations

import torch

from linearlab.ops.utils import state_dtype


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """float64 for float64 ``x``, float32 otherwise (the ops' state dtype; see the module docstring)."""
    return state_dtype(x)
