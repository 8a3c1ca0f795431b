"""linearlab: linear layers and linear-time sequence models, fast on any machine.

Subpackages: ``ops`` (pure tensor functions, fla-compatible), ``layers`` (mixers, linear
replacements, heads), ``models``, ``convert``, ``tasks``, ``analysis``, ``train``, ``recipes``.

Importing linearlab makes its Hugging Face model types (``LinearLabForCausalLM`` and linearised
Llama / Mistral / Qwen2 models) known to ``AutoModelForCausalLM`` once ``transformers`` is
imported, without importing ``transformers`` itself.
"""

from linearlab.hf_registration import register_when_transformers_loads

__version__ = "0.1.0"

register_when_transformers_loads()
