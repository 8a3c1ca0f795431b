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
    more loops than it was trained with, next to GD with its own learned preconditioner. The
    training keeps its checkpoint and per-step losses in ``trained/``, so ``--resume`` continues it.

    linearlab run icl-looped [--smoke] [--set ratios=1.5,2,4,8 --set train_steps=2000]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.icl_learners import gd, ols
from linearlab.analysis.icl_theory import marchenko_pastur_gd_rates
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt
from linearlab.models.looped import LoopedLSA, looped_loss
from linearlab.papers import ICL, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.icl import ICLTask, PromptStream
from linearlab.train import TrainConfig, train

NAME = "icl-looped"


@dataclass
class Config:
    """Everything ``linearlab run icl-looped`` does; override fields with ``--set name=value``."""

    d: int = 10
    ratios: list[float] = field(default_factory=lambda: [1.5, 2.0, 4.0, 8.0])  # n / d, each > 1
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
    lr: float = 2e-3  # Adam, 5% warm-up then cosine decay to zero
    eval_loops: int = 30
    eval_prompts: int = 4000
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            "d",
            "loops",
            "prompts",
            "construction_loops",
            "train_d",
            "train_n",
            "train_loops",
            "train_steps",
            "batch_size",
            "eval_loops",
            "eval_prompts",
        )
        if not self.ratios or any(int(round(r * self.d)) <= self.d for r in self.ratios):
            raise ValueError(
                f"ratios: expected n/d ratios with round(ratio * d) > d = {self.d} (more examples than "
                f"dimensions), got {self.ratios}"
            )
        if not 1 <= self.train_last <= self.train_loops:
            raise ValueError(f"train_last: expected 1..train_loops={self.train_loops}, got {self.train_last}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every: must be >= 0 (0: no checkpoints), got {self.checkpoint_every}"
            )


