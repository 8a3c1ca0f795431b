"""Stage 1 of linearisation: train the new attention to mimic the softmax attention it replaced.

Every linearised layer is put in distillation mode: from its own (frozen, pretrained) q, k, v it
computes the teacher's softmax attention and its own output, records the losses, and passes the
*teacher's* output on, so each layer sees exactly the input it had in the teacher and all layers
train at once with independent losses (LoLCATs' attention transfer; Hedgehog's attention
distillation). Only the feature maps and the window factors train; everything else is frozen.

Losses per layer (averaged over layers):
- ``mse``: mean squared error between the student's and the teacher's attention outputs (before
  ``o_proj``); LoLCATs' default;
- ``xent``: cross-entropy of the student's normalised attention weights under the teacher's
  softmax weights, per query; Hedgehog's loss (quadratic in the sequence length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from linearlab.convert.linearize import linearized_modules
from linearlab.convert.lm_calls import lm_logits, parameter_counts
from linearlab.convert.operator import LIGER_METHODS
from linearlab.runs import RunDir
from linearlab.train.loop import TrainConfig, TrainResult, train

#: loss used when ``loss="auto"``: each paper's own
DEFAULT_LOSS = {"t2r": "mse", "hedgehog": "xent", "lolcats": "mse", "still": "mse"}
LOSSES = ("auto", "mse", "xent", "both")


def _operators(model: nn.Module) -> list:
    """The linearised layers' operators; a model without any is an error."""
    operators = [op for _, op in linearized_modules(model)]
    if not operators:
        raise ValueError(f"model: {type(model).__name__} has no linearised layers; call linearize_ first")
    return operators


@dataclass
class StageResult:
    """What one training stage did: the loop's result and the parameters it trained."""

    train: TrainResult
    trainable_params: int
    total_params: int

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params


def distill_attention(
    model: nn.Module,
    batch_fn: Callable[[int], torch.Tensor],
    cfg: TrainConfig,
    loss: str = "auto",
    run_dir: RunDir | None = None,
    resume: bool = False,
    desc: str = "distill",
) -> StageResult:
    """Train the feature maps and window factors of a linearised ``model`` (see the module docstring).

    Args:
        model: a model after :func:`~linearlab.convert.linearize_`.
        batch_fn: ``step -> input_ids [B, T]`` (token ids of the distillation data).
        cfg: the train loop's settings (LoLCATs: AdamW, lr 1e-2).
        loss: ``"mse"``, ``"xent"``, ``"both"`` or ``"auto"`` (the method's own: Hedgehog ``xent``,
            LoLCATs and T2R ``mse``).
        run_dir, resume: checkpoints and metrics of the train loop (resumable).

    Returns:
        :class:`StageResult`; the model is left with distillation mode off and only the parameters
        that were trainable before still trainable.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")
    operators = _operators(model)
    if operators[0].method in LIGER_METHODS:
        raise ValueError(
            f"model: method {operators[0].method!r} adds no parameters, so there is nothing to distill; "
            "train it with finetune_lora (Liger's single stage)"
        )
    if loss == "auto":
        loss = DEFAULT_LOSS[operators[0].method]
    weights = {"mse": float(loss in ("mse", "both")), "xent": float(loss in ("xent", "both"))}
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for op in operators:
        for p in op.parameters():
            p.requires_grad_(True)
        op.distill(True)
    trainable, total = parameter_counts(model)

    def loss_fn(m: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        lm_logits(m, input_ids)  # the layers record their losses on the way
        parts = {name: torch.stack([op.distill_losses[name] for op in operators]).mean() for name in weights}
        # only the chosen losses: an unused one may be NaN (STILL has no normalised weights to compare)
        total_loss = sum(weights[name] * value for name, value in parts.items() if weights[name])
        return total_loss, {name: float(value.detach()) for name, value in parts.items()}

    try:
        result = train(model, batch_fn, loss_fn, cfg, run_dir=run_dir, resume=resume, desc=desc)
    finally:
        for op in operators:
            op.distill(False)
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)
    return StageResult(result, trainable, total)


@torch.no_grad()
def attention_agreement(model: nn.Module, input_ids: torch.Tensor) -> dict[str, float]:
    """Mean per-layer output MSE and weight cross-entropy against the teacher on ``input_ids``.

    Also reports the teacher's own mean attention entropy (``teacher_entropy``): the cross-entropy
    can never go below it, so the gap is the part of the mismatch a better map could remove.
    """
    operators = _operators(model)
    for op in operators:
        op.distill(True)
    try:
        lm_logits(model, input_ids)
        out = {
            name: float(torch.stack([op.distill_losses[name] for op in operators]).mean())
            for name in ("mse", "xent", "teacher_entropy")
        }
    finally:
        for op in operators:
            op.distill(False)
    return out
