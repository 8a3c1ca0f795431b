"""Weight (and activation) quantization of linear layers, per module, through torchao where it works on CPU.

- :func:`assign_bits`: the layer-wise quantization rule of Dumitru et al. (arXiv 2406.17415): rank the
  layers by an importance score (:mod:`linearlab.analysis.layer_importance`) and move the least
  important ones to fewer bits until the average meets a budget (non-integer averages such as 3.25).
- :func:`quantize_`: quantize the chosen ``nn.Linear`` layers in place, each with its own bit-width:
  torchao's ``IntxWeightOnlyConfig`` (weights only, int1..int8, symmetric per group) or
  ``Int8DynamicActivationIntxWeightConfig`` (``act_bits=8``: W4A8 / W8A8), combined in one
  ``FqnToConfig``. torchao keeps the module an ``nn.Linear`` whose weight is a tensor subclass.
  Where torchao cannot (an input width that the group size does not divide), our
  :class:`FakeQuantLinear` applies the same symmetric per-group rounding (zero-padding the last group).
- :class:`WeightQuantConfig`: the same for one layer, usable with
  :func:`~linearlab.convert.linear_swap.convert_`.
- :func:`save_quantized` / :func:`load_quantized`: safetensors round trip of a quantized model (torchao's
  tensor-subclass flattening).

Example:
    >>> bits = assign_bits(lim_scores(model, ids), target_avg_bits=3.0, choices=(2, 4))
    >>> quantize_(model, expand_to_linears(model, bits), group_size=32)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from linearlab.convert.linear_swap import FilterFn, default_filter, linear_layers

MAX_BITS = 8


def _check_bits(bits: int, name: str = "bits") -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"{name}: integer weight bit-widths 1..{MAX_BITS} are supported, got {bits!r}")
    return bits


def _check_act_bits(act_bits: int | None) -> int | None:
    if act_bits not in (None, 8):
        raise ValueError(
            f"act_bits: only None (weight-only) or 8 (dynamic int8 activations), got {act_bits!r}"
        )
    return act_bits


def _check_group(group_size: int) -> int:
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size: must be a positive integer, got {group_size!r}")
    return group_size


# -- bit assignment -------------------------------------------------------------------------------


def assign_bits(
    scores: Mapping[str, float],
    target_avg_bits: float,
    choices: Sequence[int] = (2, 4),
    higher_is_important: bool = True,
) -> dict[str, int]:
    """Give each layer a bit-width from ``choices``, more bits to more important layers, with the
    largest mean bit-width that stays within ``target_avg_bits``.

    The assignment is monotone in importance (a layer never gets fewer bits than a less important
    one). Among the monotone assignments (how many layers sit at each width), the one with the
    highest mean ``<= target_avg_bits`` wins; ties go to the one with fewer layers at the lowest widths.
    With two choices this is the paper's rule: the ``k`` least important layers at the low width,
    ``avg = hi - (k / L)(hi - lo)`` (non-integer levels such as 3.25 bits).

    Args:
        scores: layer name -> importance score (e.g. LIM, ZD).
        target_avg_bits: budget for the mean bit-width, in ``[min(choices), max(choices)]``.
        choices: allowed bit-widths (each 1..8), at least one.
        higher_is_important: True for LIM (a layer that changes its input more matters more); the ZD
            paper reads "smaller is better" (pass False).

    Returns:
        layer name -> bits, in the order of ``scores``.
    """
    if not scores:
        raise ValueError("scores: expected at least one layer score, got none")
    levels = sorted({_check_bits(b, "choices") for b in choices})
    if not levels:
        raise ValueError("choices: expected at least one bit-width, got none")
    if not levels[0] <= target_avg_bits <= levels[-1]:
        raise ValueError(
            f"target_avg_bits: must be within the choices [{levels[0]}, {levels[-1]}], got {target_avg_bits}"
        )
    bad = [k for k, v in scores.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"scores: non-finite score for {bad[:4]}")
    n = len(scores)
    if math.comb(n + len(levels) - 1, len(levels) - 1) > 2_000_000:
        raise ValueError(
            f"choices: {len(levels)} widths over {n} layers are too many combinations; use fewer widths"
        )
    sign = 1.0 if higher_is_important else -1.0
    # least important first; ties broken by name so the result is deterministic
    order = sorted(scores, key=lambda k: (sign * scores[k], k))
    budget = target_avg_bits * n + 1e-9
    best: tuple | None = None
    for counts in _compositions(n, len(levels)):
        total = sum(c * b for c, b in zip(counts, levels))
        if total > budget:
            continue
        key = (total, tuple(-c for c in counts))
        if best is None or key > best[0]:
            best = (key, counts)
    assert best is not None  # all layers at the lowest width always fits
    widths = [b for c, b in zip(best[1], levels) for _ in range(c)]
    by_name = dict(zip(order, widths))
    return {k: by_name[k] for k in scores}


def _compositions(n: int, parts: int):
    """Every tuple of ``parts`` non-negative integers summing to ``n``."""
    if parts == 1:
        yield (n,)
        return
    for first in range(n + 1):
        for rest in _compositions(n - first, parts - 1):
            yield (first, *rest)


def expand_to_linears(model: nn.Module, bits_by_prefix: Mapping[str, int]) -> dict[str, int]:
    """Map per-block bit-widths (``{"blocks.0": 4, ...}``) onto every ``nn.Linear`` beneath each prefix.

    Raises ValueError for a prefix without any linear layer.
    """
    names = linear_layers(model)
    out: dict[str, int] = {}
    for prefix, bits in bits_by_prefix.items():
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ValueError(f"bits_by_prefix: {prefix!r} holds no nn.Linear layer of the model")
        out.update(dict.fromkeys(hits, bits))
    return out


# -- our fake quant (only where torchao cannot) ------------------------------------------------------


def fake_quantize_weight(weight: torch.Tensor, bits: int, group_size: int) -> torch.Tensor:
    """Symmetric per-group round-to-nearest of ``weight: [out, in]`` along ``in`` (torchao's rule:
    ``scale = max|w| / ((2^b - 1) / 2)``, integers clamped to ``[-2^(b-1), 2^(b-1) - 1]``); the last group
    is zero-padded. Returns the dequantised weight, same shape and dtype."""
    _check_bits(bits)
    _check_group(group_size)
    out_f, in_f = weight.shape
    pad = (-in_f) % group_size
    w = torch.nn.functional.pad(weight.float(), (0, pad)).reshape(out_f, -1, group_size)
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = w.abs().amax(-1, keepdim=True) / ((qmax - qmin) / 2)
    scale = scale.clamp_min(torch.finfo(torch.float32).eps)
    # multiply by the reciprocal as torchao does, so ties at the group max round the same way
    q = torch.clamp(torch.round(w * (1.0 / scale)), qmin, qmax)
    return (q * scale).reshape(out_f, -1)[:, :in_f].to(weight.dtype)


def fake_quantize_activation_int8(x: torch.Tensor) -> torch.Tensor:
    """Dynamic per-token asymmetric int8 quantize-dequantize of ``x: [..., K]`` (what torchao's
    ``Int8DynamicActivation*`` configs do to activations)."""
    lo = x.amin(-1, keepdim=True).clamp(max=0)
    hi = x.amax(-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / 255).clamp_min(torch.finfo(torch.float32).eps)
    zero = torch.round(-128 - lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, -128, 127)
    return (q - zero) * scale


class FakeQuantLinear(nn.Module):
    """``nn.Linear`` with a fake-quantised weight (and optionally int8 dynamic activations).

    ``weight: [out, in]`` holds the dequantised values (so the state dict keeps ``nn.Linear``'s keys);
    ``x: [..., in] -> [..., out]``.
    """

    def __init__(
        self, linear: nn.Linear, bits: int, group_size: int = 32, act_bits: int | None = None
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.bits, self.group_size, self.act_bits = (
            _check_bits(bits),
            _check_group(group_size),
            _check_act_bits(act_bits),
        )
        self.weight = nn.Parameter(
            fake_quantize_weight(linear.weight.detach(), bits, group_size), requires_grad=False
        )
        self.bias = (
            None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_bits == 8:
            x = fake_quantize_activation_int8(x)
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, " \
            f"group_size={self.group_size}, act_bits={self.act_bits}"  # fmt: skip


# -- torchao ----------------------------------------------------------------------------------------


def torchao_config(bits: int, group_size: int = 32, act_bits: int | None = None):
    """The torchao config for one linear: ``IntxWeightOnlyConfig`` or, with ``act_bits=8``,
    ``Int8DynamicActivationIntxWeightConfig`` (symmetric weights per group of ``group_size``)."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    dtype = getattr(torch, f"int{_check_bits(bits)}")
    if _check_act_bits(act_bits) == 8:
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=dtype, weight_granularity=PerGroup(group_size)
        )
    return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=PerGroup(group_size))


