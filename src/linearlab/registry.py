"""One by-name lookup for everything linearlab builds from a string.

Mixers, feature maps, forecasters, recipes and what later modules add each keep one
:class:`Registry`. Every registry raises the same :class:`UnknownNameError` for a name it does not
hold, and that error lists the names it does hold.

Example:
    >>> FEATURE_MAPS = Registry("feature map")
    >>> @FEATURE_MAPS.register("elu1")
    ... class Elu1: ...
    >>> FEATURE_MAPS.create("elu1")
    >>> FEATURE_MAPS.get("nope")  # UnknownNameError: unknown feature map 'nope'; choose from: elu1
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name a registry does not hold.

    It is both a ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument value), so code
    that guards user input with either keeps working; ``str()`` is the plain message.
    """

    def __init__(self, message: str, name: str, kind: str, known: list[str]) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.kind = kind
        self.known = known

    def __str__(self) -> str:
        return self.message


class Registry(Generic[T]):
    """Names to objects (classes or factories) of one kind.

    Args:
        kind: what the registry holds, used in messages (``"mixer"``, ``"recipe"``).
        loader: called once before the first lookup, e.g. to import the modules whose decorators
            fill the registry (so ``import linearlab.layers`` stays cheap).
        argument: the argument name users pass names through, named in error messages
            (default: ``kind`` with spaces replaced by underscores).
    """

    def __init__(
        self, kind: str, loader: Callable[[], None] | None = None, argument: str | None = None
    ) -> None:
        self.kind = kind
        self.argument = argument or kind.replace(" ", "_")
        self._items: dict[str, T] = {}
        self._loader = loader
        self._loaded = loader is None

    def register(self, name: str, obj: T | None = None) -> Any:
        """Register ``obj`` as ``name``; without ``obj``, a decorator that registers what it wraps.

        Registering a different object under a taken name is an error (two modules would silently
        shadow each other otherwise); registering the same object again is a no-op.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name: expected a non-empty string, got {name!r}")

        def add(item: T) -> T:
            if name in self._items and self._items[name] is not item:
                raise RuntimeError(f"{self.kind} name {name!r} is registered twice")
            self._items[name] = item
            return item

        if obj is not None:
            return add(obj)
        return add

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._loaded = True
            assert self._loader is not None
            self._loader()

    def get(self, name: str) -> T:
        """The object registered as ``name``; raises :class:`UnknownNameError` listing the known names."""
        self._ensure_loaded()
        if name not in self._items:
            known = self.names()
            raise UnknownNameError(
                f"{self.argument}: unknown {self.kind} {name!r}; choose from: {', '.join(known)}",
                name=str(name),
                kind=self.kind,
                known=known,
            )
        return self._items[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the object registered as ``name`` with the given arguments (build a class, call a factory)."""
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._ensure_loaded()
        return sorted(self._items)

    def check(self, names: list[str] | str, argument: str | None = None) -> list[str]:
        """Validate a list (or comma-separated string) of names; returns the list.

        Raises :class:`UnknownNameError` naming the unknown ones and the known ones, and ValueError
        for an empty list.
        """
        items = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
        arg = argument or self.argument
        if not items:
            raise ValueError(f"{arg}: give at least one {self.kind}, got {names!r}")
        known = self.names()
        unknown = [n for n in items if n not in self._items]
        if unknown:
            raise UnknownNameError(
                f"{arg}: unknown {self.kind}(s) {unknown}; choose from: {', '.join(known)}",
                name=unknown[0],
                kind=self.kind,
                known=known,
            )
        return items

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure_loaded()
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        self._ensure_loaded()
        return sorted(self._items.items())
