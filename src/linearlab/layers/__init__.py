"""Layers: token mixers, drop-in ``nn.Linear`` replacements and output heads.

- ``mixers/``: one module per mixer family, each registered by name (``registry.py``).
- Pieces the mixers share, each in the module named for it: ``short_conv`` (causal short
  convolution, q/k/v convs), ``decay`` (Mamba2 decay), ``multihead`` (head sizes, split/merge),
  ``norms`` (model norms and SimpleRMSNorm / GatedRMSNorm / l2norm), ``feature_maps``,
  ``rotary``, ``mixer_checks`` (argument and input checks), ``mixer_state`` (state keys and the
  incoming-state check) and ``precision`` (the one dtype rule).
- ``heads/``: output heads (Fourier head); ``linear/``: ``nn.Linear`` replacements.
"""

from linearlab.layers.registry import create_mixer, list_mixers, register_mixer

__all__ = ["create_mixer", "list_mixers", "register_mixer"]
