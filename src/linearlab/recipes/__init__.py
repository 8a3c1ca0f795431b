"""Recipes: one module per paper claim, found by name through one :class:`~linearlab.registry.Registry`.

A recipe module defines ``RECIPE = Recipe(...)``: its config dataclass, named presets (at least
``default`` and ``smoke``), ``run(config, run_dir) -> summary`` and optionally ``report(run_dir)``
and ``headline(summary)`` (the numbers a reference run records, see :mod:`linearlab.run_records`).
The papers a recipe reproduces name it in their ``declare_paper(..., recipes=(...))`` records.
The CLI alone turns ``--preset`` / ``--smoke`` / ``--set key=value`` / the recipe's shortcut flags
into a validated config, checks it (``Recipe.check``) before anything is written, refuses an
existing run directory without ``--resume`` (and a resume whose config differs), writes
``config.json`` and ``summary.json``, and prints the run directory last.

Example (a minimal recipe module)::

    @dataclass
    class Config:
        steps: int = 1000
        seed: int = 0

    def run(config: Config, run_dir: RunDir) -> dict:
        ...  # train through linearlab.train.train(..., run_dir=..., resume=True)
        return {"loss": 0.1}

    RECIPE = Recipe(name="my-claim", help="...", config=Config,
                    presets={"default": Config, "smoke": lambda: Config(steps=5)}, run=run)
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from linearlab.config import apply_overrides
from linearlab.registry import Registry
from linearlab.runs import RunDir


@dataclass(frozen=True)
class Flag:
    """A shortcut command-line flag that sets one config field: ``--mixers a,b`` == ``--set mixers=a,b``.

    ``switch=True`` makes a bare flag for a boolean field: ``--legacy-drop-last`` == ``--set legacy_drop_last=true``.
    """

    flag: str
    field: str
    help: str = ""
    switch: bool = False


@dataclass(frozen=True)
class Recipe:
    """One reproducible claim.

    Attributes:
        name: the CLI name (``linearlab run <name>``).
        help: one line for ``linearlab ls recipes``.
        config: the config dataclass; its ``__post_init__`` validates field values.
        presets: name -> zero-argument factory of a config; ``default`` and ``smoke`` are required.
        run: ``(config, run_dir) -> summary dict``; it writes plots and per-job files into ``run_dir``
            and must be resumable (train through ``linearlab.train.train(..., resume=True)``).
        report: ``run_dir -> printed text``, rebuilt from the run directory alone.
        flags: shortcut flags for config fields.
        check: ``config -> None``; validates what the dataclass cannot (input files, names) and
            raises ValueError / FileNotFoundError before the run directory is created.
        resume_may_change: config fields a ``--resume`` may change because they do not change the
            results (e.g. ``workers``).
        headline: ``summary -> {label: number}``, the few numbers that stand for the run (what
            ``linearlab report <run-dir> --record`` keeps in the recipe's reference-run record and
            ``linearlab papers`` shows next to the papers' claims); None = the recipe has none.
    """

    name: str
    help: str
    config: type
    presets: Mapping[str, Callable[[], Any]]
    run: Callable[[Any, RunDir], dict[str, Any]]
    report: Callable[[RunDir], str] | None = None
    flags: Sequence[Flag] = field(default_factory=tuple)
    check: Callable[[Any], None] | None = None
    resume_may_change: Sequence[str] = field(default_factory=tuple)
    headline: Callable[[dict[str, Any]], dict[str, float]] | None = None

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.config):
            raise TypeError(f"recipe {self.name!r}: config must be a dataclass, got {self.config!r}")
        missing = {"default", "smoke"} - set(self.presets)
        if missing:
            raise TypeError(f"recipe {self.name!r}: presets must include {sorted(missing)}")
        fields = {f.name for f in dataclasses.fields(self.config)}
        for flag in self.flags:
            if flag.field not in fields:
                raise TypeError(f"recipe {self.name!r}: flag {flag.flag} sets unknown field {flag.field!r}")

    def resolve(
        self,
        preset: str = "default",
        flag_values: Mapping[str, Any] | None = None,
        overrides: Sequence[str] = (),
    ) -> Any:
        """The config for ``preset``, then shortcut flags, then ``--set`` overrides; validated.

        Raises ValueError naming the preset, key or value that is wrong.
        """
        if preset not in self.presets:
            raise ValueError(
                f"--preset: unknown preset {preset!r} for {self.name}; choose from: {', '.join(self.presets)}"
            )
        config = self.presets[preset]()
        by_field = {f.field: f.flag for f in self.flags}
        for name, value in (flag_values or {}).items():
            if value is None:
                continue
            try:
                config = apply_overrides(config, [f"{name}={value}"])
            except ValueError as err:
                # name the flag the user typed, not the --set it stands for
                raise ValueError(
                    str(err).replace(f"--set {name}={value}", f"{by_field.get(name, name)} {value}")
                ) from None
        config = apply_overrides(config, list(overrides))
        if self.check is not None:
            self.check(config)
        return config


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            RECIPES.register(recipe.name, recipe)


RECIPES: Registry[Recipe] = Registry("recipe", loader=_discover)


def list_recipes() -> list[str]:
    """Names of all recipes, sorted."""
    return RECIPES.names()


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; unknown names raise ``UnknownNameError`` listing the known ones."""
    return RECIPES.get(name)