def torchao_can(linear: nn.Linear, group_size: int) -> bool:
    """torchao's per-group CPU path needs whole groups along the input width."""
    return linear.in_features % group_size == 0


@dataclass(frozen=True)
class WeightQuantConfig:
    """Quantize one linear layer (for :func:`~linearlab.convert.linear_swap.convert_`).

    ``bits`` 1..8 symmetric per ``group_size`` weights, ``act_bits`` None or 8 (dynamic per token).
    ``replace`` returns an ``nn.Linear`` with a torchao-quantized weight when torchao can, else a
    :class:`FakeQuantLinear`.
    """

    bits: int = 4
    group_size: int = 32
    act_bits: int | None = None

    def __post_init__(self) -> None:
        _check_bits(self.bits)
        _check_group(self.group_size)
        _check_act_bits(self.act_bits)

    def replace(self, module: nn.Linear, fqn: str) -> nn.Module:
        if not torchao_can(module, self.group_size):
            return FakeQuantLinear(module, self.bits, self.group_size, self.act_bits)
        from torchao.quantization import quantize_ as ao_quantize_

        holder = nn.Sequential(copy.deepcopy(module))
        ao_quantize_(holder, torchao_config(self.bits, self.group_size, self.act_bits))
        return holder[0]


def quantize_(
    model: nn.Module,
    bits: int | Mapping[str, int],
    group_size: int = 32,
    act_bits: int | None = None,
    filter_fn: FilterFn | None = None,
) -> dict[str, str]:
    """Quantize the model's linear layers in place, each with its own bit-width.

    Args:
        model: any module with ``nn.Linear`` layers (MixerLM, Hugging Face models, ...).
        bits: one width for every chosen layer, or ``{linear fqn: bits}`` (see :func:`expand_to_linears`;
            layers missing from the mapping stay in float).
        group_size: weights share one scale per ``group_size`` input channels.
        act_bits: None (weight-only) or 8 (dynamic per-token int8 activations).
        filter_fn: ``(module, fqn) -> bool``; default every ``nn.Linear``.

    Returns:
        fqn -> ``"torchao"`` or ``"fake"`` (which backend quantized it).
    """
    _check_group(group_size)
    _check_act_bits(act_bits)
    choose = filter_fn or default_filter
    names = linear_layers(model)
    if not names:
        raise ValueError(f"model: {type(model).__name__} has no nn.Linear layers to quantize")
    if isinstance(bits, Mapping):
        unknown = [k for k in bits if k not in names]
        if unknown:
            raise ValueError(f"bits: {unknown[:4]} are not nn.Linear layers of the model (e.g. {names[:3]})")
        widths = {k: _check_bits(v, f"bits[{k!r}]") for k, v in bits.items()}
    else:
        widths = dict.fromkeys(names, _check_bits(bits))
    chosen = [n for n in names if n in widths and choose(model.get_submodule(n), n)]
    if not chosen:
        raise ValueError(f"filter_fn: matched none of the layers to quantize ({', '.join(names[:6])}, ...)")
    backend: dict[str, str] = {}
    ao_table: dict[str, object] = {}
    for fqn in chosen:
        lin = model.get_submodule(fqn)
        if torchao_can(lin, group_size):
            ao_table[fqn] = torchao_config(widths[fqn], group_size, act_bits)
            backend[fqn] = "torchao"
        else:
            parent, _, child = fqn.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    FakeQuantLinear(lin, widths[fqn], group_size, act_bits))  # fmt: skip
            backend[fqn] = "fake"
    if ao_table:
        from torchao.quantization import FqnToConfig
        from torchao.quantization import quantize_ as ao_quantize_

        ao_quantize_(model, FqnToConfig(ao_table), filter_fn=None)
    return backend


