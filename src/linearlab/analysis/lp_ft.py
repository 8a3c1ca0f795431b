"""Linear probing, fine-tuning and LP-FT on the shared loop, with the NTK view of why LP-FT distorts less.

Tomihari & Sato (NeurIPS 2024), "Understanding Linear Probing then Fine-tuning Language Models from
NTK Perspective". For ``f(x) = V phi(x; B) + c`` the neural tangent kernel splits into

    Theta(x, x') = (phi(x)^T phi(x') + 1) I            (head term: gradients in V, c)
                 + V J_B phi(x) J_B phi(x')^T V^T        (feature term: gradients in B)

and the feature term grows with ``||V||^2``: a large head after linear probing (cross-entropy keeps
growing ``||V||`` once the data are separated) and accurate starting predictions both mean the
features move less during fine-tuning. The larger norm makes the model over-confident; temperature
scaling repairs the calibration.

- :class:`ProbedModel`: ``head(backbone(x))``;
- :func:`linear_probe`, :func:`finetune`, :func:`lp_ft`: cross-entropy training through
  ``linearlab.train.train``, returning ``||V||_F`` after every step;
- :func:`feature_change`: mean ``||phi_after(x) - phi_before(x)||``;
- :func:`ntk_split`: the two NTK terms on a batch, from parameter Jacobians (:mod:`torch.func`);
- :func:`expected_calibration_error`, :func:`fit_temperature`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train


class ProbedModel(nn.Module):
    """``f(x) = head(backbone(x))`` with ``head`` an ``nn.Linear``: ``x: [N, ...] -> [N, C]``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        if not isinstance(head, nn.Linear):
            raise TypeError(f"head: expected an nn.Linear (the linear head V), got {type(head).__name__}")
        self.backbone, self.head = backbone, head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``phi(x): [N, F]``."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def head_norm(model: ProbedModel) -> float:
    """``||V||_F`` of the head's weight."""
    return float(model.head.weight.detach().norm())


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    x, y = batch
    return F.cross_entropy(model(x), y), {}


def _fit(
    model: ProbedModel,
    batch_fn: Callable[[int], Any],
    cfg: TrainConfig,
    run_dir: RunDir | None,
    freeze_backbone: bool,
    desc: str,
) -> list[float]:
    if not isinstance(model, ProbedModel):
        raise TypeError(f"model: expected a ProbedModel(backbone, head), got {type(model).__name__}")
    norms: list[float] = []
    flags = [p.requires_grad for p in model.backbone.parameters()]
    if freeze_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    try:
        before = head_norm(model)
        train(model, batch_fn, _ce, cfg, run_dir=run_dir, resume=run_dir is not None, desc=desc,
              on_step=lambda step, m: norms.append(head_norm(model)))  # fmt: skip
    finally:
        for p, flag in zip(model.backbone.parameters(), flags):
            p.requires_grad_(flag)
    return [before, *norms]


def linear_probe(
    model: ProbedModel, batch_fn: Callable[[int], Any], cfg: TrainConfig, run_dir: RunDir | None = None
) -> list[float]:
    """Train only the head with cross-entropy (the backbone frozen, and unfrozen again after).

    ``batch_fn(step) -> (x, y)``. Returns ``||V||_F`` before training and after every step of this
    call (``[steps_run + 1]``; a resumed call lists only the steps it ran).
    """
    return _fit(model, batch_fn, cfg, run_dir, freeze_backbone=True, desc="linear probe")


def finetune(
    model: ProbedModel, batch_fn: Callable[[int], Any], cfg: TrainConfig, run_dir: RunDir | None = None
) -> list[float]:
    """Train every parameter with cross-entropy; returns ``||V||_F`` as :func:`linear_probe` does."""
    return _fit(model, batch_fn, cfg, run_dir, freeze_backbone=False, desc="fine-tune")


