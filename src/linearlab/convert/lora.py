"""Stage 2 of linearisation: next-token fine-tuning with LoRA adapters from ``peft``, then merged.

LoLCATs (arXiv 2410.10254) fine-tunes the linearised model with LoRA of rank 8, alpha 16 on the
attention projections q, k, v, o; everything else (feature maps included) stays frozen. After
training the adapters are merged into the projections (``merge_and_unload``), so the result is
the same model class with updated weights: it saves, loads and decodes as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from linearlab.convert.distill import StageResult
from linearlab.convert.lm_calls import next_token_loss, parameter_counts
from linearlab.runs import RunDir
from linearlab.train.loop import TrainConfig, train

#: projection names LoRA targets by default: Hugging Face attention, and MixerLM's fused projection
HF_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MIXER_TARGETS = ("qkv_proj", "o_proj")


def default_targets(model: nn.Module) -> list[str]:
    """The attention projections of ``model``'s layers (q, k, v, o)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return list(MIXER_TARGETS if "qkv_proj" in names else HF_TARGETS)


def finetune_lora(
    model: nn.Module,
    batch_fn: Callable[[int], torch.Tensor],
    cfg: TrainConfig,
    rank: int = 8,
    alpha: float = 16.0,
    target_modules: Sequence[str] | None = None,
    run_dir: RunDir | None = None,
    resume: bool = False,
    desc: str = "lora",
) -> tuple[nn.Module, StageResult]:
    """Fine-tune ``model`` with LoRA on next-token prediction, merge the adapters, return the model.

    Args:
        model: any causal LM (a linearised one, typically); it is changed in place.
        batch_fn: ``step -> input_ids [B, T]``.
        cfg: the train loop's settings (LoLCATs: lr 1e-4).
        rank, alpha: LoRA rank ``r`` and ``lora_alpha`` (LoLCATs: 8 and 16).
        target_modules: module-name suffixes to adapt; default :func:`default_targets`.
        run_dir, resume: checkpoints and metrics of the train loop (resumable).

    Returns:
        ``(model with merged weights, StageResult)``; ``model`` is the object passed in.
    """
    from peft import LoraConfig, get_peft_model

    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: expected an int >= 1, got {rank!r}")
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0, got {alpha}")
    targets = list(target_modules) if target_modules is not None else default_targets(model)
    present = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(
            f"target_modules: no nn.Linear named {missing} in the model; it has {sorted(present)}"
        )
    lora = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, bias="none")
    peft_model = get_peft_model(model, lora)
    trainable, total = parameter_counts(peft_model)

    def loss_fn(m: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return next_token_loss(m, input_ids), {}

    try:
        result = train(peft_model, batch_fn, loss_fn, cfg, run_dir=run_dir, resume=resume, desc=desc)
    finally:
        merged = peft_model.merge_and_unload()
    return merged, StageResult(result, trainable, total)
