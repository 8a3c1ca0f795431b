"""Atomic file writing and path checks.

Every file the library writes goes to a temporary name in the same folder and is then renamed,
so an interrupted run never leaves a half-written checkpoint, summary or plot behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


def _atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; give the file the permissions a plain open() would (0666 & ~umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        write(tmp_path)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    return _atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, record: Mapping[str, Any]) -> None:
    """Append one JSON line; a crash can at worst leave a truncated last line, which readers skip."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(dict(record), default=_json_default) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping a truncated final line left by an interrupted write."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def atomic_save_safetensors(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> Path:
    """Save a flat dict of tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _atomic_write(path, lambda p: save_file(contiguous, str(p), metadata=metadata))


def atomic_save_figure(path: str | os.PathLike, fig) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        return _atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120, bbox_inches="tight"))
    finally:
        plt.close(fig)


def check_input_path(path: str | os.PathLike, kind: str = "file", name: str = "path") -> Path:
    """Check that a user-given path exists, is readable and is a ``file`` or ``dir``.

    Raises:
        FileNotFoundError / ValueError / PermissionError naming the argument and the path.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{name}: {str(p)!r} does not exist")
    if kind == "file" and not p.is_file():
        raise ValueError(f"{name}: {str(p)!r} is not a file")
    if kind == "dir" and not p.is_dir():
        raise ValueError(f"{name}: {str(p)!r} is not a directory")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{name}: {str(p)!r} is not readable")
    return p


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