def lp_ft(
    model: ProbedModel,
    batch_fn: Callable[[int], Any],
    lp_cfg: TrainConfig,
    ft_cfg: TrainConfig,
    run_dirs: tuple[RunDir | None, RunDir | None] = (None, None),
) -> tuple[list[float], list[float]]:
    """Linear probing, then fine-tuning from the probed head; returns both head-norm traces."""
    return linear_probe(model, batch_fn, lp_cfg, run_dirs[0]), finetune(model, batch_fn, ft_cfg, run_dirs[1])


@torch.no_grad()
def feature_change(before: nn.Module, after: nn.Module, x: torch.Tensor) -> float:
    """Mean over the rows of ``x: [N, ...]`` of ``||phi_after(x) - phi_before(x)||_2``."""
    was = before.training, after.training
    before.eval(), after.eval()
    try:
        d = after(x) - before(x)
    finally:
        before.train(was[0]), after.train(was[1])
    return float(d.flatten(1).norm(dim=1).mean())


def _param_jacobian(model: ProbedModel, x: torch.Tensor, names: list[str]) -> torch.Tensor:
    """``d f(x) / d theta_names`` as ``[N, C, P]`` (``P`` the size of the named parameters)."""
    params = dict(model.named_parameters())
    chosen = {k: params[k].detach() for k in names}
    fixed = {k: v.detach() for k, v in params.items() if k not in chosen}
    buffers = dict(model.named_buffers())

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(model, {**fixed, **p, **buffers}, (x,))

    jac = torch.func.jacrev(f)(chosen)  # name -> [N, C, *shape]
    n, c = x.shape[0], model.head.out_features
    return torch.cat([jac[k].reshape(n, c, -1) for k in names], dim=2)


def ntk_split(
    model: ProbedModel, x: torch.Tensor, x2: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two terms of the empirical NTK ``Theta(x_i, x2_j): [N, N2, C, C]``.

    Returns ``(head_term, feature_term)``: the kernel of the head's parameters (``V`` and its bias),
    equal to ``(phi(x_i)^T phi(x2_j) + 1) I_C``, and the kernel of the backbone's parameters,
    ``V J phi(x_i) J phi(x2_j)^T V^T``, which scales with ``||V||^2``. Their sum is the full NTK.
    Evaluated with the model in eval mode (no dropout). ``x2`` defaults to ``x``.
    """
    if not isinstance(model, ProbedModel):
        raise TypeError(f"model: expected a ProbedModel(backbone, head), got {type(model).__name__}")
    x2 = x if x2 is None else x2
    was = model.training
    model.eval()
    try:
        head = [k for k, _ in model.named_parameters() if k.startswith("head.")]
        feat = [k for k, _ in model.named_parameters() if k.startswith("backbone.")]
        terms = []
        for names in (head, feat):
            j1 = _param_jacobian(model, x, names)
            j2 = j1 if x2 is x else _param_jacobian(model, x2, names)
            terms.append(torch.einsum("acp,bdp->abcd", j1, j2))
    finally:
        model.train(was)
    return terms[0], terms[1]


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017):
    ``sum_b |B_b|/N * |accuracy(B_b) - mean confidence(B_b)|``, confidence = the max softmax
    probability; ``logits: [N, C]``, ``labels: [N]``. Bins are ``(lo, hi]``."""
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits, labels: expected [N, C] and [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins: must be >= 1, got {n_bins}")
    prob = torch.softmax(logits.double(), dim=1)
    conf, pred = prob.max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += float(inside.double().mean() * (correct[inside].mean() - conf[inside].mean()).abs())
    return ece


def fit_temperature(
    logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = (0.01, 100.0)
) -> float:
    """The temperature ``T`` minimising the NLL of ``softmax(logits / T)`` on held-out
    ``(logits [N, C], labels [N])``: a one-dimensional fit (bounded Brent on ``log T``, scipy)."""
    from scipy.optimize import minimize_scalar

    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"logits, labels: expected [N, C] and [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    z, y = logits.detach().double(), labels

    def nll(log_t: float) -> float:
        return float(F.cross_entropy(z / math.exp(log_t), y))

    res = minimize_scalar(nll, bounds=(math.log(bounds[0]), math.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})  # fmt: skip
    return math.exp(res.x)
