"""Data parallelism with ``torchrun`` (DDP over gloo on CPU, nccl when CUDA is present)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment; one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size())


def shard_batch(batch, info: DistInfo):
    """This rank's rows of a global batch (every tensor is split along dim 0, interleaved)."""
    if info.world_size == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % info.world_size != 0:
            raise ValueError(
                f"batch_size: {batch.shape[0]} rows cannot be split evenly over {info.world_size} processes"
            )
        return batch[info.rank :: info.world_size]
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(b, info) for b in batch)
    if isinstance(batch, dict):
        return {k: shard_batch(v, info) for k, v in batch.items()}
    return batch


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """Average a Python float over processes (for logging)."""
    if info.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