def _smoke() -> Config:
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
    the predictions. ``x: [B, n, d]``, ``y: [B, n]`` -> ``[loops, B, d]``."""
    B, _, d = x.shape
    basis = torch.eye(d, dtype=x.dtype).expand(B, d, d)
    with torch.no_grad():
        return model(x, y, basis, n_loops=loops)


def _fitted_rate(err: torch.Tensor) -> torch.Tensor:
    """Per-prompt geometric rate from a log-linear fit over the second half of ``err: [T, B]`` -> ``[B]``."""
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
        mp = marchenko_pastur_gd_rates(cfg.d, n)
        eta = mp["eta_fixed"]
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
            "kappa_mp": mp["kappa_mp"],
            "kappa_median": float(kappa.median()),
            "rate_fixed_measured": float(_fitted_rate(err_loop).median()),
            "rate_fixed_theory_per_prompt": float(rate_theory.median()),
            "rate_fixed_theory_mp": mp["rate_fixed"],
            "rate_opt_measured": float(_fitted_rate(err_opt).median()),
            "rate_opt_theory_per_prompt": float(((kappa - 1) / (kappa + 1)).median()),
            "rate_opt_theory_mp": mp["rate_opt"],
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


def _train_config(cfg: Config) -> TrainConfig:
    """Adam (AdamW without decay), 5% warm-up, cosine to zero, clipping at 1 (a looped product can
    blow up early on); every step logged."""
    return TrainConfig(
        steps=cfg.train_steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.0,
        betas=(0.9, 0.999),
        warmup_steps=cfg.train_steps // 20,
        min_lr_ratio=0.0,
        grad_clip=1.0,
        log_every=1,
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        progress=sys.stderr.isatty(),
    )


def _loss_curve(folder: RunDir) -> list[float]:
    """Every step's training loss from ``folder``'s metrics (steps redone after a resume are logged
    twice, with the same value: the later record wins)."""
    by_step = {r["step"]: r["loss"] for r in folder.read_metrics() if "loss" in r}
    return [by_step[s] for s in sorted(by_step)]


def _part_trained(cfg: Config, run_dir: RunDir) -> tuple[dict[str, Any], list[float]]:
    d, n = cfg.train_d, cfg.train_n
    task = ICLTask(d, n + 1, seed=cfg.seed + 7)
    # drawn from the global RNG after parts (a) and (b) (their hand-set blocks draw too), as before
    # the recipe moved onto the shared training loop
    model = LoopedLSA(d, cfg.train_loops)

    def loss_fn(m: LoopedLSA, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        return looped_loss(m(x[:, :n], y[:, :n], x[:, n:]), y[:, n:], last=cfg.train_last), {}

    folder = RunDir.create(NAME, run_dir.path / "trained")
    train(
        model,
        PromptStream(task, cfg.batch_size),
        loss_fn,
        _train_config(cfg),
        run_dir=folder,
        resume=True,
        desc="looped LSA",
    )
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
    losses = _loss_curve(folder)
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
        "final_train_loss": losses[-1],
    }
    return summary, losses


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    # the models move tiny tensors: extra intra-op threads only add synchronisation, and on a shared
    # machine their spin-waiting costs several times the work itself
    torch.set_num_threads(1)
    summary: dict[str, Any] = {"d": cfg.d, "loops": cfg.loops}
    summary.update(_part_construction(cfg))
    rows, curves = _part_efficiency(cfg, run_dir)
    summary["efficiency"] = rows
    trained, losses = _part_trained(cfg, run_dir)
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
    picks = sorted({1, 2, 5, b, min(2 * b, len(m)), len(m)} & set(range(1, len(m) + 1)))
    lines.append(
        f"(c) trained looped LSA d={s['train_d']} n={s['train_n']} trained with {b} loops; Gamma diag mean "
        f"{fmt(s['trained_gamma_diag_mean'])}, max|offdiag|/diag {fmt(s['trained_gamma_offdiag_over_diag'])}"
    )
    lines.append(f"{'loops':>6s} {'looped MSE':>11s} {'GD(Gamma) MSE':>14s}")
    for t in picks:
        lines.append(f"{t:>6d} {fmt(m[t - 1]):>11s} {fmt(g[t - 1]):>14s}")
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The hand-set loop's distance to GD and the error-decay rates per loop against theory."""
    out: dict[str, float] = {"loop vs GD max |w diff|": summary["construction_max_abs_diff"]}
    for r in summary.get("efficiency", []):
        n = f"n={r['ratio']:g}d"
        out[f"{n} rate fixed step"] = r["rate_fixed_measured"]
        out[f"{n} rate fixed step theory"] = r["rate_fixed_theory_per_prompt"]
        out[f"{n} rate best step"] = r["rate_opt_measured"]
        out[f"{n} rate best step theory"] = r["rate_opt_theory_per_prompt"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="looped linear transformer = multi-step GD, geometric decay with n = O(d) (Chen et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    resume_may_change=("checkpoint_every",),
)


declare_paper(
    arxiv="2410.11268",
    short="Looped transformers as multi-step GD",
    title=(
        "Bypassing the Exponential Dependency: Looped Transformers Efficiently Learn In-context by "
        "Multi-step Gradient Descent"
    ),
    authors="Chen, Li, Liang, Shi, Song",
    area=ICL,
    status="implemented",
    objects=(
        "linearlab.models.looped.LoopedLSA",
        "linearlab.models.looped.looped_loss",
        "linearlab.analysis.marchenko_pastur_gd_rates",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.models.looped import LoopedLSA\n"
        "preds = LoopedLSA.from_gd(d=10, lr=0.5, n_loops=20)(torch.randn(4, 40, 10), torch.randn(4, 40), torch.randn(4, 1, 10))"
    ),
    claim=(
        "A linear looped transformer implements T steps of gradient descent in context and reaches "
        "small error when the data have a constant condition number, e.g. n = O(d) examples, where "
        "earlier analyses needed n = exp(Omega(T)) (abstract; the paper's experimental settings are "
        "not in our notes)."
    ),
)