# -- safetensors ------------------------------------------------------------------------------------


def save_quantized(model: nn.Module, path) -> None:
    """Write ``model.state_dict()`` (torchao tensor subclasses flattened) to a safetensors file, atomically."""
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    from linearlab.io import atomic_save_safetensors

    tensors, metadata = flatten_tensor_state_dict(model.state_dict())
    atomic_save_safetensors(path, tensors, metadata=metadata)


def load_quantized(model: nn.Module, path) -> nn.Module:
    """Load a file of :func:`save_quantized` into ``model`` (quantized the same way beforehand)."""
    from safetensors import safe_open
    from torchao.prototype.safetensors.safetensors_support import unflatten_tensor_state_dict

    from linearlab.io import check_input_path

    path = check_input_path(path, "file", "path")
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    state, leftover = unflatten_tensor_state_dict(tensors, metadata)
    state.update(leftover)
    model.load_state_dict(state, assign=True)
    return model


def describe(backend: Mapping[str, str], bits: Mapping[str, int] | int) -> str:
    """One JSON line: how many layers each backend took, and the mean bit-width."""
    widths = list(bits.values()) if isinstance(bits, Mapping) else [bits]
    return json.dumps({"torchao": sum(v == "torchao" for v in backend.values()),
                       "fake": sum(v == "fake" for v in backend.values()),
                       "mean_bits": sum(widths) / len(widths)})  # fmt: skip
