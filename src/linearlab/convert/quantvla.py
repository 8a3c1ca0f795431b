"""QuantVLA's scale calibration after post-training quantization (arXiv 2602.20309), for softmax attention.

Zhang, Hsieh, Wan, Lin, Wang, Wang, Lei, Zhang, "QuantVLA: Scale-Calibrated Post-Training Quantization for
Vision-Language-Action Models", CVPR 2026 (code: JingxuanZhang77/QuantVLA_GR00T, ``gr00t/atm/``,
``tools/calibrate_atm_dit.py``). Quantizing the projections shifts the scale of the attention logits
and of the attention output; two per-layer scalings measured on a few unlabeled batches undo it,
without training:

- **ATM** (attention temperature matching): per layer and head, ``alpha = std_fp / (std_q + 1e-6)`` of
  the logits ``q k^T / sqrt(d_h)`` over the causal (valid) positions, averaged over the batch;
  clamped to ``[0.7, 1.4]`` and set to 1 when ``|alpha - 1| < 0.02``. The query is multiplied by
  ``alpha`` (a per-output-channel scale on the query projection, which the paper folds into the
  dequantisation scales), so the logits scale by ``alpha``.
- **OHB** (output head balancing): per layer, ``log beta = -log(rms_q / rms_fp)`` of the attention
  output after the output projection, clamped to ``|log beta| <= 0.3`` and 1 when ``|log beta| < 0.03``;
  the output is multiplied by ``beta`` before the residual add. Measured with ATM already in place.

Works on the softmax attention of :class:`~linearlab.models.MixerLM` (fused ``qkv_proj`` and
``o_proj``). The quantization itself is :func:`linearlab.convert.quantize.quantize_` (e.g. W4A8).

Example:
    >>> q = copy.deepcopy(model); quantize_(q, 4, act_bits=8)
    >>> result = quantvla_calibrate_(model, q, [ids])       # q now has ATM and OHB scales
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from linearlab.layers.mixers.softmax import SoftmaxAttention
from linearlab.layers.multihead import split_heads
from linearlab.papers import LAYERS, declare_paper


class ChannelScale(nn.Module):
    """``y = inner(x) * scale``: a fixed per-output-channel scale after a (quantized) linear layer.

    ``scale: [out]`` is a buffer (saved in the state dict). ``x: [..., in] -> [..., out]``.
    """

    def __init__(self, inner: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("scale", scale.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale.to(x.dtype)


def attention_layers(model: nn.Module) -> dict[str, SoftmaxAttention]:
    """The softmax-attention mixers of ``model`` by fqn; ValueError if it has none."""
    found = {fqn: m for fqn, m in model.named_modules() if isinstance(m, SoftmaxAttention)}
    if not found:
        raise ValueError(
            f"model: {type(model).__name__} has no softmax attention layers (SoftmaxAttention) to calibrate"
        )
    return found


def _as_list(batches: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    out = [batches] if isinstance(batches, torch.Tensor) else list(batches)
    if not out:
        raise ValueError("batches: expected at least one batch of token ids, got none")
    return out


@torch.no_grad()
def head_logit_std(
    model: nn.Module, batches: torch.Tensor | Iterable[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per attention layer, the std of the logits ``q k^T / sqrt(d_h)`` over causal positions for each
    head, averaged over sequences and batches: fqn -> ``[H]``."""
    layers = attention_layers(model)
    sums = {n: torch.zeros(m.num_heads, dtype=torch.float64) for n, m in layers.items()}
    counts = dict.fromkeys(layers, 0)

    def hook(name: str, attn: SoftmaxAttention):
        def fn(module, args):
            x = args[0]
            q, k, _ = (split_heads(t, attn.num_heads) for t in attn.qkv_proj(x).chunk(3, dim=-1))
            if attn.rotary is not None:
                q, k = attn.rotary(q), attn.rotary(k)
            logits = torch.einsum("bthd,bshd->bhts", q.double(), k.double()) / math.sqrt(attn.head_dim)
            t = x.shape[1]
            valid = torch.ones(t, t, dtype=torch.bool).tril()
            if attn.window_size is not None:
                valid &= ~torch.ones(t, t, dtype=torch.bool).tril(-attn.window_size)
            vals = logits[..., valid]  # [B, H, P]
            sums[name] += vals.std(dim=-1).sum(0)
            counts[name] += x.shape[0]

        return fn

    handles = [m.register_forward_pre_hook(hook(n, m)) for n, m in layers.items()]
    try:
        for ids in _as_list(batches):
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return {n: (sums[n] / counts[n]).float() for n in layers}


