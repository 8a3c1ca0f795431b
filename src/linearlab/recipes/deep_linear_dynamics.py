"""Recipe ``deep-linear-dynamics``: the exact learning dynamics of deep linear networks (Saxe et al. 2013).

Whitened inputs, teacher ``T = U diag(s) V^T``, full-batch GD with step ``lr`` (so ``tau = 1/lr`` steps).

1. Two layers, decoupled start ``u0``: each mode follows ``u(t) = s e^(2st/tau) / (e^(2st/tau) - 1 + s/u0)``;
   the half time ``t_1/2 = tau/(2s) ln(s/u0 - 1)`` is linear in ``(1/s) ln(s/u0 - 1)`` with slope ``tau/2``.
   Repeated from a small random start, where modes are only approximately decoupled.
2. Decoupled start at depth ``L`` (step ``lr0 / L``): measured half times against
   ``(tau/L) int du / (u^(2-2/L) (s-u))``.
3. Depth sweep (step ``lr0 / L``, full-rank teacher): steps until the loss falls below
   ``criterion * 1/2 ||T||^2``. Theory: a pretrained-like start (orthogonal layers aligned with the
   teacher, every mode at strength ~1) learns in a depth-independent time, since for ``u = O(1)`` the
   factor ``u^(2-2/L)`` hardly depends on ``L``; a small random start slows down sharply with depth
   (the product starts at ~ scale^L, so the plateau lengthens). Random orthogonal and scaled Gaussian
   starts are shown too.

Every network is trained by ``linearlab.train.train`` with plain SGD at a constant step on the
full batch, in its own folder (``two_layer/``, ``deep/``, ``sweep/``) that keeps its checkpoint and
the per-step loss and mode strengths, so ``--resume`` continues an interrupted run.

    linearlab run deep-linear-dynamics [--smoke] [--set deep_depths=2,4,8 --set sweep_seeds=4]
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.deep_linear_theory import (
    deep_half_time,
    half_time,
    half_time_index,
    mode_strengths,
    strength_closed_form,
    teacher,
)
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt
from linearlab.models.deep_linear import INITS, DeepLinearNet
from linearlab.papers import ICL, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

NAME = "deep-linear-dynamics"
SWEEP_INITS = ("decoupled", *INITS)


@dataclass
class Config:
    """Everything ``linearlab run deep-linear-dynamics`` does; override fields with ``--set name=value``."""

    dim: int = 8
    singular_values: list[float] = field(default_factory=lambda: [4.0, 2.0, 1.0, 0.5])
    lr: float = 0.01
    steps: int = 1500
    u0: float = 1e-4
    small_std: float = 0.01  # entry std of the two-layer small random start
    deep_depths: list[int] = field(default_factory=lambda: [2, 3, 4, 6, 8])
    deep_u0: float = 0.05
    deep_lr0: float = 0.05
    deep_steps: int = 1500
    # "decoupled" = pretrained-like: orthogonal layers of gain `scale` aligned with the teacher
    sweep_inits: list[str] = field(default_factory=lambda: ["decoupled", "orthogonal", "gaussian", "small"])
    sweep_scales: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 0.1])
    # full-rank teacher for the sweep (no null modes, whose decay is slow for deep nets and would
    # dominate the time); empty = linspace(0.5, 4, dim)
    sweep_singular_values: list[float] = field(default_factory=list)
    sweep_steps: int = 2000
    sweep_seeds: int = 2
    criterion: float = 0.01
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(self, "dim", "steps", "deep_steps", "sweep_steps", "sweep_seeds")
        for name in ("singular_values", "sweep_singular_values"):
            values = getattr(self, name)
            if len(values) > self.dim or any(v <= 0 for v in values):
                raise ValueError(f"{name}: expected at most dim={self.dim} positive values, got {values}")
        if not self.singular_values:
            raise ValueError("singular_values: expected at least one positive value, got []")
        half = min(self.singular_values) / 2
        for name in ("u0", "deep_u0"):
            if not 0 < getattr(self, name) < half:
                raise ValueError(
                    f"{name}: expected 0 < {name} < min(singular_values)/2 = {half} (the theory's half "
                    f"time starts below half strength), got {getattr(self, name)}"
                )
        for name in ("lr", "deep_lr0", "small_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not self.deep_depths or any(L < 1 for L in self.deep_depths):
            raise ValueError(f"deep_depths: expected depths >= 1, got {self.deep_depths}")
        unknown = [i for i in self.sweep_inits if i not in SWEEP_INITS]
        if unknown or not self.sweep_inits:
            raise ValueError(f"sweep_inits: expected names from {list(SWEEP_INITS)}, got {self.sweep_inits}")
        if len(self.sweep_inits) != len(self.sweep_scales) or any(sc <= 0 for sc in self.sweep_scales):
            raise ValueError(
                f"sweep_scales: expected one positive scale per init ({len(self.sweep_inits)}), "
                f"got {self.sweep_scales}"
            )
        if not 0 < self.criterion < 1:
            raise ValueError(f"criterion: expected a loss fraction in (0, 1), got {self.criterion}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every: must be >= 0 (0: no checkpoints), got {self.checkpoint_every}"
            )


def _smoke() -> Config:
    return Config(steps=900, deep_depths=[2, 4], deep_steps=400, sweep_steps=300, sweep_seeds=1)


def full_batch_gd(
    net: DeepLinearNet,
    target: torch.Tensor,
    lr: float,
    steps: int,
    folder: RunDir,
    modes: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    checkpoint_every: int = 500,
    desc: str = "deep linear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-batch GD ``W <- W - lr grad`` on ``1/2 ||target - net.product()||_F^2`` (whitened inputs)
    for ``steps`` updates, through ``linearlab.train.train`` (plain SGD at a constant step), resumable
    from ``folder``.

    Returns the losses ``[steps + 1]`` and, with ``modes = (U, V, r)``, the strengths of the first ``r``
    modes ``[steps + 1, r]`` (else ``[steps + 1, 0]``); index ``t`` is the state after ``t`` updates
    (0: the start). Each step's values are logged to ``folder/metrics.jsonl`` (JSON floats round-trip
    exactly) and read back, so a resumed training returns the whole trajectory.
    """
    target = target.double()
    names = [] if modes is None else [f"mode{i}" for i in range(modes[2])]

    def measure(p: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        loss = 0.5 * ((target - p) ** 2).sum()
        return loss, ([] if modes is None else mode_strengths(p, *modes).tolist())

    def loss_fn(m: DeepLinearNet, _batch: None) -> tuple[torch.Tensor, dict[str, float]]:
        # measured before this step's update: the loop logs it as finished step t + 1, index t here
        loss, strengths = measure(m.product())
        return loss, dict(zip(names, strengths))

    cfg = TrainConfig(
        steps=steps,
        batch_size=1,
        lr=lr,
        optimizer="sgd",
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        warmup_steps=0,
        grad_clip=0.0,
        log_every=1,
        checkpoint_every=checkpoint_every,
        progress=sys.stderr.isatty(),
    )
    train(net, lambda step: None, loss_fn, cfg, run_dir=folder, resume=True, desc=desc)
    by_step = {r["step"]: r for r in folder.read_metrics() if "loss" in r}
    missing = [t for t in range(1, steps + 1) if t not in by_step]
    if missing:
        raise ValueError(
            f"{folder.path}/metrics.jsonl: no record of step(s) {missing[:5]}; delete the folder to redo "
            "this training"
        )
    with torch.no_grad():
        last_loss, last_strengths = measure(net.product())
    losses = [by_step[t]["loss"] for t in range(1, steps + 1)] + [float(last_loss)]
    strengths = [[by_step[t][k] for k in names] for t in range(1, steps + 1)] + [last_strengths]
    return (
        torch.tensor(losses, dtype=torch.float64),
        torch.tensor(strengths, dtype=torch.float64).reshape(steps + 1, len(names)),
    )


def _two_layer(
    cfg: Config, T: torch.Tensor, U: torch.Tensor, V: torch.Tensor, run_dir: RunDir
) -> dict[str, Any]:
    s, r, tau = cfg.singular_values, len(cfg.singular_values), 1.0 / cfg.lr
    net = DeepLinearNet.decoupled(U, V, depth=2, u0=cfg.u0, seed=cfg.seed)
    _, traj = full_batch_gd(
        net,
        T,
        cfg.lr,
        cfg.steps,
        _folder(run_dir, "two_layer", "decoupled"),
        (U, V, r),
        cfg.checkpoint_every,
        "2 layers, decoupled",
    )
    rnd = DeepLinearNet([cfg.dim] * 3, init="small", scale=cfg.small_std, seed=cfg.seed + 1)
    _, traj_r = full_batch_gd(
        rnd,
        T,
        cfg.lr,
        cfg.steps,
        _folder(run_dir, "two_layer", "small_random"),
        (U, V, r),
        cfg.checkpoint_every,
        "2 layers, small random",
    )
    t = torch.arange(cfg.steps + 1, dtype=torch.float64)
    modes = []
    for i, si in enumerate(s):
        theory = half_time(si, cfg.u0, tau)
        measured = half_time_index(traj[:, i], si)
        closed = strength_closed_form(t, si, cfg.u0, tau)
        u0_r = abs(float(traj_r[0, i]))
        modes.append(
            {
                "s": si,
                "t_half_measured": measured,
                "t_half_theory": theory,
                "rel_err": (measured - theory) / theory,
                "max_abs_dev_over_s": float((traj[:, i] - closed).abs().max() / si),
                "random_t_half_measured": half_time_index(traj_r[:, i], si),
                "random_u0_effective": u0_r,
                "random_t_half_theory_u0_eff": half_time(si, u0_r, tau) if 0 < u0_r < si / 2 else math.nan,
            }
        )
    # half time against (1/s) ln(s/u0 - 1): slope tau/2 through the origin
    xs = torch.tensor([math.log(si / cfg.u0 - 1) / si for si in s], dtype=torch.float64)
    ys = torch.tensor([m["t_half_measured"] for m in modes], dtype=torch.float64)
    slope = float((xs * ys).sum() / (xs * xs).sum())
    return {
        "modes": modes,
        "slope_measured": slope,
        "slope_theory": tau / 2,
        "traj": traj,
        "traj_random": traj_r,
    }


def _folder(run_dir: RunDir, part: str, name: str) -> RunDir:
    return RunDir.create(NAME, run_dir.path / part / name)


def _deep_decoupled(
    cfg: Config, T: torch.Tensor, U: torch.Tensor, V: torch.Tensor, run_dir: RunDir
) -> list[dict]:
    s, r = cfg.singular_values, len(cfg.singular_values)
    rows = []
    for depth in cfg.deep_depths:
        lr = cfg.deep_lr0 / depth
        net = DeepLinearNet.decoupled(U, V, depth=depth, u0=cfg.deep_u0, seed=cfg.seed)
        _, traj = full_batch_gd(
            net,
            T,
            lr,
            cfg.deep_steps,
            _folder(run_dir, "deep", f"L{depth}"),
            (U, V, r),
            cfg.checkpoint_every,
            f"decoupled L={depth}",
        )
        meas = [half_time_index(traj[:, i], si) for i, si in enumerate(s)]
        theo = [deep_half_time(si, cfg.deep_u0, 1.0 / lr, depth) for si in s]
        errs = [(m - t) / t for m, t in zip(meas, theo) if math.isfinite(m)]
        rows.append(
            {
                "depth": depth,
                "t_half_measured": meas,
                "t_half_theory": theo,
                "max_abs_rel_err": max((abs(e) for e in errs), default=math.nan),
            }
        )
    return rows


def _sweep(cfg: Config, run_dir: RunDir) -> list[dict]:
    sv = cfg.sweep_singular_values or torch.linspace(0.5, 4.0, cfg.dim).tolist()
    T, U, V = teacher(cfg.dim, cfg.dim, sv, seed=cfg.seed + 1)
    target_loss = cfg.criterion * 0.5 * float((T**2).sum())
    rows = []
    jobs = [(i, sc, L) for i, sc in zip(cfg.sweep_inits, cfg.sweep_scales) for L in cfg.deep_depths]
    for init, scale, depth in jobs:
        times = []
        for seed in range(cfg.sweep_seeds):
            if init == "decoupled":
                net = DeepLinearNet.decoupled(U, V, depth=depth, u0=scale**depth, seed=cfg.seed + 100 + seed)
            else:
                net = DeepLinearNet(
                    [cfg.dim] * (depth + 1), init=init, scale=scale, seed=cfg.seed + 100 + seed
                )
            folder = _folder(run_dir, "sweep", f"{init}{scale:g}-L{depth}-seed{seed}")
            losses, _ = full_batch_gd(
                net,
                T,
                cfg.deep_lr0 / depth,
                cfg.sweep_steps,
                folder,
                checkpoint_every=cfg.checkpoint_every,
                desc=f"sweep {init} L={depth}",
            )
            hit = torch.nonzero(losses <= target_loss)
            times.append(float(hit[0]) if len(hit) else math.inf)
        row = {
            "init": init,
            "scale": scale,
            "depth": depth,
            "steps_to_criterion": times,
            "median": float(torch.tensor(times).median()),
        }
        rows.append(row)
        run_dir.log_metrics({"part": "sweep", **row})
    return rows


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    # the nets are 8x8 matrices: extra intra-op threads only add synchronisation, and on a shared
    # machine their spin-waiting costs several times the work itself
    torch.set_num_threads(1)
    T, U, V = teacher(cfg.dim, cfg.dim, cfg.singular_values, seed=cfg.seed)
    two = _two_layer(cfg, T, U, V, run_dir)
    deep = _deep_decoupled(cfg, T, U, V, run_dir)
    sweep = _sweep(cfg, run_dir)
    summary: dict[str, Any] = {
        "dim": cfg.dim,
        "singular_values": cfg.singular_values,
        "lr": cfg.lr,
        "u0": cfg.u0,
        "two_layer": {k: v for k, v in two.items() if not k.startswith("traj")},
        "deep_decoupled": deep,
        "deep_u0": cfg.deep_u0,
        "deep_lr0": cfg.deep_lr0,
        "sweep": sweep,
        "sweep_steps": cfg.sweep_steps,
        "sweep_singular_values": cfg.sweep_singular_values or torch.linspace(0.5, 4.0, cfg.dim).tolist(),
        "criterion": cfg.criterion,
    }
    # depth dependence of each init: time at the deepest net over time at the shallowest
    ratios = {}
    for init in cfg.sweep_inits:
        med = [r["median"] for r in sweep if r["init"] == init]
        ratios[init] = med[-1] / med[0] if med and med[0] > 0 else math.nan
    summary["sweep_depth_ratio"] = ratios
    _plot(run_dir, cfg, two, deep, sweep)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, cfg: Config, two: dict, deep: list, sweep: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.5))
    t = torch.arange(two["traj"].shape[0], dtype=torch.float64)
    for i, si in enumerate(cfg.singular_values):
        (line,) = axes[0].plot(t, two["traj"][:, i], lw=2, label=f"s={si:g} decoupled")
        axes[0].plot(t, strength_closed_form(t, si, cfg.u0, 1 / cfg.lr), "k:", lw=1)
        axes[0].plot(t, two["traj_random"][:, i], "--", color=line.get_color(), lw=1)
    axes[0].set(
        title="mode strength u(t): GD (solid), closed form (dotted), small random (dashed)", xlabel="step"
    )
    axes[0].title.set_fontsize(8)
    axes[0].legend(fontsize=7)
    xs = [math.log(m["s"] / cfg.u0 - 1) / m["s"] for m in two["modes"]]
    axes[1].plot(xs, [m["t_half_measured"] for m in two["modes"]], "o", label="measured")
    axes[1].plot([0, max(xs)], [0, max(xs) / (2 * cfg.lr)], "k--", label="tau/2 * x")
    axes[1].set(title="half time vs (1/s) ln(s/u0 - 1)", xlabel="(1/s) ln(s/u0 - 1)", ylabel="steps")
    axes[1].legend()
    for i, si in enumerate(cfg.singular_values):
        (line,) = axes[2].plot(
            [r["depth"] for r in deep], [r["t_half_measured"][i] for r in deep], "o", label=f"s={si:g}"
        )
        axes[2].plot(
            [r["depth"] for r in deep], [r["t_half_theory"][i] for r in deep], "-", color=line.get_color()
        )
    axes[2].set(
        title=f"decoupled start u0={cfg.deep_u0}, lr={cfg.deep_lr0}/L: half time (line: theory)",
        xlabel="depth L",
        yscale="log",
    )
    axes[2].title.set_fontsize(8)
    axes[2].legend(fontsize=7)
    for init in cfg.sweep_inits:
        rows = [r for r in sweep if r["init"] == init]
        med = [r["median"] if math.isfinite(r["median"]) else float("nan") for r in rows]
        axes[3].plot([r["depth"] for r in rows], med, "o-", label=f"{init} (scale {rows[0]['scale']:g})")
    axes[3].set(
        title=f"steps to loss < {cfg.criterion} * |T|^2/2, lr={cfg.deep_lr0}/L (missing: never)",
        xlabel="depth L",
        yscale="log",
    )
    axes[3].title.set_fontsize(8)
    axes[3].legend(fontsize=7)
    run_dir.save_figure("deep_linear_dynamics.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    two = s["two_layer"]
    lines = [
        f"deep-linear-dynamics  dim={s['dim']} s={s['singular_values']} lr={s['lr']} (tau={1 / s['lr']:g} steps)",
        f"(1) two layers, decoupled u0={s['u0']:g}: time to half strength",
        f"{'s':>5s} {'measured':>9s} {'theory':>9s} {'rel err':>8s} {'max|u-u_th|/s':>13s} | "
        f"{'small random: meas':>18s} {'th(u0 eff)':>10s}",
    ]
    for m in two["modes"]:
        lines.append(
            f"{m['s']:>5g} {fmt(m['t_half_measured'], 5):>9s} {fmt(m['t_half_theory'], 5):>9s} "
            f"{m['rel_err'] * 100:>7.2f}% {fmt(m['max_abs_dev_over_s'], 3):>13s} | "
            f"{fmt(m['random_t_half_measured'], 5):>18s} {fmt(m['random_t_half_theory_u0_eff'], 5):>10s}"
        )
    err = (two["slope_measured"] - two["slope_theory"]) / two["slope_theory"] * 100
    lines.append(
        f"t_1/2 vs (1/s) ln(s/u0-1): slope {fmt(two['slope_measured'], 5)} vs tau/2 = {fmt(two['slope_theory'], 5)}"
        f" ({err:+.2f}%)"
    )
    lines.append(f"(2) decoupled start u0={s['deep_u0']}, lr={s['deep_lr0']}/L: half times measured / theory")
    for r in s["deep_decoupled"]:
        pairs = "  ".join(
            f"{fmt(m, 4)}/{fmt(t, 4)}" for m, t in zip(r["t_half_measured"], r["t_half_theory"])
        )
        lines.append(f"  L={r['depth']:<2d} {pairs}   max rel err {fmt(r['max_abs_rel_err'] * 100, 3)}%")
    lines.append(
        f"(3) steps to loss < {s['criterion']} * |T|^2/2 (median over seeds; inf = not within "
        f"{s['sweep_steps']} steps), lr = {s['deep_lr0']}/L"
    )
    depths = sorted({r["depth"] for r in s["sweep"]})
    lines.append(f"{'init':>18s} " + " ".join(f"{'L=' + str(d):>7s}" for d in depths) + "   t(Lmax)/t(Lmin)")
    for init, ratio in s["sweep_depth_ratio"].items():
        rows = [r for r in s["sweep"] if r["init"] == init]
        label = f"{init}({rows[0]['scale']:g})"
        lines.append(
            f"{label:>18s} " + " ".join(f"{fmt(r['median'], 4):>7s}" for r in rows) + f"   {fmt(ratio, 3)}"
        )
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Relative errors of the measured half times against the closed forms, and the depth ratios."""
    two = summary["two_layer"]
    out: dict[str, float] = {f"two-layer t1/2 rel err s={m['s']:g}": m["rel_err"] for m in two["modes"]}
    out["two-layer slope rel err"] = (two["slope_measured"] - two["slope_theory"]) / two["slope_theory"]
    for r in summary["deep_decoupled"]:
        out[f"depth {r['depth']} max t1/2 rel err"] = r["max_abs_rel_err"]
    for init, ratio in summary["sweep_depth_ratio"].items():
        out[f"{init} steps ratio deepest/shallowest"] = ratio
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="deep linear nets: sigmoidal mode learning, t_1/2 ~ 1/s, depth (in)dependence (Saxe et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    resume_may_change=("checkpoint_every",),
)


declare_paper(
    arxiv="1312.6120",
    short="Deep linear dynamics",
    title="Exact solutions to the nonlinear dynamics of learning in deep linear neural networks",
    authors="Saxe, McClelland, Ganguli",
    venue="ICLR 2014",
    area=ICL,
    status="implemented",
    objects=(
        "linearlab.models.deep_linear.DeepLinearNet",
        "linearlab.analysis.teacher",
        "linearlab.analysis.strength_closed_form",
        "linearlab.analysis.half_time",
        "linearlab.analysis.deep_half_time",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.analysis import half_time, strength_closed_form\n"
        "u = strength_closed_form(torch.arange(1000.0), s=2.0, u0=1e-3, tau=100.0)  # sigmoid; half_time(2.0, 1e-3, 100.0)"
    ),
    claim=(
        "From a small decoupled start each mode's strength follows u(t) = s e^(2st/tau) / (e^(2st/tau) "
        "- 1 + s/u0), a sigmoid with a plateau; learning time scales as (1/s) ln(s/u0), strongest modes "
        "first; with orthogonal or pretrained-like starts deep nets learn in a depth-independent time."
    ),
)
