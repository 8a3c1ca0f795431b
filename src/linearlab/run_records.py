"""Reference runs: the last measured figures of each recipe, kept in the repository.

``linearlab report <run-dir> --record`` writes ``src/linearlab/records/<recipe>.json`` (atomically)
from a finished run directory: the command that reproduces the run, when it ran, on which machine
and commit, and the recipe's headline numbers (``Recipe.headline(summary)``). ``linearlab papers``
and ``docs/papers.md`` show those numbers next to each paper's claim; a recipe without a record
says "no recorded run yet". Nothing else writes these files, and nobody should by hand.

The records live inside the package (not at the repository root) so that they ship with it:
``linearlab papers`` shows the same figures in a wheel install as in a checkout. Record from a
checkout (editable install), so the file lands in ``src/linearlab/records/`` and can be committed.

A record::

    {"recipe": "mqar", "command": "linearlab run mqar", "preset": "default", "overrides": [],
     "run": "mqar/20260507-101502-4f3a", "run_date": "2026-05-07T10:15:02",
     "recorded": "2026-05-07T10:23:40", "git_commit": "d4b000b...", "linearlab_version": "0.1.0",
     "torch_version": "2.13.0+cpu", "python_version": "3.12.3", "threads": 1,
     "machine": {"cpu": "AMD EPYC", "cores": 2, "logical_cpus": 2, "usable_cpus": 2, "system": "..."},
     "wall_seconds": 373.2, "headline": {"gla recall kv=16": 0.712, ...}}

Smoke runs are refused: their numbers are checks that the code runs, not figures to compare.
"""

from __future__ import annotations

import datetime as _dt
import json
import shlex
from pathlib import Path
from typing import Any

RECORDS_DIR = Path(__file__).resolve().parent / "records"
REQUIRED = ("recipe", "command", "run_date", "recorded", "git_commit", "machine", "headline")


def _cli_value(value: Any) -> str:
    """``value`` as ``--set key=<text>`` accepts it back."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple) and all(
        isinstance(v, int | float | str) and not isinstance(v, bool) and "," not in str(v) for v in value
    ):
        return ",".join(v if isinstance(v, str) else repr(v) for v in value) if value else "[]"
    return json.dumps(value, separators=(",", ":"))


def run_command(recipe: Any, stored: dict[str, Any]) -> str:
    """The ``linearlab run`` command that reproduces the run whose ``config.json`` is ``stored``.

    Every config field that differs from the run's preset becomes a ``--set`` (shortcut flags such
    as ``--data`` are stored only as the value they set); fields the recipe lets a resume change
    (``workers``) are left out, since they do not change the results.
    """
    from linearlab.config import to_dict

    preset = stored.get("preset") or "default"
    parts = ["linearlab", "run", recipe.name]
    if preset != "default":
        parts += ["--preset", preset]
    config = stored.get("config") or {}
    if preset not in recipe.presets:  # the preset is gone: repeat what the user typed
        for item in stored.get("overrides") or []:
            parts += ["--set", item]
        return shlex.join(parts)
    base = to_dict(recipe.presets[preset]())
    skip = set(recipe.resume_may_change)
    for key, value in config.items():
        if key in skip:
            continue
        if json.dumps(value, sort_keys=True, default=str) != json.dumps(
            base.get(key), sort_keys=True, default=str
        ):
            parts += ["--set", f"{key}={_cli_value(value)}"]
    return shlex.join(parts)


def _headline(recipe: Any, summary: dict[str, Any]) -> dict[str, float]:
    if recipe.headline is None:
        return {}
    numbers = recipe.headline(summary)
    out = {}
    for key, value in numbers.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"recipe {recipe.name!r}: headline must map strings to numbers, got {key!r}: {value!r}"
            )
        out[key] = float(value)
    return out


def build_record(recipe: Any, run_dir: Any) -> dict[str, Any]:
    """The record of the finished run in ``run_dir`` (a :class:`~linearlab.runs.RunDir`) of ``recipe``.

    Raises ValueError for a smoke run, a run of another recipe, or a run without ``config.json`` /
    ``summary.json``.
    """
    from linearlab.runs import RunDir, machine_info

    try:
        stored = RunDir.read_stored_config(run_dir.path)
    except ValueError as err:
        raise ValueError(str(err).replace("--resume:", "--record:", 1)) from None
    if stored.get("recipe") not in (None, recipe.name):
        raise ValueError(
            f"--record: {str(run_dir.path)!r} holds a run of {stored['recipe']!r}, not {recipe.name!r}"
        )
    if stored.get("preset") == "smoke":
        raise ValueError(
            f"--record: {str(run_dir.path)!r} is a smoke run; its numbers check that the code runs and are "
            "not reference figures: record a run of the default (or another full) preset"
        )
    summary = run_dir.read_summary()
    machine = stored.get("machine")
    if not machine:
        machine = {**machine_info(), "note": "read when recording: the run's config.json has no machine"}
    path = Path(run_dir.path).resolve()
    return {
        "recipe": recipe.name,
        "command": run_command(recipe, stored),
        "preset": stored.get("preset") or "default",
        "overrides": list(stored.get("overrides") or []),
        "run": f"{path.parent.name}/{path.name}",
        "run_date": stored.get("created"),
        "recorded": _dt.datetime.now().isoformat(timespec="seconds"),
        "git_commit": stored.get("git_commit"),
        "linearlab_version": stored.get("linearlab_version"),
        "torch_version": stored.get("torch_version"),
        "python_version": stored.get("python_version"),
        "threads": stored.get("threads"),
        "machine": machine,
        "resumed": len(stored.get("resumed") or []),
        "wall_seconds": summary.get("wall_seconds"),
        "headline": _headline(recipe, summary),
    }


def record_path(recipe_name: str, root: str | Path | None = None) -> Path:
    return Path(root if root is not None else RECORDS_DIR) / f"{recipe_name}.json"


def write_record(recipe: Any, run_dir: Any, root: str | Path | None = None) -> Path:
    """Build the record of ``run_dir`` and write it, atomically, to ``<root>/<recipe>.json``."""
    from linearlab.io import atomic_write_json

    return atomic_write_json(record_path(recipe.name, root), build_record(recipe, run_dir))


def check_record(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it has every field :data:`REQUIRED` with a numeric ``headline``; else ValueError."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(
            f"{where}: missing {', '.join(missing)}; was it written by `linearlab report --record`?"
        )
    headline = record["headline"]
    if not isinstance(headline, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in headline.values()
    ):
        raise ValueError(f"{where}: 'headline' must map names to numbers")
    return record


def read_record(recipe_name: str, root: str | Path | None = None) -> dict[str, Any] | None:
    """The reference-run record of ``recipe_name``, or None if none was recorded.

    A damaged record is a ValueError naming the file (a silent "no record" would hide it).
    """
    path = record_path(recipe_name, root)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    return check_record(record, str(path))


def recorded_recipes(root: str | Path | None = None) -> list[str]:
    """Recipes with a record in ``root`` (default :data:`RECORDS_DIR`), sorted."""
    folder = Path(root if root is not None else RECORDS_DIR)
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
