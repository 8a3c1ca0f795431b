"""Linear mode connectivity: the loss on the straight line between two networks, and its curvature.

Singh, Adilova, Kamp, Fischer, Schölkopf, Hofmann (2024), "Landscaping Linear Mode Connectivity".
For parameters ``theta_A``, ``theta_B`` and ``theta(alpha) = (1 - alpha) theta_A + alpha theta_B``
the barrier is

    B(alpha) = L(theta(alpha)) - [(1 - alpha) L(theta_A) + alpha L(theta_B)],

and for a quadratic loss, exactly, ``B(1/2) = -1/8 delta^T H delta`` with ``delta = theta_A - theta_B``
and ``H`` the Hessian (at the midpoint, the best single point for a non-quadratic loss): a positive
barrier is negative curvature along ``delta``, a ridge crossed on the way. ``delta^T H delta`` comes
from one Hessian-vector product (forward-over-reverse, :mod:`torch.func`), never the Hessian itself.

Layer-wise (Adilova et al.'s layer-wise LMC): only one layer's block moves, from ``theta_A`` to
``theta_A`` with that block taken from ``theta_B``; the other layers stay at ``theta_A``. The
prediction restricts ``delta`` (and so the Hessian-vector product) to that block.

Example:
    >>> res = interpolation_barrier(net_a, net_b, lambda m: F.cross_entropy(m(x), y),
    ...                             alphas=torch.linspace(0, 1, 21), layers=["0", "2"],
    ...                             metric_fn=lambda m: (m(x).argmax(1) != y).float().mean().item())
    >>> res.max_barrier, res.predicted_midpoint, res.layers["0"].max_barrier
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

LossFn = Callable[[nn.Module], torch.Tensor]
MetricFn = Callable[[nn.Module], float]


@dataclass
class LineScan:
    """Values on one straight line (whole model or one layer's block).

    Attributes:
        alphas: ``[n]`` interpolation coefficients (0 = model A).
        losses: ``[n]`` loss at each alpha; ``barrier``: ``[n]`` loss minus the chord.
        max_barrier: ``max_alpha barrier`` (alphas in ``[0, 1]``).
        midpoint_barrier: ``barrier`` at ``alpha = 1/2`` (interpolated linearly if 1/2 is not a point).
        predicted_midpoint: ``-1/8 delta^T H delta``, ``H`` the Hessian at the midpoint.
        curvature: ``delta^T H delta``.
        errors / error_barrier / max_error_barrier: the same for ``metric_fn`` (empty without it).
    """

    alphas: list[float]
    losses: list[float]
    barrier: list[float]
    max_barrier: float
    midpoint_barrier: float
    predicted_midpoint: float
    curvature: float
    errors: list[float] = field(default_factory=list)
    error_barrier: list[float] = field(default_factory=list)
    max_error_barrier: float = float("nan")


@dataclass
class BarrierResult(LineScan):
    """The whole-model :class:`LineScan` plus ``layers``: layer name -> its own :class:`LineScan`."""

    layers: dict[str, LineScan] = field(default_factory=dict)


def _named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def check_same_architecture(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise ValueError unless both models have the same parameter / buffer names and shapes."""
    for arg, m in (("model_a", model_a), ("model_b", model_b)):
        if not isinstance(m, nn.Module):
            raise TypeError(f"{arg}: expected an nn.Module, got {type(m).__name__}")
    ta, tb = _named_tensors(model_a), _named_tensors(model_b)
    if set(ta) != set(tb):
        only_a, only_b = sorted(set(ta) - set(tb)), sorted(set(tb) - set(ta))
        raise ValueError(
            f"model_b: the models differ in parameter names (only in model_a: {only_a[:5]}, only in "
            f"model_b: {only_b[:5]}); interpolation needs two networks of one architecture"
        )
    for name in ta:
        if ta[name].shape != tb[name].shape:
            raise ValueError(
                f"model_b: parameter {name!r} has shape {tuple(tb[name].shape)}, model_a has "
                f"{tuple(ta[name].shape)}; interpolation needs two networks of one architecture"
            )


def layer_blocks(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly (the "layers" of layer-wise barriers)."""
    return [name for name, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _block_names(model: nn.Module, layer: str) -> list[str]:
    names = [n for n, _ in model.named_parameters() if n.startswith(layer + ".") or n == layer]
    if not names:
        raise ValueError(
            f"layers: {layer!r} names no parameters of the model; layers with parameters: {layer_blocks(model)}"
        )
    return names


def _lerp_state(
    a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float, names: Sequence[str] | None
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) a + alpha b`` on ``names`` (all floating tensors when None), ``a`` elsewhere."""
    out = {}
    for k, va in a.items():
        moves = (names is None or k in names) and va.is_floating_point()
        out[k] = torch.lerp(va, b[k], alpha) if moves else va
    return out


class _Loss(nn.Module):
    """``forward() = loss_fn(model)``, so :func:`torch.func.functional_call` can swap its parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self) -> torch.Tensor:
        return self.loss_fn(self.model)


def quadratic_form(
    model: nn.Module,
    loss_fn: LossFn,
    point: dict[str, torch.Tensor],
    direction: dict[str, torch.Tensor],
) -> float:
    """``v^T H v``: ``H`` the Hessian of ``loss_fn`` at the parameters ``point`` (name -> tensor,
    a subset of the model's parameters; the others keep their current values), ``v = direction``
    (same names). One forward-over-reverse Hessian-vector product.
    """
    wrapper = _Loss(model, loss_fn)
    fixed = {f"model.{k}": v.detach() for k, v in _named_tensors(model).items() if k not in point}
    names = list(point)

    def loss_of(*params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(
            wrapper, {**fixed, **{f"model.{k}": p for k, p in zip(names, params)}}, ()
        )

    primals = tuple(point[k].detach() for k in names)
    tangents = tuple(direction[k].detach().to(point[k].dtype) for k in names)
    _, hvp = torch.func.jvp(torch.func.grad(loss_of, argnums=tuple(range(len(names)))), primals, tangents)
    return float(sum((h * t).sum() for h, t in zip(hvp, tangents)))


def _scan(
    model: nn.Module,
    sa: dict[str, torch.Tensor],
    sb: dict[str, torch.Tensor],
    names: Sequence[str] | None,
    loss_fn: LossFn,
    metric_fn: MetricFn | None,
    alphas: list[float],
) -> LineScan:
    losses, errors = [], []
    with torch.no_grad():
        for a in alphas:
            model.load_state_dict(_lerp_state(sa, sb, a, names))
            losses.append(float(loss_fn(model)))
            if metric_fn is not None:
                errors.append(float(metric_fn(model)))

    def chord_gap(values: list[float]) -> list[float]:
        # the chord joins the line's own endpoints alpha = 0 and alpha = 1
        v0, v1 = values[alphas.index(0.0)], values[alphas.index(1.0)]
        return [v - ((1 - a) * v0 + a * v1) for a, v in zip(alphas, values)]

    barrier = chord_gap(losses)
    inside = [i for i, a in enumerate(alphas) if 0.0 <= a <= 1.0]
    mid = _interp(0.5, alphas, barrier)
    params = [n for n, _ in model.named_parameters()] if names is None else list(names)
    point = {k: torch.lerp(sa[k], sb[k], 0.5) for k in params}
    delta = {k: sa[k] - sb[k] for k in params}
    model.load_state_dict(_lerp_state(sa, sb, 0.5, names))
    curv = quadratic_form(model, loss_fn, point, delta)
    scan = LineScan(
        alphas=list(alphas),
        losses=losses,
        barrier=barrier,
        max_barrier=max(barrier[i] for i in inside),
        midpoint_barrier=mid,
        predicted_midpoint=-curv / 8.0,
        curvature=curv,
    )
    if metric_fn is not None:
        eb = chord_gap(errors)
        scan.errors, scan.error_barrier = errors, eb
        scan.max_error_barrier = max(eb[i] for i in inside)
    return scan


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    pairs = sorted(zip(xs, ys))
    for (x0, y0), (x1, y1) in zip(pairs, pairs[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise AssertionError("alphas contain 0 and 1, so 1/2 lies between two of them")


def interpolation_barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    loss_fn: LossFn,
    alphas: Sequence[float] | torch.Tensor = tuple(i / 20 for i in range(21)),
    layers: Sequence[str] | None = None,
    metric_fn: MetricFn | None = None,
) -> BarrierResult:
    """Loss (and ``metric_fn``, e.g. the error) along the line from ``model_a`` to ``model_b``,
    the barrier, and its quadratic prediction ``-1/8 delta^T H delta``; whole model and per layer.

    Args:
        model_a, model_b: networks of one architecture (same parameter names and shapes); neither is
            changed. Floating buffers are interpolated with the parameters.
        loss_fn: ``model -> scalar loss tensor`` on a fixed data set, differentiable in the
            parameters (the Hessian-vector products go through it).
        alphas: coefficients; must contain 0 and 1 (the chord's endpoints), e.g. 21 points.
        layers: module names (see :func:`layer_blocks`) for layer-wise barriers; None = none.
        metric_fn: ``model -> float`` measured along the same lines (not differentiated).
    """
    check_same_architecture(model_a, model_b)
    al = [float(a) for a in (alphas.tolist() if isinstance(alphas, torch.Tensor) else alphas)]
    if 0.0 not in al or 1.0 not in al:
        raise ValueError(f"alphas: must contain 0 and 1 (the endpoints of the chord), got {al}")
    sa = {k: v.detach().clone() for k, v in model_a.state_dict().items()}
    sb = {k: v.detach().clone() for k, v in model_b.state_dict().items()}
    work = copy.deepcopy(model_a)
    whole = _scan(work, sa, sb, None, loss_fn, metric_fn, al)
    result = BarrierResult(**vars(whole))
    for layer in layers or ():
        names = _block_names(work, layer)
        result.layers[layer] = _scan(work, sa, sb, names, loss_fn, metric_fn, al)
    return result


def spawn_children(
    parent: nn.Module,
    batch_fns: Sequence[Callable[[int], object]],
    loss_fn: Callable[[nn.Module, object], tuple[torch.Tensor, dict[str, float]]],
    cfg: TrainConfig,
    run_dirs: Sequence[RunDir | None] | None = None,
    **train_kwargs: object,
) -> list[nn.Module]:
    """Copies of ``parent`` (its state at the spawn step), each trained by ``linearlab.train.train``
    with its own batch order ``batch_fns[i]`` and the same ``cfg``: the children of LMC studies.

    ``run_dirs[i]`` (RunDir or None) keeps child ``i``'s checkpoint so a rerun resumes it.
    Returns the trained children; ``parent`` is unchanged.
    """
    if len(batch_fns) < 2:
        raise ValueError(
            f"batch_fns: expected at least two batch orders (one per child), got {len(batch_fns)}"
        )
    if run_dirs is not None and len(run_dirs) != len(batch_fns):
        raise ValueError(f"run_dirs: expected one per child ({len(batch_fns)}), got {len(run_dirs)}")
    children = []
    for i, batch_fn in enumerate(batch_fns):
        child = copy.deepcopy(parent)
        rd = None if run_dirs is None else run_dirs[i]
        train(child, batch_fn, loss_fn, cfg, run_dir=rd, resume=rd is not None, **train_kwargs)  # type: ignore[arg-type]
        children.append(child)
    return children
