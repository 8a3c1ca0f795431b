"""The training loop: one loop for every recipe.

AdamW or SGD, warm-up + cosine (or constant, or any ``lr_fn``), gradient clipping, periodic
evaluation with optional early stopping on an eval metric (best weights restored), checkpoints,
exact resume and DDP under ``torchrun``.

Batches come from ``batch_fn(step)``. When it is a pure function of the step, a resumed run sees
exactly the batches an uninterrupted run would have seen. A stateful batch source (one that draws
from its own generator, e.g. reshuffling every epoch) stays exact by defining ``state_dict()`` (JSON
values) and ``load_state_dict(state)``: the loop stores that state in every checkpoint.

After every optimizer step the loop calls ``model.advance_schedules()`` if the model defines it
(SLAB's RepBN LayerNorm -> BatchNorm schedule counts optimizer steps, not forward calls) and then
each ``on_step(step, model)`` hook. Between ``backward()`` and gradient clipping + ``optimizer.step()``
it calls each ``before_step(step, model)`` hook, which may edit the gradients (e.g. MIGU's
gradient mask, :func:`linearlab.train.migu.migu_`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from linearlab.runs import RunDir
from linearlab.train.checkpoint import load_checkpoint, save_checkpoint
from linearlab.train.distributed import DistInfo, all_reduce_mean, setup_distributed, shard_batch

CHECKPOINT_NAME = "checkpoint.safetensors"
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """Optimisation settings.

    ``batch_size`` is the global batch: with DDP each of the ``world_size`` processes takes
    ``batch_size / world_size`` rows of it. ``optimizer="adamw"`` with ``weight_decay=0`` is Adam.
    ``monitor`` names an eval metric (a key of ``eval_fn``'s result) to minimise: the weights of
    its best evaluation are restored at the end, and with ``patience > 0`` training stops after
    that many evaluations without improvement (early stopping).

    Example:
        >>> TrainConfig(steps=2000, lr=3e-4, warmup_steps=100)
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
    # the global RNG is seeded with this when training starts; None keeps it as the caller left it
    # (e.g. seeded once before building the model, so dropout draws continue from there)
    seed: int | None = 0
    progress: bool = True
    optimizer: str = "adamw"
    momentum: float = 0.0  # SGD only
    schedule: str = "cosine"
    monitor: str = ""
    patience: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"train.steps: must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"train.batch_size: must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"train.lr: must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"train.min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"train.optimizer: expected one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        if self.patience < 0:
            raise ValueError(f"train.patience: must be >= 0, got {self.patience}")
        if self.patience and not self.monitor:
            raise ValueError(
                "train.patience: early stopping needs train.monitor (an eval metric to minimise)"
            )
        if self.monitor and self.eval_every < 1:
            raise ValueError(
                f"train.eval_every: train.monitor needs periodic evaluation (>= 1), got {self.eval_every}"
            )
        for name in ("log_every", "eval_every", "checkpoint_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name}: must be >= 0, got {getattr(self, name)}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps`` (or constant)."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (weight decay on matrices only, not on norms, biases, gains) or plain SGD."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"model: {type(model).__name__} has no trainable parameters to train")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


@dataclass
class TrainResult:
    """What :func:`train` did.

    ``losses`` holds every step's training loss of this call (steps before a resume are not in it);
    ``best_step`` / ``best_metric`` are set when ``cfg.monitor`` is.
    """

    steps: int
    final_loss: float
    train_seconds: float
    tokens_per_second: float
    eval: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None
    best_metric: float | None = None


BatchFn = Callable[[int], Any]
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]
EvalFn = Callable[[nn.Module], dict[str, float]]
StepHook = Callable[[int, nn.Module], None]


class _Best:
    """The best evaluation so far of ``cfg.monitor`` and the weights that gave it."""

    def __init__(self) -> None:
        self.metric = math.inf
        self.step: int | None = None
        self.bad = 0
        self.weights: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, metric: float, step: int) -> None:
        if metric < self.metric:
            self.metric, self.step, self.bad = metric, step, 0
            self.weights = copy.deepcopy(model.state_dict())
        else:
            self.bad += 1

    def trainer_state(self) -> dict[str, Any]:
        return {"best_metric": self.metric, "best_step": self.step, "bad_evals": self.bad}

    def load(self, state: dict[str, Any], extra: dict[str, torch.Tensor]) -> None:
        self.metric = float(state.get("best_metric", math.inf))
        self.step = state.get("best_step")
        self.bad = int(state.get("bad_evals", 0))
        self.weights = extra or None


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
    lr_fn: Callable[[int], float] | None = None,
    on_step: StepHook | Sequence[StepHook] = (),
    before_step: StepHook | Sequence[StepHook] = (),
) -> TrainResult:
    """Train ``model`` for ``cfg.steps`` steps (fewer with early stopping).

    Args:
        batch_fn: ``step -> global batch`` (tensors with batch on dim 0); deterministic in the step,
            or stateful with ``state_dict``/``load_state_dict`` (see the module docstring).
        loss_fn: ``(model, batch) -> (scalar loss, metrics)``; the loss is a mean over the batch.
        run_dir: where ``metrics.jsonl`` and ``checkpoint.safetensors`` go (None: no files).
        eval_fn: ``model -> metrics``, run every ``eval_every`` steps and at the end (main process).
        resume: continue from ``run_dir/checkpoint.safetensors`` if it exists.
        tokens_per_batch: tokens in one global batch, for the tokens/s figure.
        stop_after: stop early after this step (for tests that simulate an interruption).
        lr_fn: ``step -> learning rate``, replacing ``cfg``'s warm-up + cosine schedule (e.g. a
            per-epoch step decay).
        on_step: hook(s) called as ``hook(steps_done, model)`` after every optimizer step.
        before_step: hook(s) called as ``hook(steps_done, model)`` after ``backward()`` (gradients
            complete, and averaged across DDP ranks) and before gradient clipping and the optimizer
            step; they may change ``param.grad`` in place.
    """
    info: DistInfo = setup_distributed()
    if cfg.seed is not None:
        torch.manual_seed(cfg.seed)
    hooks = [on_step] if callable(on_step) else list(on_step)
    pre_hooks = [before_step] if callable(before_step) else list(before_step)
    optimizer = make_optimizer(model, cfg)
    schedule = lr_fn if lr_fn is not None else (lambda s: lr_at(s, cfg))
    best = _Best() if cfg.monitor else None
    start_step, resumed_from, stopped = 0, None, False
    ckpt_path = run_dir.file(CHECKPOINT_NAME) if run_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.exists():
        state, extra = load_checkpoint(ckpt_path, model, optimizer, with_extra=True)
        start_step = resumed_from = int(state["step"])
        stopped = bool(state.get("stopped", False))
        if best is not None:
            best.load(state, {k[len("best.") :]: v for k, v in extra.items() if k.startswith("best.")})
        if "batches" in state and hasattr(batch_fn, "load_state_dict"):
            batch_fn.load_state_dict(state["batches"])  # type: ignore[attr-defined]
    train_model: nn.Module = model
    if info.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(model)
    advance_schedules = getattr(model, "advance_schedules", None)

    def checkpoint(done: int) -> None:
        if ckpt_path is None or not info.is_main or not cfg.checkpoint_every:
            return
        trainer: dict[str, Any] = {"step": done, "stopped": stopped}
        extra: dict[str, torch.Tensor] = {}
        if best is not None:
            trainer.update(best.trainer_state())
            extra = {f"best.{k}": v for k, v in (best.weights or {}).items()}
        if hasattr(batch_fn, "state_dict"):
            trainer["batches"] = batch_fn.state_dict()  # type: ignore[attr-defined]
        save_checkpoint(ckpt_path, model, optimizer, trainer, extra=extra)

    last_loss = float("nan")
    losses: list[float] = []
    since_log: list[float] = []
    bar = tqdm(
        total=cfg.steps,
        initial=start_step,
        desc=desc,
        disable=not (cfg.progress and info.is_main),
        leave=False,
    )
    t0 = time.perf_counter()
    done = start_step
    for step in range(start_step, cfg.steps):
        if stopped:
            break
        lr = schedule(step)
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
        for hook in pre_hooks:
            hook(step, model)
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        if callable(advance_schedules):
            advance_schedules()
        done = step + 1
        for hook in hooks:
            hook(done, model)
        last_loss = all_reduce_mean(float(loss.item()), info)
        losses.append(last_loss)
        since_log.append(last_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.4f}")
        if (
            info.is_main
            and run_dir is not None
            and cfg.log_every
            and (done % cfg.log_every == 0 or done == cfg.steps)
        ):
            # the mean since the last record, so a noisy step does not stand for the whole interval
            record = {"step": done, "loss": sum(since_log) / len(since_log), "lr": lr, **metrics}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            run_dir.log_metrics(record)
            since_log = []
        if eval_fn is not None and cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            metrics_now = _evaluate(model, eval_fn, info, run_dir, done)
            if best is not None:
                best.update(model, _monitored(metrics_now, cfg.monitor), done)
                stopped = bool(cfg.patience) and best.bad >= cfg.patience
        if cfg.checkpoint_every and (done % cfg.checkpoint_every == 0 or stopped):
            checkpoint(done)
        if stop_after is not None and done >= stop_after:
            break
    bar.close()
    elapsed = time.perf_counter() - t0
    steps_run = max(0, done - start_step)
    finished = done >= cfg.steps or stopped
    eval_metrics: dict[str, float] = {}
    if finished:
        if eval_fn is not None and best is not None and not stopped and done >= cfg.steps:
            # the last evaluation counts for the best too
            best.update(model, _monitored(_evaluate(model, eval_fn, info, run_dir, done), cfg.monitor), done)
        checkpoint(done)
        if best is not None and best.weights is not None:
            model.load_state_dict(best.weights)
        if eval_fn is not None and best is None:
            eval_metrics = _evaluate(model, eval_fn, info, run_dir, done)
    tps = (tokens_per_batch or 0) * steps_run / elapsed if elapsed > 0 else 0.0
    return TrainResult(
        steps=done,
        final_loss=last_loss,
        train_seconds=elapsed,
        tokens_per_second=tps,
        eval=eval_metrics,
        resumed_from=resumed_from,
        losses=losses,
        stopped_early=stopped,
        best_step=None if best is None else best.step,
        best_metric=None if best is None else best.metric,
    )


def _monitored(metrics: dict[str, float], name: str) -> float:
    if name not in metrics:
        raise ValueError(f"train.monitor: eval_fn returned no metric {name!r}; it returned {sorted(metrics)}")
    return float(metrics[name])


def _evaluate(model: nn.Module, eval_fn: EvalFn, info: DistInfo, run_dir: RunDir | None, step: int) -> dict:
    model.eval()
    with torch.no_grad():
        metrics = eval_fn(model)
    if info.is_main and run_dir is not None:
        run_dir.log_metrics({"step": step, **{f"eval/{k}": v for k, v in metrics.items()}})
    return metrics
