"""The training loop: AdamW, warm-up + cosine, gradient clipping, checkpoints, resume, DDP.

Batches are a pure function of the step (``batch_fn(step)``), so a resumed run sees exactly the
batches an uninterrupted run would have seen and ends with identical weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from linearlab.runs import RunDir
from linearlab.train.checkpoint import load_checkpoint, save_checkpoint
from linearlab.train.distributed import DistInfo, all_reduce_mean, setup_distributed, shard_batch

CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``batch_size`` is the global batch: with DDP each of the ``world_size`` processes takes
    ``batch_size / world_size`` rows of it.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    log_every: int = 10
    eval_every: int = 0  # 0: evaluate only at the end
    checkpoint_every: int = 100  # 0: no checkpoints
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"train.steps: must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size: must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr: must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms, biases, gains)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class TrainResult:
    steps: int
    final_loss: float
    train_seconds: float
    tokens_per_second: float
    eval: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None


BatchFn = Callable[[int], Any]
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module], dict[str, float]]


def train(
    model: nn.Module,
    batch_fn: BatchFn,
    loss_fn: LossFn,
    cfg: TrainConfig,
    run_dir: RunDir | None = None,
    eval_fn: EvalFn | None = None,
    resume: bool = False,
    desc: str = "train",
    tokens_per_batch: int | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps.

    Args:
        batch_fn: ``step -> global batch`` (tensors with batch on dim 0); must be deterministic.
        loss_fn: ``(model, batch) -> (scalar loss, metrics)``; the loss is a mean over the batch.
        run_dir: where ``metrics.jsonl`` and ``checkpoint.safetensors`` go (None: no files).
        eval_fn: ``model -> metrics``, run every ``eval_every`` steps and at the end (main process).
        resume: continue from ``run_dir/checkpoint.safetensors`` if it exists.
        tokens_per_batch: tokens in one global batch, for the tokens/s figure.
        stop_after: stop early after this step (for tests that simulate an interruption).
    """
    info: DistInfo = setup_distributed()
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    start_step, resumed_from = 0, None
    ckpt_path = run_dir.file(CHECKPOINT_NAME) if run_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, model, optimizer)
        start_step = resumed_from = int(state["step"])
    train_model: nn.Module = model
    if info.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(model)

    last_loss = float("nan")
    eval_metrics: dict[str, float] = {}
    bar = tqdm(
        total=cfg.steps,
        initial=start_step,
        desc=desc,
        disable=not (cfg.progress and info.is_main),
        leave=False,
    )
    t0 = time.perf_counter()
    step = start_step
    for step in range(start_step, cfg.steps):
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = shard_batch(batch_fn(step), info)
        model.train()
        loss, metrics = loss_fn(train_model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {step}; lower train.lr or check the data"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        last_loss = all_reduce_mean(float(loss.item()), info)
        done = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}")
        if info.is_main and run_dir is not None and (done % cfg.log_every == 0 or done == cfg.steps):
            record = {"step": done, "loss": last_loss, "lr": lr, **metrics}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            run_dir.log_metrics(record)
        if eval_fn is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            _evaluate(model, eval_fn, info, run_dir, done)
        if (
            ckpt_path is not None
            and info.is_main
            and cfg.checkpoint_every
            and done % cfg.checkpoint_every == 0
        ):
            save_checkpoint(ckpt_path, model, optimizer, {"step": done})
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    steps_run = max(0, step + 1 - start_step)
    finished = step + 1 >= cfg.steps
    if ckpt_path is not None and info.is_main and cfg.checkpoint_every and finished:
        save_checkpoint(ckpt_path, model, optimizer, {"step": cfg.steps})
    if eval_fn is not None and finished:
        eval_metrics = _evaluate(model, eval_fn, info, run_dir, cfg.steps)
    tps = (tokens_per_batch or 0) * steps_run / elapsed if elapsed > 0 else 0.0
    return TrainResult(
        steps=step + 1,
        final_loss=last_loss,
        train_seconds=elapsed,
        tokens_per_second=tps,
        eval=eval_metrics,
        resumed_from=resumed_from,
    )


def _evaluate(model: nn.Module, eval_fn: EvalFn, info: DistInfo, run_dir: RunDir | None, step: int) -> dict:
    model.eval()
    with torch.no_grad():
        metrics = eval_fn(model)
    if info.is_main and run_dir is not None:
        run_dir.log_metrics({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
    return metrics
