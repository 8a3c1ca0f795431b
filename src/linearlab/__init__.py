"""linearlab: linear layers and linear-time sequence models, fast on any machine.

Subpackages: ``ops`` (pure tensor functions, fla-compatible), ``layers`` (mixers, linear
replacements, heads), ``models``, ``convert``, ``tasks``, ``analysis``, ``train``, ``recipes``.
"""

__version__ = "0.1.0"
