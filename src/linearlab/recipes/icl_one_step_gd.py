"""Recipe ``icl-one-step-gd``: a trained one-layer LSA is one step of (preconditioned) GD.

Mahankali, Hashimoto & Ma (2023): for ``x ~ N(0, I_d)``, ``w ~ N(0, I_d)`` every global minimiser of
the one-layer LSA pre-training loss predicts ``eta* (1/n) sum_i y_i x_i^T x_q`` with
``eta* = n / (n + d + 1 + sigma^2)`` and test MSE ``sigma^2 + d (1 - eta*)``; for ``x ~ N(0, S)`` it is
one preconditioned step with ``Gamma* = ((n+1)/n S + (tr S + sigma^2)/n I)^{-1}``.

Prints, measured vs theory: test MSE, slope and R^2 of the LSA prediction regressed on the plain
one-step-GD prediction, the effective preconditioner ``Gamma`` against ``eta* I`` and, for an
anisotropic covariance, against ``Gamma*``. Each training (``isotropic/``, ``anisotropic/``) keeps
its checkpoint and per-step losses in its own folder, so ``--resume`` continues it.

    linearlab run icl-one-step-gd [--smoke] [--set steps=8000 --set anisotropic=false]
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch

from linearlab.analysis.icl_theory import one_step_mse, optimal_one_step_lr, optimal_preconditioner
from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt
from linearlab.models.icl import LinearSelfAttention
from linearlab.papers import ICL, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.icl import ICLTask, PromptStream
from linearlab.train import TrainConfig, train

NAME = "icl-one-step-gd"


@dataclass
class Config:
    """Everything ``linearlab run icl-one-step-gd`` does; override fields with ``--set name=value``."""

    d: int = 5
    n: int = 20  # context examples per prompt (one more point is the query)
    noise_std: float = 0.0
    steps: int = 4000
    batch_size: int = 1024
    lr: float = 1e-3  # Adam, cosine decay to zero (a decayed rate lets Adam settle on the optimum)
    init_scale: float = 0.002
    eval_prompts: int = 10000
    anisotropic: bool = True  # also train on x ~ N(0, diag(linspace(cov_min, cov_max, d)))
    cov_min: float = 1.0
    cov_max: float = 4.0
    checkpoint_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        require_at_least_one(self, "d", "n", "steps", "batch_size")
        if self.eval_prompts < 2:
            raise ValueError(f"eval_prompts: must be >= 2 (R^2 needs a spread), got {self.eval_prompts}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.noise_std < 0 or self.init_scale < 0:
            raise ValueError(
                f"noise_std, init_scale: must be >= 0, got {self.noise_std} and {self.init_scale}"
            )
        if not 0 < self.cov_min <= self.cov_max:
            raise ValueError(
                f"cov_min, cov_max: expected 0 < cov_min <= cov_max, got {self.cov_min} and {self.cov_max}"
            )
        if self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every: must be >= 0 (0: no checkpoints), got {self.checkpoint_every}"
            )


def _smoke() -> Config:
    return Config(steps=200, batch_size=256, lr=1e-2, eval_prompts=1000)


def _train_config(cfg: Config) -> TrainConfig:
    """Adam (AdamW without decay), cosine to zero, no warm-up, no clipping; every step logged."""
    return TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.0,
        betas=(0.9, 0.999),
        warmup_steps=0,
        min_lr_ratio=0.0,
        grad_clip=0.0,
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


def _train(
    cfg: Config, model: LinearSelfAttention, covariance: torch.Tensor | None, folder: RunDir, tag: str
) -> tuple[list[float], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train ``model`` on fresh prompts, then predict on held-out ones.

    Returns the loss curve, the LSA predictions ``[eval_prompts]``, the plain one-step-GD
    predictions ``(1/n) sum_i y_i x_i^T x_q`` ``[eval_prompts]`` and the query labels ``[eval_prompts]``.
    """
    n = cfg.n
    task = ICLTask(cfg.d, n + 1, cfg.noise_std, covariance=covariance, seed=cfg.seed)

    def loss_fn(m: LinearSelfAttention, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        pred = m.predict(x[:, :n], y[:, :n], x[:, n:])
        return ((pred - y[:, n:]) ** 2).mean(), {}

    train(
        model,
        PromptStream(task, cfg.batch_size),
        loss_fn,
        _train_config(cfg),
        run_dir=folder,
        resume=True,
        desc=f"LSA {tag}",
    )
    # evaluation on fresh prompts from a different seed
    eval_task = ICLTask(cfg.d, n + 1, cfg.noise_std, covariance=covariance, seed=cfg.seed + 10_000)
    b = eval_task.sample(cfg.eval_prompts)
    xc, yc, xq, yq = b.x[:, :n], b.y[:, :n], b.x[:, n:], b.y[:, n:]
    with torch.no_grad():
        pred = model.predict(xc, yc, xq).squeeze(-1)
    gd_plain = ((yc.unsqueeze(-1) * xc).mean(1) * xq.squeeze(1)).sum(-1)  # (1/n) sum_i y_i x_i^T x_q
    return _loss_curve(folder), pred, gd_plain, yq.squeeze(-1)


def _fit_line(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Least-squares slope of y on x through the origin (both predictors are odd in y) and R^2."""
    x, y = x.double(), y.double()
    slope = float((x * y).sum() / (x * x).sum())
    resid = y - slope * x
    r2 = 1.0 - float((resid**2).sum() / ((y - y.mean()) ** 2).sum())
    return slope, r2


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    # the models move tiny tensors: extra intra-op threads only add synchronisation, and on a shared
    # machine their spin-waiting costs several times the work itself
    torch.set_num_threads(1)
    d, noise_var = cfg.d, cfg.noise_std**2
    eta = optimal_one_step_lr(cfg.n, d, noise_var)
    # both models are drawn from the seeded global RNG before any training, in this order, so a
    # resumed run (whose checkpoint restores the RNG) starts them from the same weights
    model = LinearSelfAttention(d, init_scale=cfg.init_scale)
    model_a = LinearSelfAttention(d, init_scale=cfg.init_scale) if cfg.anisotropic else None
    losses, pred, gd_plain, yq = _train(
        cfg, model, None, RunDir.create(NAME, run_dir.path / "isotropic"), "isotropic"
    )
    gamma = model.preconditioner.double()
    diag = torch.diagonal(gamma)
    off = gamma - torch.diag(diag)
    slope, r2 = _fit_line(gd_plain, pred)
    summary: dict[str, Any] = {
        "d": d,
        "n": cfg.n,
        "noise_std": cfg.noise_std,
        "test_mse": float(((pred - yq) ** 2).mean()),
        "theory_mse": one_step_mse(torch.eye(d), eta * torch.eye(d), cfg.n, noise_var),
        "gd_opt_mse_same_prompts": float(((eta * gd_plain - yq) ** 2).mean()),
        "slope_vs_gd": slope,
        "theory_slope": eta,
        "r2_vs_gd": r2,
        "gamma_diag_mean": float(diag.mean()),
        "gamma_offdiag_over_diag": float(off.abs().max() / diag.abs().mean()),
        "gamma_rel_err_vs_eta_I": float((gamma - eta * torch.eye(d)).norm() / (eta * torch.eye(d)).norm()),
        "w_pv_x_part_norm": float(model.w_pv[d, :d].detach().norm()),
        "w_pv_yy": float(model.w_pv[d, d].detach()),
        "final_train_loss": losses[-1],
    }
    figures = [("isotropic", losses, pred, gd_plain, gamma, eta * torch.eye(d), summary["theory_mse"])]
    if model_a is not None:
        cov = torch.diag(torch.linspace(cfg.cov_min, cfg.cov_max, d, dtype=torch.float64))
        target = optimal_preconditioner(cov, cfg.n, noise_var)
        folder = RunDir.create(NAME, run_dir.path / "anisotropic")
        losses_a, pred_a, gd_a, yq_a = _train(cfg, model_a, cov.float(), folder, "anisotropic")
        gamma_a = model_a.preconditioner.double()
        summary.update(
            {
                "aniso_cov_diag": torch.diagonal(cov).tolist(),
                "aniso_cos_gamma_vs_theory": _cos(gamma_a, target),
                "aniso_cos_gamma_vs_identity": _cos(gamma_a, torch.eye(d)),
                "aniso_gamma_rel_err": float((gamma_a - target).norm() / target.norm()),
                "aniso_test_mse": float(((pred_a - yq_a) ** 2).mean()),
                "aniso_theory_mse": one_step_mse(cov, target, cfg.n, noise_var),
                "aniso_gamma_diag": torch.diagonal(gamma_a).tolist(),
                "aniso_theory_diag": torch.diagonal(target).tolist(),
                "aniso_final_train_loss": losses_a[-1],
            }
        )
        figures.append(("anisotropic", losses_a, pred_a, gd_a, gamma_a, target, summary["aniso_theory_mse"]))
    _plot(run_dir, figures)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, figures: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(figures), 3, figsize=(13, 4 * len(figures)), squeeze=False)
    for row, (tag, losses, pred, gd_plain, gamma, target, theory_mse) in zip(axes, figures):
        row[0].semilogy(losses, lw=0.8, label="train MSE")
        row[0].axhline(theory_mse, color="k", ls="--", label=f"theory {theory_mse:.3f}")
        row[0].set(title=f"{tag}: training loss", xlabel="step")
        row[0].legend()
        k = min(2000, len(pred))
        row[1].scatter(gd_plain[:k].numpy(), pred[:k].numpy(), s=3, alpha=0.5)
        row[1].set(
            title=f"{tag}: LSA vs one GD step (eta = 1)", xlabel="(1/n) sum y_i x_i^T x_q", ylabel="LSA"
        )
        both = torch.stack([gamma.float(), target.float()])
        lim = float(both.abs().max())
        row[2].imshow(
            torch.cat([gamma, torch.full((gamma.shape[0], 1), float("nan")), target], 1).numpy(),
            cmap="RdBu",
            vmin=-lim,
            vmax=lim,
        )
        row[2].set(title=f"{tag}: learned Gamma | theory")
    run_dir.save_figure("one_step_gd.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"icl-one-step-gd  d={s['d']} n={s['n']} sigma={s['noise_std']}",
        f"{'quantity':34s} {'measured':>10s} {'theory':>10s}",
        f"{'test MSE (isotropic)':34s} {fmt(s['test_mse']):>10s} {fmt(s['theory_mse']):>10s}",
        f"{'  optimal 1-step GD, same prompts':34s} {fmt(s['gd_opt_mse_same_prompts']):>10s}",
        f"{'slope of LSA on 1-step GD':34s} {fmt(s['slope_vs_gd']):>10s} {fmt(s['theory_slope']):>10s}",
        f"{'R^2 of LSA on 1-step GD':34s} {fmt(s['r2_vs_gd']):>10s} {'1':>10s}",
        f"{'Gamma diagonal mean':34s} {fmt(s['gamma_diag_mean']):>10s} {fmt(s['theory_slope']):>10s}",
        f"{'Gamma max|offdiag| / mean|diag|':34s} {fmt(s['gamma_offdiag_over_diag']):>10s} {'0':>10s}",
        f"{'||Gamma - eta* I|| / ||eta* I||':34s} {fmt(s['gamma_rel_err_vs_eta_I']):>10s} {'0':>10s}",
        f"{'||W_PV[d, :d]|| (x part, last row)':34s} {fmt(s['w_pv_x_part_norm']):>10s} {'0':>10s}",
    ]
    if "aniso_cos_gamma_vs_theory" in s:
        lines += [
            f"anisotropic S = diag({', '.join(fmt(v, 3) for v in s['aniso_cov_diag'])})",
            f"{'test MSE (anisotropic)':34s} {fmt(s['aniso_test_mse']):>10s} {fmt(s['aniso_theory_mse']):>10s}",
            f"{'cos(Gamma, Gamma*)':34s} {fmt(s['aniso_cos_gamma_vs_theory']):>10s} {'1':>10s}",
            f"{'cos(Gamma, I) (plain GD would be 1)':34s} {fmt(s['aniso_cos_gamma_vs_identity']):>10s}",
            f"{'||Gamma - Gamma*|| / ||Gamma*||':34s} {fmt(s['aniso_gamma_rel_err']):>10s} {'0':>10s}",
            f"{'Gamma diagonal':34s} {' '.join(fmt(v, 3) for v in s['aniso_gamma_diag'])}",
            f"{'Gamma* diagonal':34s} {' '.join(fmt(v, 3) for v in s['aniso_theory_diag'])}",
        ]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Measured test MSE, slope and preconditioner error next to the theory's values."""
    keys = {
        "test MSE": "test_mse",
        "theory MSE": "theory_mse",
        "slope on one GD step": "slope_vs_gd",
        "theory slope eta*": "theory_slope",
        "R^2 on one GD step": "r2_vs_gd",
        "|Gamma - eta* I| / |eta* I|": "gamma_rel_err_vs_eta_I",
        "anisotropic cos(Gamma, Gamma*)": "aniso_cos_gamma_vs_theory",
        "anisotropic test MSE": "aniso_test_mse",
        "anisotropic theory MSE": "aniso_theory_mse",
    }
    return {label: summary[key] for label, key in keys.items() if key in summary}


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="one-layer linear self-attention learns one step of (preconditioned) GD (Mahankali et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    resume_may_change=("checkpoint_every",),
)


declare_paper(
    arxiv="2307.03576",
    short="One step of GD",
    title=(
        "One Step of Gradient Descent is Provably the Optimal In-Context Learner with One Layer of "
        "Linear Self-Attention"
    ),
    authors="Mahankali, Hashimoto, Ma",
    area=ICL,
    status="implemented",
    objects=(
        "linearlab.models.icl.LinearSelfAttention",
        "linearlab.analysis.optimal_one_step_lr",
        "linearlab.analysis.one_step_mse",
        "linearlab.analysis.optimal_preconditioner",
        "linearlab.tasks.icl.ICLTask",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.models.icl import LinearSelfAttention\n"
        "y_hat = LinearSelfAttention.from_gd(d=5, lr=0.769).predict(torch.randn(4, 20, 5), torch.randn(4, 20), torch.randn(4, 1, 5))"
    ),
    claim=(
        "Every global minimiser of one-layer linear self-attention on Gaussian linear regression is one "
        "step of GD from zero, eta* = n / (n + d + 1 + sigma^2), preconditioned for anisotropic inputs; "
        "at d=5, n=20, sigma=0 that is eta* = 0.769 and test MSE d(d+1)/(n+d+1) = 1.154."
    ),
)
