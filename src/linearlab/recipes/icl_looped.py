"""Recipe ``icl-looped``: a looped linear transformer runs multi-step GD, with geometric error decay
when the number of examples is only a small multiple of ``d`` (Chen et al. 2024).

Three parts:

(a) construction: one LSA block set by hand (``LoopedLSA.from_gd``) looped ``T`` times against
    ``T`` explicit GD steps on the same prompts (implicit weights read out with ``d`` basis queries);
(b) efficiency: ``d = 10``, ``n = r d`` for several ratios ``r``; the relative error
    ``||w_T - w_OLS|| / ||w_OLS||`` decays geometrically. With the fixed step ``eta = 1/lambda_+``
    (Marchenko-Pastur upper edge ``(1 + sqrt(d/n))^2``) the rate is ``max_i |1 - eta lambda_i|`` per
    prompt, ``~ 1 - 1/kappa`` with ``kappa = ((1 + sqrt(d/n)) / (1 - sqrt(d/n)))^2``; with the
    per-prompt optimal step it is ``(kappa - 1) / (kappa + 1)``;
(c) training: a looped LSA trained with the loss on its last loops (Yang et al. 2023), evaluated at
    more loops than it was trained with, next to GD with its own learned preconditioner.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.models.looped import LoopedLSA, looped_loss
from linearlab.recipes import Recipe
from linearlab.recipes._theory_common import cosine_lr, fmt, progress, report_from_summary, setup
from linearlab.runs import RunDir
from linearlab.tasks.icl import ICLTask
from linearlab.tasks.icl_reference import gd, ols


@dataclass
class Config:
    d: int = 10
    ratios: list[float] = field(default_factory=lambda: [1.5, 2.0, 4.0, 8.0])
    loops: int = 40
    prompts: int = 400
    construction_loops: int = 50
    # (c) trained looped LSA
    train_d: int = 5
    train_n: int = 20
    train_loops: int = 10
    train_last: int = 10  # loss on the last `train_last` loops (all of them by default)
    train_steps: int = 800
    batch_size: int = 256
    lr: float = 2e-3
    eval_loops: int = 30
    eval_prompts: int = 4000
    seed: int = 0


def _smoke(cfg: Config) -> Config:
    return Config(
        ratios=[2.0, 8.0],
        loops=15,
        prompts=32,
        construction_loops=10,
        train_steps=30,
        batch_size=128,
        eval_loops=12,
        eval_prompts=200,
    )


def _looped_weights(model: LoopedLSA, x: torch.Tensor, y: torch.Tensor, loops: int) -> torch.Tensor:
    """Implicit weights after each loop: querying the basis vectors e_1..e_d reads ``w_t`` off
    the predictions. Returns ``[loops, B, d]``."""
    B, _, d = x.shape
    basis = torch.eye(d, dtype=x.dtype).expand(B, d, d)
    with torch.no_grad():
        return model(x, y, basis, n_loops=loops)


def _fitted_rate(err: torch.Tensor) -> torch.Tensor:
    """Per-prompt geometric rate from a log-linear fit over the second half of ``err: [T, B]``."""
    T = err.shape[0]
    t = torch.arange(T // 2, T, dtype=torch.float64)
    le = err[T // 2 :].double().clamp_min(1e-300).log()
    tc = t - t.mean()
    slope = (tc.unsqueeze(1) * (le - le.mean(0))).sum(0) / (tc**2).sum()
    return slope.exp()


def _part_construction(cfg: Config) -> dict[str, float]:
    task = ICLTask(cfg.d, 4 * cfg.d, seed=cfg.seed + 1)
    b = task.sample(min(cfg.prompts, 128))
    lr = 0.5
    model = LoopedLSA.from_gd(cfg.d, lr=lr, n_loops=cfg.construction_loops)
    w_loop = _looped_weights(model, b.x, b.y, cfg.construction_loops)
    w_gd = gd(b.x.double(), b.y.double(), cfg.construction_loops, lr, return_trajectory=True)[1:]
    diff = (w_loop.double() - w_gd).abs()
    return {"construction_max_abs_diff": float(diff.max()), "construction_loops": cfg.construction_loops}


def _part_efficiency(cfg: Config, run_dir: RunDir) -> tuple[list[dict[str, Any]], dict]:
    rows, curves = [], {}
    for i, r in enumerate(cfg.ratios):
        n = int(round(r * cfg.d))
        q = math.sqrt(cfg.d / n)
        lam_plus, lam_minus = (1 + q) ** 2, (1 - q) ** 2
        kappa_mp = lam_plus / lam_minus
        eta = 1.0 / lam_plus
        b = ICLTask(cfg.d, n, seed=cfg.seed + 100 + i).sample(cfg.prompts)
        w_ols = ols(b.x.double(), b.y.double())
        model = LoopedLSA.from_gd(cfg.d, lr=eta, n_loops=cfg.loops)
        w_loop = _looped_weights(model, b.x, b.y, cfg.loops).double()
        err_loop = (w_loop - w_ols).norm(dim=-1) / w_ols.norm(dim=-1)  # [T, B]
        w_gd = gd(b.x.double(), b.y.double(), cfg.loops, eta, return_trajectory=True)[1:]
        err_gd = (w_gd - w_ols).norm(dim=-1) / w_ols.norm(dim=-1)
        eig = torch.linalg.eigvalsh(b.x.double().transpose(1, 2) @ b.x.double() / n)  # [B, d]
        rate_theory = (1 - eta * eig).abs().max(-1).values
        # per-prompt optimal step 2 / (lambda_min + lambda_max): rate (kappa - 1) / (kappa + 1)
        eta_opt = 2.0 / (eig[:, 0] + eig[:, -1])
        w_opt = gd(b.x.double(), b.y.double(), cfg.loops, eta_opt, return_trajectory=True)[1:]
        err_opt = (w_opt - w_ols).norm(dim=-1) / w_ols.norm(dim=-1)
        kappa = eig[:, -1] / eig[:, 0]
        row = {
            "ratio": r,
            "n": n,
            "eta_fixed": eta,
            "kappa_mp": kappa_mp,
            "kappa_median": float(kappa.median()),
            "rate_fixed_measured": float(_fitted_rate(err_loop).median()),
            "rate_fixed_theory_per_prompt": float(rate_theory.median()),
            "rate_fixed_theory_mp": 1 - 1 / kappa_mp,
            "rate_opt_measured": float(_fitted_rate(err_opt).median()),
            "rate_opt_theory_per_prompt": float(((kappa - 1) / (kappa + 1)).median()),
            "rate_opt_theory_mp": (kappa_mp - 1) / (kappa_mp + 1),
            "log10_err_loop": {
                str(t): float(err_loop[t - 1].median().log10())
                for t in (1, 10, 20, cfg.loops)
                if t <= cfg.loops
            },
            "max_abs_diff_loop_vs_gd": float((w_loop - w_gd).abs().max()),
        }
        rows.append(row)
        run_dir.log_metrics({"part": "efficiency", **{k: v for k, v in row.items() if k != "log10_err_loop"}})
        curves[r] = (err_loop.median(1).values, err_gd.median(1).values, err_opt.median(1).values)
    return rows, curves


def _part_trained(cfg: Config, run_dir: RunDir, smoke: bool) -> tuple[dict[str, Any], list[float]]:
    d, n = cfg.train_d, cfg.train_n
    task = ICLTask(d, n + 1, seed=cfg.seed + 7)
    model = LoopedLSA(d, cfg.train_loops)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = []
    for step in progress(range(cfg.train_steps), smoke, "looped LSA"):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, cfg.train_steps, cfg.lr, warmup=cfg.train_steps // 20)
        b = task.sample(cfg.batch_size)
        preds = model(b.x[:, :n], b.y[:, :n], b.x[:, n:])
        loss = looped_loss(preds, b.y[:, n:], last=cfg.train_last)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"looped LSA training diverged at step {step}; lower lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a looped product can blow up early on
        opt.step()
        losses.append(loss.item())
        if step % 100 == 0 or step == cfg.train_steps - 1:
            run_dir.log_metrics({"part": "trained", "step": step, "loss": losses[-1]})
    b = ICLTask(d, n + 1, seed=cfg.seed + 20_000).sample(cfg.eval_prompts)
    xc, yc, xq, yq = b.x[:, :n], b.y[:, :n], b.x[:, n:], b.y[:, n:]
    with torch.no_grad():
        preds = model(xc, yc, xq, n_loops=cfg.eval_loops)
    mse_loop = ((preds - yq) ** 2).mean(dim=(1, 2))
    # in residual form the label channel moves by (1/n) sum_j r_j x_j^T Gamma x_t, i.e. a GD step
    # with lr * P = -Gamma^T: GD with that matrix is what the block computes if its other entries were 0
    gamma = -model.block.preconditioner.double().T
    w_gd = gd(xc.double(), yc.double(), cfg.eval_loops, 1.0, preconditioner=gamma, return_trajectory=True)[1:]
    mse_gd = ((torch.einsum("tbd,bmd->tbm", w_gd, xq.double()) - yq.double()) ** 2).mean(dim=(1, 2))
    summary = {
        "train_d": d,
        "train_n": n,
        "train_loops": cfg.train_loops,
        "trained_mse_by_loop": mse_loop.tolist(),
        "gd_same_gamma_mse_by_loop": mse_gd.tolist(),
        "trained_gamma_diag_mean": float(torch.diagonal(gamma).mean()),
        "trained_gamma_offdiag_over_diag": float(
            (gamma - torch.diag(torch.diagonal(gamma))).abs().max() / torch.diagonal(gamma).abs().mean()
        ),
    }
    return summary, losses


def run(args: argparse.Namespace, run_dir: RunDir) -> dict[str, Any]:
    cfg = setup(args, run_dir, Config(), _smoke)
    smoke = bool(args.smoke)
    summary: dict[str, Any] = {"d": cfg.d, "loops": cfg.loops}
    summary.update(_part_construction(cfg))
    rows, curves = _part_efficiency(cfg, run_dir)
    summary["efficiency"] = rows
    trained, losses = _part_trained(cfg, run_dir, smoke)
    summary.update(trained)
    _plot(run_dir, cfg, curves, trained, losses)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, cfg: Config, curves: dict, trained: dict, losses: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    t = torch.arange(1, cfg.loops + 1)
    for r, (e_loop, e_gd, e_opt) in curves.items():
        (line,) = axes[0].semilogy(t, e_loop, label=f"looped LSA, n={r:g}d")
        axes[0].semilogy(t, e_gd, ls=":", color=line.get_color())
        axes[0].semilogy(t, e_opt, ls="--", color=line.get_color(), alpha=0.6)
    axes[0].set(
        title="median ||w_T - w_OLS|| / ||w_OLS||  (dotted: GD, dashed: GD with per-prompt best step)",
        xlabel="loops T",
    )
    axes[0].title.set_fontsize(8)
    axes[0].legend(fontsize=8)
    tt = torch.arange(1, len(trained["trained_mse_by_loop"]) + 1)
    axes[1].semilogy(tt, trained["trained_mse_by_loop"], "o-", ms=3, label="trained looped LSA")
    axes[1].semilogy(tt, trained["gd_same_gamma_mse_by_loop"], "s--", ms=3, label="GD with learned Gamma")
    axes[1].axvline(trained["train_loops"], color="k", ls=":", label="loops used in training")
    axes[1].set(
        title=f"trained loop, d={trained['train_d']} n={trained['train_n']}",
        xlabel="loops",
        ylabel="test MSE",
    )
    axes[1].legend(fontsize=8)
    axes[2].semilogy(losses, lw=0.8)
    axes[2].set(title="training loss (last loops)", xlabel="step")
    run_dir.save_figure("looped.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"icl-looped  (a) hand-set block looped {s['construction_loops']}x vs explicit GD: "
        f"max |w_loop - w_GD| = {s['construction_max_abs_diff']:.2e} (float32; theory 0)",
        f"(b) d={s['d']}, rates per loop (median over prompts), measured vs theory",
        f"{'n/d':>5s} {'n':>4s} {'kappa(MP)':>9s} {'kappa med':>9s} | {'fixed eta=1/lam+: meas':>22s} "
        f"{'per-prompt':>10s} {'MP 1-1/k':>9s} | {'best eta: meas':>14s} {'(k-1)/(k+1)':>11s} {'MP':>6s} | "
        "log10 err at T=1/10/20/max",
    ]
    for r in s["efficiency"]:
        errs = "/".join(fmt(v, 3) for v in r["log10_err_loop"].values())
        lines.append(
            f"{r['ratio']:>5g} {r['n']:>4d} {fmt(r['kappa_mp'], 3):>9s} {fmt(r['kappa_median'], 3):>9s} | "
            f"{fmt(r['rate_fixed_measured']):>22s} {fmt(r['rate_fixed_theory_per_prompt']):>10s} "
            f"{fmt(r['rate_fixed_theory_mp']):>9s} | {fmt(r['rate_opt_measured']):>14s} "
            f"{fmt(r['rate_opt_theory_per_prompt']):>11s} {fmt(r['rate_opt_theory_mp'], 3):>6s} | {errs}"
        )
    m, g = s["trained_mse_by_loop"], s["gd_same_gamma_mse_by_loop"]
    b = s["train_loops"]
    picks = sorted({1, 2, 5, b, min(2 * b, len(m)), len(m)})
    lines.append(
        f"(c) trained looped LSA d={s['train_d']} n={s['train_n']} trained with {b} loops; Gamma diag mean "
        f"{fmt(s['trained_gamma_diag_mean'])}, max|offdiag|/diag {fmt(s['trained_gamma_offdiag_over_diag'])}"
    )
    lines.append(f"{'loops':>6s} {'looped MSE':>11s} {'GD(Gamma) MSE':>14s}")
    for t in picks:
        lines.append(f"{t:>6d} {fmt(m[t - 1]):>11s} {fmt(g[t - 1]):>14s}")
    return "\n".join(lines)


def _report(run_dir: RunDir) -> str:
    return report_from_summary(run_dir, format_summary)


RECIPE = Recipe(
    name="icl-looped",
    help="looped linear transformer = multi-step GD, geometric decay with n = O(d) (Chen et al.)",
    run=run,
    report=_report,
)