@torch.no_grad()
def attention_output_rms(
    model: nn.Module, batches: torch.Tensor | Iterable[torch.Tensor]
) -> dict[str, float]:
    """Per attention layer, the RMS of its output (after the output projection): fqn -> float."""
    layers = attention_layers(model)
    sq = dict.fromkeys(layers, 0.0)
    n = dict.fromkeys(layers, 0)

    def hook(name: str):
        def fn(module, args, output):
            y = output[0] if isinstance(output, tuple) else output
            sq[name] += float(y.double().pow(2).sum())
            n[name] += y.numel()

        return fn

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        for ids in _as_list(batches):
            model(ids)
    finally:
        for h in handles:
            h.remove()
    return {k: math.sqrt(sq[k] / n[k]) for k in layers}


@dataclass
class QuantVLAResult:
    """What :func:`quantvla_calibrate_` measured and installed.

    Attributes:
        alpha: fqn -> ``[H]`` ATM factors (1 = untouched head).
        beta: fqn -> OHB factor.
        std_ratio_before / std_ratio_after: fqn -> ``[H]`` logit-std ratio quantized / float, before and
            after ATM.
        rms_ratio_before / rms_ratio_after: fqn -> output-RMS ratio quantized / float, before ATM and OHB,
            and after both.
    """

    alpha: dict[str, torch.Tensor] = field(default_factory=dict)
    beta: dict[str, float] = field(default_factory=dict)
    std_ratio_before: dict[str, torch.Tensor] = field(default_factory=dict)
    std_ratio_after: dict[str, torch.Tensor] = field(default_factory=dict)
    rms_ratio_before: dict[str, float] = field(default_factory=dict)
    rms_ratio_after: dict[str, float] = field(default_factory=dict)


def atm_alpha(std_fp: torch.Tensor, std_q: torch.Tensor, clamp: tuple[float, float] = (0.7, 1.4),
              neutral: float = 0.02) -> torch.Tensor:  # fmt: skip
    """ATM factors ``[H]``: ``std_fp / (std_q + 1e-6)`` clamped, 1 within ``neutral`` of 1."""
    alpha = (std_fp / (std_q + 1e-6)).clamp(*clamp)
    return torch.where((alpha - 1).abs() < neutral, torch.ones_like(alpha), alpha)


def ohb_beta(rms_fp: float, rms_q: float, log_clamp: float = 0.3, neutral: float = 0.03) -> float:
    """OHB factor: ``exp(clamp(-log(rms_q / rms_fp), +-log_clamp))``, 1 when ``|log beta| < neutral``."""
    log_beta = max(-log_clamp, min(log_clamp, -math.log(rms_q / rms_fp)))
    return 1.0 if abs(log_beta) < neutral else math.exp(log_beta)


