"""Checkpoints as one safetensors file: model weights, optimizer state and trainer state.

Optimizer state is flattened to tensors (``optim.<param index>.<name>``) and its non-tensor parts
(param groups, step counters, RNG) go into the safetensors metadata as JSON, so a checkpoint never
needs pickle and loading one cannot execute code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linearlab.io import atomic_save_safetensors


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``path`` atomically (a crash leaves the previous checkpoint intact).

    ``extra`` holds further named tensors (e.g. the best weights of early stopping), stored under
    ``extra.<name>``.
    """
    tensors: dict[str, torch.Tensor] = {}
    # tied weights (e.g. input embedding = LM head) are one tensor under two names; safetensors
    # refuses shared memory, so store it once and record the other names as aliases
    aliases: dict[str, str] = {}
    first_name: dict[tuple[int, tuple[int, ...]], str] = {}
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), tuple(v.shape)) if v.numel() else None
        if key is not None and key in first_name:
            aliases[k] = first_name[key]
            continue
        if key is not None:
            first_name[key] = k
        tensors[f"model.{k}"] = v
    for name, value in (extra or {}).items():
        tensors[f"extra.{name}"] = value
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in opt["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = (
                    value.item() if isinstance(value, torch.Tensor) else value
                )
    tensors["rng.torch"] = torch.get_rng_state()
    metadata = {
        "param_groups": json.dumps(opt["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "trainer": json.dumps(trainer_state),
        "aliases": json.dumps(aliases),
    }
    return atomic_save_safetensors(path, tensors, metadata=metadata)


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    with_extra: bool = False,
) -> dict[str, Any] | tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore model (and optimizer, RNG) from ``path``; returns the trainer state dict
    (and, with ``with_extra``, the ``extra`` tensors given to :func:`save_checkpoint`).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable checkpoint (corrupt or truncated), or it holds
            the weights of another architecture (the message lists the mismatched names).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
        trainer = json.loads(metadata.get("trainer", "{}"))
    except Exception as err:  # safetensors raises its own error types for a damaged header or body
        raise ValueError(
            f"checkpoint: {str(path)!r} is corrupt or truncated ({type(err).__name__}: {err}); "
            "delete it to restart this training from the beginning"
        ) from None
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    for alias, name in json.loads(metadata.get("aliases", "{}")).items():
        if name in model_state:
            model_state[alias] = model_state[name]
    _check_architecture(path, model, model_state)
    model.load_state_dict(model_state)
    if optimizer is not None:
        scalars = json.loads(metadata.get("optim_scalars", "{}"))
        state: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, idx, name = key.split(".", 2)
                state.setdefault(int(idx), {})[name] = value
        for idx, values in scalars.items():
            for name, value in values.items():
                # AdamW keeps its step counter as a tensor
                state.setdefault(int(idx), {})[name] = torch.tensor(float(value))
        optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    if with_extra:
        extra = {k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")}
        return trainer, extra
    return trainer


def _check_architecture(path: Path, model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """A checkpoint of another model is refused with the names that differ, before anything loads."""
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    reshaped = sorted(k for k in set(own) & set(saved) if tuple(own[k].shape) != tuple(saved[k].shape))
    if not (missing or unexpected or reshaped):
        return
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("other shape", reshaped)):
        if names:
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            parts.append(f"{label}: {', '.join(names[:3])}{more}")
    raise ValueError(
        f"checkpoint: {str(path)!r} holds another architecture than {type(model).__name__} "
        f"({'; '.join(parts)}); resume it with the config it was trained with"
    )
