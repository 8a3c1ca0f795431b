"""Run directories: ``runs/<recipe>/<run-id>/`` with config.json, metrics.jsonl, summary.json, plots.

:meth:`RunDir.start` is the one gate every run passes: it refuses to write into a folder that
already holds a run unless resuming, refuses a resume whose config differs from the stored one
(listing the differing keys), and writes ``config.json`` with what is needed to reproduce the run
(resolved config, linearlab / torch / Python versions, git commit, threads, machine).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linearlab.io import append_jsonl, atomic_save_figure, atomic_write_json, atomic_write_text, read_jsonl


def new_run_id() -> str:
    """A sortable, human-readable id: ``20261129-120102-4f3a``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{os.urandom(2).hex()}"


def git_commit() -> str | None:
    """The commit of the linearlab checkout this code runs from (``+dirty`` if changed), else None."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        commit = out.stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit + ("+dirty" if status.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """The machine a run ran on: CPU model, physical cores, logical CPUs, the CPUs this process may
    use, and the operating system (None where it cannot be read)."""
    cpu, cores = None, None
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    physical: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in block.splitlines())
        )
        cpu = cpu or fields.get("model name")
        if "core id" in fields:
            physical.add((fields.get("physical id", "0"), fields["core id"]))
    cores = len(physical) or None
    if platform.system() == "Darwin":
        for key, name in (("machdep.cpu.brand_string", "cpu"), ("hw.physicalcpu", "cores")):
            try:
                out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5)
                value = out.stdout.strip()
            except (OSError, subprocess.SubprocessError):
                value = ""
            if value and name == "cpu":
                cpu = value
            elif value.isdigit():
                cores = int(value)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu or platform.processor() or platform.machine() or None,
        "cores": cores,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}".strip(),
    }


def run_environment() -> dict[str, Any]:
    """Versions, commit, threads and machine recorded in every ``config.json``."""
    import torch

    import linearlab

    return {
        "linearlab_version": linearlab.__version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
    }


@dataclass
class RunDir:
    """A run's folder and the small set of files every run writes."""

    path: Path

    @classmethod
    def create(
        cls, recipe: str, out: str | os.PathLike | None = None, root: str | os.PathLike = "runs"
    ) -> RunDir:
        """Make ``out`` (if given) or ``<root>/<recipe>/<new id>`` (for a run's own sub-folders;
        a whole run starts through :meth:`start`)."""
        path = Path(out) if out is not None else Path(root) / recipe / new_run_id()
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out: {str(path)!r} exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @classmethod
    def check_start(
        cls,
        recipe: str,
        config: dict[str, Any],
        out: str | os.PathLike | None,
        resume: bool,
        resume_may_change: tuple[str, ...] | list[str] = (),
        root: str | os.PathLike = "runs",
    ) -> Path:
        """Where the run goes; raises ValueError if it may not start there. Creates nothing."""
        from linearlab.config import diff_configs

        if resume and out is None:
            raise ValueError("--resume: give the run directory to continue with --out DIR")
        path = Path(out) if out is not None else Path(root) / recipe / new_run_id()
        if path.exists() and not path.is_dir():
            raise ValueError(f"--out: {str(path)!r} exists and is not a directory")
        stored_path = path / "config.json"
        if not resume:
            if stored_path.exists():
                raise ValueError(
                    f"--out: {str(path)!r} already holds a run; pass --resume to continue it or choose another --out"
                )
            if path.exists() and any(path.iterdir()):
                raise ValueError(
                    f"--out: {str(path)!r} is not empty and holds no run; choose an empty or new folder"
                )
            return path
        stored = cls.read_stored_config(path)
        if stored.get("recipe") not in (None, recipe):
            raise ValueError(f"--resume: {str(path)!r} holds a run of {stored['recipe']!r}, not {recipe!r}")
        allowed = set(resume_may_change)
        differing = [
            d for d in diff_configs(stored.get("config", {}), config) if d[0].split(".")[0] not in allowed
        ]
        if differing:
            shown = "; ".join(
                f"{k}: stored {json.dumps(a)}, now {json.dumps(b)}" for k, a, b in differing[:6]
            )
            more = f" (+{len(differing) - 6} more)" if len(differing) > 6 else ""
            can = f" (a resume may change only: {', '.join(sorted(allowed))})" if allowed else ""
            raise ValueError(
                f"--resume: the config differs from the one stored in {str(stored_path)!r} in {shown}{more}{can}; "
                "resume with the same settings, or start a new run with another --out"
            )
        return path

    @classmethod
    def read_stored_config(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The ``config.json`` of the run in ``path``; ValueError if there is none or it is damaged."""
        stored_path = Path(path) / "config.json"
        if not stored_path.is_file():
            raise ValueError(f"--resume: no run to continue in {str(path)!r} (it has no config.json)")
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"--resume: {str(stored_path)!r} is not valid JSON ({err})") from None
        if not isinstance(stored, dict) or not isinstance(stored.get("config"), dict):
            raise ValueError(
                f"--resume: {str(stored_path)!r} has no 'config' object; was it written by linearlab?"
            )
        return stored

    @classmethod
    def start(cls, path: Path, record: dict[str, Any], resume: bool) -> RunDir:
        """Create the folder and write ``config.json`` (a resume appends to its ``resumed`` list)."""
        run_dir = cls(Path(path))
        run_dir.path.mkdir(parents=True, exist_ok=True)
        if resume:
            stored = cls.read_stored_config(path)
            stored.setdefault("resumed", []).append(
                {**run_environment(), "config_changes": record.get("config_changes", {})}
            )
            run_dir.write_config(stored)
        else:
            run_dir.write_config({**record, **run_environment()})
        return run_dir

    def file(self, name: str) -> Path:
        return self.path / name

    def write_config(self, config: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "config.json", config)

    def read_config(self) -> dict[str, Any]:
        """The resolved config of this run (the ``config`` object of ``config.json``)."""
        return self.read_stored_config(self.path)["config"]

    def write_summary(self, summary: dict[str, Any]) -> Path:
        return atomic_write_json(self.path / "summary.json", summary)

    def read_summary(self) -> dict[str, Any]:
        """``summary.json`` of this run; ValueError naming the file if it is missing or damaged."""
        p = self.path / "summary.json"
        if not p.is_file():
            raise ValueError(f"run_dir: {str(p)!r} not found: is this a finished run directory?")
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"run_dir: {str(p)!r} is not valid JSON ({err})") from None

    def write_text(self, name: str, text: str) -> Path:
        return atomic_write_text(self.path / name, text)

    def cached_json(self, name: str, compute: Callable[[], Any]) -> Any:
        """The JSON value stored in ``<name>.json`` by an earlier (interrupted) run of this directory,
        or ``compute()`` written there atomically: a finished part of a recipe is never redone."""
        path = self.path / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
        value = compute()
        atomic_write_json(path, value)
        return value

    def log_metrics(self, record: dict[str, Any], name: str = "metrics.jsonl") -> None:
        append_jsonl(self.path / name, record)

    def read_metrics(self, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
        p = self.path / name
        return read_jsonl(p) if p.exists() else []

    def save_figure(self, name: str, fig) -> Path:
        return atomic_save_figure(self.path / name, fig)
