"""Recipes: one module per paper claim, discovered automatically.

A recipe module defines ``RECIPE = Recipe(name=..., help=..., run=..., add_arguments=..., report=...)``.
``run(args, run_dir) -> dict`` does the work, writes plots into ``run_dir`` and returns the summary,
which the CLI writes to ``summary.json``. ``args`` always carries ``smoke`` (bool) and ``set`` (list
of ``key=value`` overrides) plus whatever ``add_arguments`` added. ``report(run_dir)`` (optional)
rebuilds tables and figures from the run directory alone and returns the printed text.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from linearlab.runs import RunDir


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    run: Callable[[argparse.Namespace, RunDir], dict[str, Any]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    report: Callable[[RunDir], str] | None = None


def _discover() -> dict[str, Recipe]:
    found: dict[str, Recipe] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        recipe = getattr(module, "RECIPE", None)
        if isinstance(recipe, Recipe):
            if recipe.name in found:
                raise RuntimeError(f"two recipes are named {recipe.name!r}")
            found[recipe.name] = recipe
    return dict(sorted(found.items()))


_RECIPES: dict[str, Recipe] | None = None


def list_recipes() -> list[str]:
    """Names of all recipes, sorted."""
    return list(_all())


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; unknown names raise ``KeyError`` listing the known ones."""
    recipes = _all()
    if name not in recipes:
        raise KeyError(f"unknown recipe {name!r}; known recipes: {', '.join(recipes)}")
    return recipes[name]


def _all() -> dict[str, Recipe]:
    global _RECIPES
    if _RECIPES is None:
        _RECIPES = _discover()
    return _RECIPES