def quantvla_calibrate_(
    model_fp: nn.Module,
    model_q: nn.Module,
    batches: torch.Tensor | Iterable[torch.Tensor],
    atm: bool = True,
    ohb: bool = True,
    alpha_clamp: tuple[float, float] = (0.7, 1.4),
    alpha_neutral: float = 0.02,
    beta_log_clamp: float = 0.3,
    beta_neutral: float = 0.03,
) -> QuantVLAResult:
    """Calibrate the quantized ``model_q`` against its float teacher ``model_fp`` on ``batches`` (token
    ids ``[B, T]``, or an iterable of them), in place: ATM scales on the query part of each ``qkv_proj``
    and OHB scales on each ``o_proj`` (wrapped in :class:`ChannelScale`).

    Both models must have the same attention layers (the quantized one a copy of the teacher).
    Raises ValueError if the layers differ or ``model_q`` was calibrated already.
    """
    batches = _as_list(batches)
    fp_layers, q_layers = attention_layers(model_fp), attention_layers(model_q)
    if list(fp_layers) != list(q_layers):
        raise ValueError(
            f"model_q: its attention layers {list(q_layers)[:3]} differ from model_fp's {list(fp_layers)[:3]}"
        )
    if any(
        isinstance(m.qkv_proj, ChannelScale) or isinstance(m.o_proj, ChannelScale) for m in q_layers.values()
    ):
        raise ValueError(
            "model_q: already calibrated (its projections carry ChannelScale); start from a fresh copy"
        )
    result = QuantVLAResult()
    std_fp, std_q = head_logit_std(model_fp, batches), head_logit_std(model_q, batches)
    rms_fp, rms_q = attention_output_rms(model_fp, batches), attention_output_rms(model_q, batches)
    for name, attn in q_layers.items():
        result.std_ratio_before[name] = std_q[name] / std_fp[name]
        result.rms_ratio_before[name] = rms_q[name] / rms_fp[name]
        alpha = (
            atm_alpha(std_fp[name], std_q[name], alpha_clamp, alpha_neutral)
            if atm
            else torch.ones(attn.num_heads)
        )
        result.alpha[name] = alpha
        d = attn.d_model
        scale = torch.cat([alpha.repeat_interleave(attn.head_dim), torch.ones(2 * d)])
        attn.qkv_proj = ChannelScale(attn.qkv_proj, scale)
    std_after = head_logit_std(model_q, batches)
    rms_mid = attention_output_rms(model_q, batches)
    for name, attn in q_layers.items():
        result.std_ratio_after[name] = std_after[name] / std_fp[name]
        beta = ohb_beta(rms_fp[name], rms_mid[name], beta_log_clamp, beta_neutral) if ohb else 1.0
        result.beta[name] = beta
        attn.o_proj = ChannelScale(attn.o_proj, torch.full((attn.d_model,), beta))
    rms_after = attention_output_rms(model_q, batches)
    result.rms_ratio_after = {n: rms_after[n] / rms_fp[n] for n in q_layers}
    return result


declare_paper(
    arxiv="2602.20309",
    short="QuantVLA",
    title="QuantVLA: Scale-Calibrated Post-Training Quantization for Vision-Language-Action Models",
    authors="Zhang, Hsieh, Wan, Lin, Wang, Wang, Lei, Zhang",
    venue="CVPR 2026",
    area=LAYERS,
    status="partial",
    objects=(
        "linearlab.convert.quantvla.quantvla_calibrate_",
        "linearlab.convert.quantvla.ChannelScale",
        "linearlab.convert.quantize.quantize_",
    ),
    recipes=("quantvla",),
    usage=(
        "import copy; from linearlab.convert.quantize import quantize_; from linearlab.convert.quantvla import quantvla_calibrate_\n"
        "q = copy.deepcopy(model); quantize_(q, 4, act_bits=8); result = quantvla_calibrate_(model, q, torch.randint(0, 256, (2, 32)))"
    ),
    claim=(
        "On LIBERO with pi0.5 and GR00T N1.5, quantised models exceed full-precision task success with "
        "about 70% memory savings on the quantised parts and a 1.22x end-to-end speed-up (abstract)."
    ),
    figures=("quantvla:*",),
    note=(
        "The ATM/OHB calibration is implemented for softmax attention and measured on the byte-level "
        "test-bed LM (perplexity), not on a VLA / DiT action head; the DuQuant rotation+smoothing "
        "quantizer is replaced by torchao's symmetric per-group weights and dynamic int8 activations."
    ),
)
