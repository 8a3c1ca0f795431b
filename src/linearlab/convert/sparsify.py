"""``sparsify_``: calibrate R-Sparse on one sequence, then swap the linear layers in place.

R-Sparse's thresholds come from the inputs each layer sees on a calibration sequence (the paper
uses one 512-token sample). ``sparsify_`` records those inputs with forward hooks on the layers
``filter_fn`` chooses, then calls :func:`~linearlab.convert.linear_swap.convert_` with the config
carrying them, so it works on a MixerLM and on a Hugging Face causal LM alike.

Example:
    >>> sparsify_(model, RSparseConfig(sparsity=0.5), calibration_ids, filter_fn=lambda m, fqn: "lm_head" not in fqn)
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from linearlab.convert.linear_swap import FilterFn, convert_, default_filter, linear_layers
from linearlab.layers.linear.r_sparse import RSparseConfig


@torch.no_grad()
def collect_linear_inputs(
    model: nn.Module, input_ids: torch.Tensor, filter_fn: FilterFn | None = None
) -> dict[str, torch.Tensor]:
    """Inputs ``[N, in]`` of every ``nn.Linear`` chosen by ``filter_fn`` when ``model(input_ids)`` runs.

    Raises ValueError when the filter matches no linear layer (the message lists them).
    """
    choose = filter_fn or default_filter
    names = [fqn for fqn in linear_layers(model) if choose(model.get_submodule(fqn), fqn)]
    if not names:
        shown = ", ".join(linear_layers(model)[:8])
        raise ValueError(f"filter_fn: matched none of the model's nn.Linear layers ({shown})")
    seen: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []
    for fqn in names:
        module = model.get_submodule(fqn)
        handles.append(
            module.register_forward_hook(
                lambda m, args, out, fqn=fqn: seen[fqn].append(args[0].detach().reshape(-1, m.in_features))
            )
        )
    was_training = model.training
    model.eval()
    try:
        model(input_ids)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {fqn: torch.cat(xs) for fqn, xs in seen.items() if xs}


def sparsify_(
    model: nn.Module, config: RSparseConfig, calibration_ids: torch.Tensor, filter_fn: FilterFn | None = None
) -> nn.Module:
    """Replace the chosen linear layers of ``model`` by calibrated :class:`RSparseLinear` layers, in place.

    Args:
        model: a MixerLM or Hugging Face causal LM (anything ``model(ids)`` runs).
        config: the budget (uniform or ``per_layer``); its ``calibration`` is filled here.
        calibration_ids: ``[B, T]`` token ids of the calibration sequence(s).
        filter_fn: ``(module, fqn) -> bool``; default every ``nn.Linear``.
    """
    if not isinstance(config, RSparseConfig):
        raise TypeError(f"config: expected an RSparseConfig, got {type(config).__name__}")
    if not isinstance(calibration_ids, torch.Tensor) or calibration_ids.dim() != 2:
        got = (
            tuple(calibration_ids.shape)
            if isinstance(calibration_ids, torch.Tensor)
            else type(calibration_ids)
        )
        raise ValueError(f"calibration_ids: expected a [B, T] tensor of token ids, got {got}")
    inputs = collect_linear_inputs(model, calibration_ids, filter_fn)
    calibrated = dataclasses.replace(config, calibration={**config.calibration, **inputs})
    return convert_(model, calibrated, filter_fn=lambda m, fqn: fqn in inputs)
