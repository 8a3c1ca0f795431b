"""Replace a model's ``nn.Linear`` layers in place: one entry point for every drop-in linear layer.

``convert_(model, config, filter_fn=None)`` works like torchao's ``quantize_``: it walks the model,
asks ``filter_fn(module, fqn)`` which linear layers to replace (default: every ``nn.Linear``), and
swaps each for ``config.replace(module, fqn)``. A config is any object with that method; the drop-in
layers of :mod:`linearlab.layers.linear` each come with one (e.g. a Quartet, R-Sparse or memory-layer
config), so applying any of them to a MixerLM or a Hugging Face Llama is the same call.

Example:
    >>> convert_(model, SomeLinearConfig(...), filter_fn=lambda m, fqn: "mlp" in fqn)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import nn

FilterFn = Callable[[nn.Module, str], bool]


@runtime_checkable
class LinearReplacement(Protocol):
    """A config that knows how to build the replacement of one ``nn.Linear`` (keeping its weights)."""

    def replace(self, module: nn.Linear, fqn: str) -> nn.Module: ...


def linear_layers(model: nn.Module) -> list[str]:
    """Fully qualified names of the ``nn.Linear`` modules of ``model``, in module order."""
    return [fqn for fqn, m in model.named_modules() if isinstance(m, nn.Linear)]


def default_filter(module: nn.Module, fqn: str) -> bool:
    """Every ``nn.Linear`` (what torchao's ``quantize_`` takes by default)."""
    return isinstance(module, nn.Linear)


def convert_(model: nn.Module, config: LinearReplacement, filter_fn: FilterFn | None = None) -> nn.Module:
    """Replace the linear layers of ``model`` chosen by ``filter_fn`` with ``config.replace(linear, fqn)``.

    Args:
        model: any module (a MixerLM, a Hugging Face model, ...); changed in place and returned.
        config: an object with ``replace(module: nn.Linear, fqn: str) -> nn.Module``.
        filter_fn: ``(module, fqn) -> bool`` over every submodule; only ``nn.Linear`` modules it accepts
            are replaced (default: all of them).

    Raises:
        TypeError: ``config`` has no ``replace`` method, or it returned something that is not a module.
        ValueError: ``model`` has no ``nn.Linear``, or ``filter_fn`` accepts none of them (the message
            lists the model's linear layers so the filter can be fixed).
    """
    if not isinstance(config, LinearReplacement):
        raise TypeError(
            f"config: {type(config).__name__} has no replace(module, fqn) method; "
            "pass a linear-layer config such as those in linearlab.layers.linear"
        )
    choose = filter_fn or default_filter
    names = linear_layers(model)
    if not names:
        raise ValueError(f"model: {type(model).__name__} has no nn.Linear layers to replace")
    chosen = [fqn for fqn in names if choose(model.get_submodule(fqn), fqn)]
    if not chosen:
        shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        raise ValueError(f"filter_fn: matched none of the model's nn.Linear layers ({shown})")
    for fqn in chosen:
        old = model.get_submodule(fqn)
        new = config.replace(old, fqn)
        if not isinstance(new, nn.Module):
            raise TypeError(f"config: replace() returned {type(new).__name__} for {fqn!r}, not an nn.Module")
        parent_name, _, child = fqn.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model


def replaced_modules(model: nn.Module, kind: type[nn.Module]) -> dict[str, nn.Module]:
    """The modules of type ``kind`` in ``model`` by fully qualified name (e.g. to inspect a conversion)."""
    return {fqn: m for fqn, m in model.named_modules() if isinstance(m, kind)}
