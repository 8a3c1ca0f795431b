"""Layer importance scores for layer-wise quantization (Dumitru et al., arXiv 2406.17415).

- **LIM** (layer input modification): how much a transformer block changes its input,
  ``LIM = 1 - cos(block input, block output)`` measured on a little unlabeled text (the paper writes
  ``-cos``; the order is the same). Higher = the block does more = more important. ``per_token=False``
  flattens all tokens into one vector (as the public re-implementation does); ``per_token=True``
  averages the per-token cosines.
- **ZD** (z-score distribution): data-free. For each linear weight matrix of the block the share of
  entries more than one standard deviation from its mean (``|z| > 1``; ``two_sided=False``: ``z > 1``),
  averaged over the block's matrices. The abstract reads "smaller is better" (a lower ZD marks a more
  important, heavier-tailed layer): pass ``higher_is_important=False`` to
  :func:`~linearlab.convert.quantize.assign_bits`.

Blocks are found by :func:`find_blocks`: ``MixerLM.blocks`` or a Hugging Face ``model.layers``.

Example:
    >>> lim = lim_scores(model, ids)          # {"blocks.0": 0.41, "blocks.1": 0.12, ...}
    >>> zd = zd_scores(model)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from linearlab.papers import LAYERS, declare_paper


def find_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's stack of transformer blocks by fqn: the first ``nn.ModuleList`` named ``blocks`` or
    ``layers`` (MixerLM, Hugging Face Llama/Mistral/Qwen2, GPT-NeoX ...). ValueError if there is none."""
    for fqn, module in model.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and fqn.rpartition(".")[2] in ("blocks", "layers")
            and len(module)
        ):
            return {f"{fqn}.{i}": block for i, block in enumerate(module)}
    raise ValueError(
        f"model: {type(model).__name__} has no nn.ModuleList named 'blocks' or 'layers' (its transformer blocks)"
    )


def _first_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(
        f"block output: expected a tensor or a tuple starting with one, got {type(value).__name__}"
    )


@torch.no_grad()
def lim_scores(
    model: nn.Module,
    batches: torch.Tensor | Iterable[torch.Tensor],
    blocks: dict[str, nn.Module] | None = None,
    per_token: bool = False,
) -> dict[str, float]:
    """LIM score ``1 - cos(input, output)`` of every block, over calibration token ids.

    Args:
        model: called as ``model(ids)``.
        batches: token ids ``[B, T]`` or an iterable of them.
        blocks: fqn -> block (default :func:`find_blocks`).
        per_token: average the per-token cosine instead of flattening all tokens into one vector.

    Returns:
        block fqn -> LIM in ``[0, 2]``.
    """
    blocks = blocks if blocks is not None else find_blocks(model)
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    sums = {name: torch.zeros(3, dtype=torch.float64) for name in blocks}  # dot, |in|^2, |out|^2
    token_cos = {name: [] for name in blocks}

    def hook(name):
        def fn(module, args, kwargs, output):
            x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
            x, y = _first_tensor(x).double(), _first_tensor(output).double()
            if per_token:
                token_cos[name].append(nn.functional.cosine_similarity(x, y, dim=-1, eps=1e-12).flatten())
            else:
                sums[name] += torch.stack([(x * y).sum(), x.pow(2).sum(), y.pow(2).sum()])

        return fn

    handles = [b.register_forward_hook(hook(n), with_kwargs=True) for n, b in blocks.items()]
    seen = 0
    try:
        for ids in batches:
            model(ids)
            seen += 1
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("batches: expected at least one batch of token ids, got none")
    if per_token:
        return {n: float(1 - torch.cat(c).mean()) for n, c in token_cos.items()}
    return {n: float(1 - s[0] / (s[1].sqrt() * s[2].sqrt()).clamp_min(1e-300)) for n, s in sums.items()}


def zd_scores(
    model: nn.Module, blocks: dict[str, nn.Module] | None = None, two_sided: bool = True
) -> dict[str, float]:
    """ZD score of every block: the mean over its ``nn.Linear`` weights of the share of entries with
    ``|z| > 1`` (``z > 1`` if not ``two_sided``), ``z = (w - mean) / std`` per matrix. Data-free.

    Returns block fqn -> ZD in ``[0, 1]``; ValueError for a block without linear layers.
    """
    blocks = blocks if blocks is not None else find_blocks(model)
    out = {}
    for name, block in blocks.items():
        shares = []
        for m in block.modules():
            if isinstance(m, nn.Linear):
                w = m.weight.detach().double().flatten()
                z = (w - w.mean()) / w.std().clamp_min(1e-300)
                shares.append(float(((z.abs() if two_sided else z) > 1).double().mean()))
        if not shares:
            raise ValueError(f"blocks: {name!r} has no nn.Linear layers to score")
        out[name] = sum(shares) / len(shares)
    return out


declare_paper(
    arxiv="2406.17415",
    short="Layer-wise quantization",
    title=(
        "Layer-Wise Quantization: A Pragmatic and Effective Method for Quantizing LLMs Beyond Integer "
        "Bit-Levels"
    ),
    authors="Dumitru, Yadav, Maheshwary, Clotan, Madhusudhan, Surdeanu",
    area=LAYERS,
    status="implemented",
    objects=(
        "linearlab.analysis.layer_importance.lim_scores",
        "linearlab.analysis.layer_importance.zd_scores",
        "linearlab.convert.quantize.assign_bits",
        "linearlab.convert.quantize.quantize_",
    ),
    recipes=("layerwise-quant",),
    usage=(
        "from linearlab.analysis.layer_importance import lim_scores; from linearlab.convert.quantize import assign_bits, expand_to_linears, quantize_\n"
        "quantize_(model, expand_to_linears(model, assign_bits(lim_scores(model, torch.randint(0, 256, (2, 32))), 3.0, (2, 4))))"
    ),
    claim=(
        "Ordering layers by importance (LIM or ZD scores) keeps quality close to the original until "
        "25-50% of the layers move to lower bits, against 5-10% without an ordering (abstract)."
    ),
    figures=("layerwise-quant:*",),
)
