"""Turn a trained softmax DiT into a linear-attention DiT: weight inheritance, then distillation.

:func:`linearize_dit_` swaps every block's softmax grid attention for a ``lit`` or ``linfusion`` mixer
in place. Everything else (patch embedding, adaLN-Zero, MLPs, head) is kept, and the new mixers
inherit the teacher's ``q/k/v/o`` projections (LinFusion keeps ``W_q, W_k, W_v, W_o`` and adds the
zero-initialised feature MLPs; LiT loads every weight not tied to linear attention, here also the
projections, and adds the depthwise conv).

:func:`distillation_loss` is the student objective against the frozen teacher:

    L = w_noise * MSE(eps_s, noise)                     # the diffusion loss
      + w_out   * MSE(eps_s, eps_t)                     # output (noise-prediction) distillation
      + w_var   * MSE(v_s, v_t)                         # LiT's hybrid distillation: the variance too
      + w_feat  * sum_layers MSE(attn_s, attn_t)        # LinFusion's per-layer attention outputs
      (+ L_vlb when the student learns its variance and w_vlb > 0)

LinFusion's weights are ``(1, 0.5, 0, 0.5)`` (:data:`LINFUSION_WEIGHTS`, only attention trained);
LiT's hybrid distillation uses noise + output + variance (:data:`LIT_WEIGHTS`; the paper's exact
weights are not given in the abstract, so these are ours: 1, 1, 1, 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from linearlab.layers.vision.grid_attention import GRID_MIXERS, GridSoftmaxAttention, create_grid_mixer
from linearlab.models.dit import DiT, split_output, vlb_term

METHODS = ("lit", "linfusion")


@dataclass(frozen=True)
class DistillWeights:
    """Weights of the terms of :func:`distillation_loss`."""

    noise: float = 1.0
    out: float = 0.5
    var: float = 0.0
    feat: float = 0.5
    vlb: float = 0.0

    def __post_init__(self) -> None:
        for name in ("noise", "out", "var", "feat", "vlb"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: distillation weights must be >= 0, got {getattr(self, name)}")


LINFUSION_WEIGHTS = DistillWeights(noise=1.0, out=0.5, var=0.0, feat=0.5)
LIT_WEIGHTS = DistillWeights(noise=1.0, out=1.0, var=1.0, feat=0.0, vlb=1.0)


def linearize_dit_(model: DiT, method: str, num_heads: int | None = None, **mixer_kwargs) -> DiT:
    """Replace every softmax attention of ``model`` by ``method`` (``"lit"`` / ``"linfusion"``), in place.

    The new mixers inherit ``q_proj, k_proj, v_proj, o_proj``; ``num_heads`` (default: the teacher's)
    only changes how those projections are split. Returns ``model`` (its ``cfg.attention`` updated).

    Example:
        >>> student = linearize_dit_(copy.deepcopy(teacher), "linfusion")
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    GRID_MIXERS.check([method], argument="method")
    heads = model.cfg.num_heads if num_heads is None else num_heads
    replaced = 0
    for block in model.blocks:
        old = block.attn
        if not isinstance(old, GridSoftmaxAttention):
            raise ValueError(
                f"model: block attention is {type(old).__name__}, expected the softmax attention"
            )
        new = create_grid_mixer(method, old.d_model, heads, **mixer_kwargs).to(old.q_proj.weight)
        inherited = {
            k: v
            for k, v in old.state_dict().items()
            if k.split(".")[0] in ("q_proj", "k_proj", "v_proj", "o_proj")
        }
        missing, unexpected = new.load_state_dict(inherited, strict=False)
        assert not unexpected
        block.attn = new
        replaced += 1
    if replaced == 0:
        raise ValueError("model: found no attention to linearize")
    model.cfg.attention = method
    model.cfg.num_heads = heads
    model.cfg.attention_kwargs = dict(mixer_kwargs)
    return model


def attention_parameters(model: DiT) -> Iterator[nn.Parameter]:
    """The parameters of the blocks' attention modules (what LinFusion trains)."""
    for block in model.blocks:
        yield from block.attn.parameters()


@contextmanager
def capture_attention(model: DiT) -> Iterator[list[torch.Tensor]]:
    """Collect every block's attention output (``[B, N, D]`` each, in block order) during a forward."""
    outs: list[torch.Tensor] = []
    handles = [b.attn.register_forward_hook(lambda m, a, o: outs.append(o)) for b in model.blocks]
    try:
        yield outs
    finally:
        for h in handles:
            h.remove()


def distillation_loss(
    student: DiT,
    teacher: DiT,
    scheduler,
    x0: torch.Tensor,
    xt: torch.Tensor,
    t: torch.Tensor,
    noise: torch.Tensor,
    y: torch.Tensor,
    weights: DistillWeights = LINFUSION_WEIGHTS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's loss against a frozen teacher on one noisy batch (see the module docstring).

    Args:
        x0, xt, noise: ``[B, C, H, W]`` clean image, noisy image, the noise added; t, y: ``[B]``.

    Returns:
        ``(loss, per-term values)``.
    """
    if student.cfg.learn_sigma != teacher.cfg.learn_sigma and weights.var > 0:
        raise ValueError("weights.var: variance distillation needs student and teacher both with learn_sigma")
    with torch.no_grad(), capture_attention(teacher) as feats_t:
        eps_t, v_t = split_output(teacher, teacher(xt, t, y))
    with capture_attention(student) as feats_s:
        eps_s, v_s = split_output(student, student(xt, t, y))
    terms: dict[str, torch.Tensor] = {"noise": F.mse_loss(eps_s, noise), "out": F.mse_loss(eps_s, eps_t)}
    if v_s is not None and v_t is not None:
        terms["var"] = F.mse_loss(v_s, v_t)
    if v_s is not None and weights.vlb > 0:
        terms["vlb"] = vlb_term(scheduler, x0, xt, t, eps_s.detach(), v_s).mean()
    if weights.feat > 0:
        terms["feat"] = sum(F.mse_loss(a, b) for a, b in zip(feats_s, feats_t))
    loss = sum(getattr(weights, k) * v for k, v in terms.items())
    return loss, {k: float(v.detach()) for k, v in terms.items()}
