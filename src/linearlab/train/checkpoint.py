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
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any]
) -> Path:
    """Write ``path`` atomically (a crash leaves the previous checkpoint intact)."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
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
    }
    return atomic_save_safetensors(path, tensors, metadata=metadata)


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore model (and optimizer, RNG) from ``path``; returns the trainer state dict."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no items())
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
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
    return json.loads(metadata.get("trainer", "{}"))
