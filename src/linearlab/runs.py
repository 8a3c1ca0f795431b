"""Run directories: ``runs/<recipe>/<run-id>/`` with config.json, metrics.jsonl, summary.json, plots."""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linearlab.io import append_jsonl, atomic_save_figure, atomic_write_json, atomic_write_text, read_jsonl


def new_run_id() -> str:
    """A sortable, human-readable id: ``20261129-120102-4f3a``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(2).hex()}"


@dataclass
class RunDir:
    """A run's folder and the small set of files every run writes."""

    path: Path

    @classmethod
    def create(
        cls, recipe: str, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs"
    ) -> RunDir:
        """Make ``out`` (if given) or ``<root>/<recipe>/<new id>``."""
        path = Path(out) if out is not None else Path(root) / recipe / new_run_id()
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out: {str(path)!r} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "config.json", config)

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "summary.json", summary)

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def log_metrics(self, record: dict[str, Any], name: str = "metrics.jsonl") -> None:
        append_jsonl(self.path / name, record)

    def read_metrics(self, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
        p = self.path / name
        return read_jsonl(p) if p.exists() else []

    def save_figure(self, name: str, fig) -> Path:
        return atomic_save_figure(self.path / name, fig)
