"""Register linearlab's Hugging Face model types with the Auto classes once ``transformers`` is imported.

``import linearlab`` must stay fast (transformers takes seconds to import), yet after it
``AutoModelForCausalLM.from_pretrained(dir)`` must know linearlab's saved models. So
:func:`register_when_transformers_loads` registers at once if ``transformers`` is already imported,
and otherwise adds a one-shot import hook that registers right after ``transformers`` finishes
importing.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from types import ModuleType

_done = False


def register_now() -> None:
    """Register ``LinearLabForCausalLM`` and the linearised twins (idempotent).

    Either module may itself be the one whose import pulled in ``transformers`` (and so ran this
    hook) and be only half initialised here; each registers its own classes again at its end, so
    a half-initialised one is simply left to do that.
    """
    global _done
    if _done:
        return
    _done = True
    import linearlab.convert.hf_classes as twins
    import linearlab.models.hf  # noqa: F401 - registers "linearlab" at its end

    if hasattr(twins, "register_auto_classes"):
        twins.register_auto_classes()


class _AfterTransformers(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``transformers`` through the other finders, then registers after its module runs."""

    def __init__(self) -> None:
        self._spec_loader: importlib.abc.Loader | None = None

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot: find the real spec without us in the way
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._spec_loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):  # type: ignore[no-untyped-def]
        return self._spec_loader.create_module(spec)  # type: ignore[union-attr]

    def exec_module(self, module: ModuleType) -> None:
        self._spec_loader.exec_module(module)  # type: ignore[union-attr]
        register_now()


def register_when_transformers_loads() -> None:
    """Register now if ``transformers`` is imported, else right after it is."""
    if "transformers" in sys.modules:
        register_now()
    elif not any(isinstance(f, _AfterTransformers) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformers())
