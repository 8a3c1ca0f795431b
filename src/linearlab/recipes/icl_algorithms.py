"""Recipe ``icl-algorithms``: which learning algorithm does a trained transformer run in context?

Akyürek et al. (2022). A small pre-norm transformer is trained on ``d = 5`` linear regression prompts
(noiseless, and with label noise). On fresh prompts, for every number ``k`` of in-context examples, it
is compared with reference learners run on the same prompts:

- squared prediction difference ``SPD = E (f_model(x_q) - f_alg(x_q))^2 / d``;
- implicit linear weight difference ``ILWD = E ||w_model - w_alg||^2 / d``, where ``w_model`` is the
  least-squares fit of the model's predictions on ``2 d`` probe queries after the same context;

against OLS (min-norm), ridge with ``lam = sigma^2`` (the Bayes-optimal posterior mean; OLS when
noiseless), one step of GD with the optimal step and several steps of GD. Theory: the noiseless OLS
error is ``(d - k)/d`` for ``k < d`` and 0 from ``k = d``; with noise OLS has
``sigma^2 (1 + d / (k - d - 1))`` for ``k > d + 1``. Finally, linear probes read ``X^T Y`` and
``w_OLS`` off each layer's hidden state at the last query (R^2 on held-out prompts). Each training
(``sigma<noise>/``) keeps its checkpoint and per-step losses in its own folder, so ``--resume``
continues it.

    linearlab run icl-algorithms [--smoke] [--set mixer=gla --set mixer_kwargs='{"num_heads": 2}']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from linearlab.analysis.icl_learners import bayes_ridge, gd, ols, predict
from linearlab.analysis.icl_theory import ols_error_by_k, optimal_one_step_lr
from linearlab.analysis.probes import probe_r2
from linearlab.config import require_at_least_one
from linearlab.io import atomic_save_safetensors
from linearlab.lab.parallel import default_workers, run_jobs, step_done
from linearlab.lab.tables import fmt
from linearlab.models.icl import ICLTransformer, interleave
from linearlab.papers import ICL, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.tasks.icl import ICLTask, PromptStream
from linearlab.train import TrainConfig, train

NAME = "icl-algorithms"
REFERENCES = ("ols", "ridge", "gd1", "gd_multi")


@dataclass
class Config:
    """Everything ``linearlab run icl-algorithms`` does; override fields with ``--set name=value``."""

    d: int = 5
    n_points: int = 11
    noise_stds: list[float] = field(default_factory=lambda: [0.0, 0.5])
    d_model: int = 64
    n_layers: int = 3
    num_heads: int = 2
    mixer: str = "builtin"  # GPT-2's causal softmax attention, or any registered mixer
    mixer_kwargs: dict = field(default_factory=dict)
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3  # Adam, 10% warm-up then cosine decay to zero, clipping at 1
    gd_steps: int = 5
    eval_prompts: int = 1000
    ilwd_prompts: int = 200
    probe_train: int = 2000
    probe_test: int = 1000
    probe_lam: float = 1e-3
    checkpoint_every: int = 100
    seed: int = 0
    workers: int = 0  # processes training noise levels side by side (0: min(2, cores))

    def __post_init__(self) -> None:
        require_at_least_one(
            self,
            "d",
            "n_points",
            "d_model",
            "n_layers",
            "num_heads",
            "steps",
            "batch_size",
            "eval_prompts",
            "ilwd_prompts",
        )
        if self.gd_steps < 0:
            raise ValueError(f"gd_steps: must be >= 0, got {self.gd_steps}")
        if self.probe_train < 2 or self.probe_test < 2:
            raise ValueError(
                f"probe_train, probe_test: must be >= 2 (R^2 needs a spread), got {self.probe_train} and {self.probe_test}"
            )
        if not self.noise_stds or any(s < 0 for s in self.noise_stds):
            raise ValueError(f"noise_stds: expected values >= 0, got {self.noise_stds}")
        if not self.lr > 0 or self.probe_lam < 0:
            raise ValueError(
                f"lr, probe_lam: expected lr > 0 and probe_lam >= 0, got {self.lr} and {self.probe_lam}"
            )
        if not isinstance(self.mixer_kwargs, dict):
            raise ValueError(f"mixer_kwargs: expected a JSON object, got {self.mixer_kwargs!r}")
        if self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every: must be >= 0 (0: no checkpoints), got {self.checkpoint_every}"
            )
        if self.workers < 0:
            raise ValueError(f"workers: must be >= 0 (0: min(2, cores)), got {self.workers}")


def _smoke() -> Config:
    return Config(
        n_points=8,
        d_model=16,
        n_layers=2,
        steps=20,
        eval_prompts=64,
        ilwd_prompts=8,
        probe_train=100,
        probe_test=50,
    )


def _faithful() -> Config:
    """The paper's training length (notes: 8-10k steps at lr 1e-3) and evaluation on 2000 prompts."""
    return Config(steps=10_000, eval_prompts=2000)


def _references(x: torch.Tensor, y: torch.Tensor, noise_var: float, gd_steps: int) -> dict[str, torch.Tensor]:
    """Weights of each reference learner from the context ``x: [B, k, d]``, ``y: [B, k]``: ``[B, d]`` each."""
    B, k, d = x.shape
    if k == 0:
        zero = x.new_zeros(B, d).double()
        return {name: zero for name in REFERENCES}
    xd, yd = x.double(), y.double()
    # GD step size 1 / lambda_max(X^T X / k) per prompt: the largest step that is monotone for every prompt
    lam_max = torch.linalg.eigvalsh(xd.transpose(1, 2) @ xd / k)[:, -1]
    return {
        "ols": ols(xd, yd),
        "ridge": bayes_ridge(xd, yd, noise_var),
        "gd1": gd(xd, yd, 1, optimal_one_step_lr(k, d, noise_var)),
        "gd_multi": gd(xd, yd, gd_steps, 1.0 / lam_max),
    }


def _model(cfg: Config) -> ICLTransformer:
    return ICLTransformer(
        cfg.d,
        cfg.d_model,
        cfg.n_layers,
        cfg.num_heads,
        cfg.mixer,
        max_points=cfg.n_points,
        mixer_kwargs=cfg.mixer_kwargs or None,
    )


def _train_config(cfg: Config) -> TrainConfig:
    """Adam (AdamW without decay), 10% warm-up, cosine to zero, clipping at 1; every step logged."""
    return TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer="adamw",
        weight_decay=0.0,
        betas=(0.9, 0.999),
        warmup_steps=cfg.steps // 10,
        min_lr_ratio=0.0,
        grad_clip=1.0,
        log_every=1,
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        progress=False,  # run_jobs shows one bar over every noise level's steps
    )


def _loss_curve(folder: RunDir) -> list[float]:
    """Every step's training loss from ``folder``'s metrics (steps redone after a resume are logged
    twice, with the same value: the later record wins)."""
    by_step = {r["step"]: r["loss"] for r in folder.read_metrics() if "loss" in r}
    return [by_step[s] for s in sorted(by_step)]


def _train(cfg: Config, model: ICLTransformer, noise_std: float, folder: RunDir) -> list[float]:
    """Train ``model`` on fresh prompts (every prefix of a prompt is scored); returns the loss curve."""
    task = ICLTask(cfg.d, cfg.n_points, noise_std, seed=cfg.seed)

    def loss_fn(m: ICLTransformer, batch: tuple[torch.Tensor, torch.Tensor]):
        x, y = batch
        return ((m(x, y) - y) ** 2).mean(), {}

    train(
        model,
        PromptStream(task, cfg.batch_size),
        loss_fn,
        _train_config(cfg),
        run_dir=folder,
        resume=True,
        desc=f"transformer sigma={noise_std}",
        on_step=step_done,
    )
    return _loss_curve(folder)


@torch.no_grad()
def _evaluate(cfg: Config, model: ICLTransformer, noise_std: float) -> dict[str, Any]:
    d, N, noise_var = cfg.d, cfg.n_points, noise_std**2
    b = ICLTask(cfg.d, N, noise_std, seed=cfg.seed + 50_000).sample(cfg.eval_prompts)
    model.eval()
    pred = model(b.x, b.y).double()
    mse = {"model": [], **{r: [] for r in REFERENCES}}
    spd = {r: [] for r in REFERENCES}
    ilwd = {r: [] for r in REFERENCES}
    ilwd_fit_r2 = []
    g = torch.Generator().manual_seed(cfg.seed + 1)
    P = min(cfg.ilwd_prompts, cfg.eval_prompts)
    for k in range(N):
        xc, yc, xq = b.x[:, :k], b.y[:, :k], b.x[:, k : k + 1]
        refs = _references(xc, yc, noise_var, cfg.gd_steps)
        y_q = b.y[:, k].double()
        mse["model"].append(float(((pred[:, k] - y_q) ** 2).mean() / d))
        for name, w in refs.items():
            p_ref = predict(w, xq.double()).squeeze(-1)
            mse[name].append(float(((p_ref - y_q) ** 2).mean() / d))
            spd[name].append(float(((pred[:, k] - p_ref) ** 2).mean() / d))
        # implicit weights: fit model predictions on 2d probe queries after the same k examples
        probes = torch.randn(P, 2 * d, d, generator=g)
        out = model.predict_query(xc[:P], yc[:P], probes).double()
        design = torch.cat([probes.double(), torch.ones(P, 2 * d, 1, dtype=torch.float64)], -1)
        coef = torch.linalg.lstsq(design, out.unsqueeze(-1)).solution.squeeze(-1)
        w_model = coef[:, :d]
        fitted = (design @ coef.unsqueeze(-1)).squeeze(-1)
        resid = ((out - fitted) ** 2).sum()
        ilwd_fit_r2.append(
            1 - float(resid / ((out - out.mean(1, keepdim=True)) ** 2).sum().clamp_min(1e-300))
        )
        for name, w in refs.items():
            ilwd[name].append(float(((w_model - w[:P]) ** 2).sum(-1).mean() / d))
    return {
        "mse": mse,
        "spd": spd,
        "ilwd": ilwd,
        "ilwd_linear_fit_r2": ilwd_fit_r2,
        "ols_theory": ols_error_by_k(d, N, noise_var),
    }


@torch.no_grad()
def _probes(cfg: Config, model: ICLTransformer, noise_std: float) -> dict[str, list[float]]:
    """R^2 per layer of ridge probes for ``X^T Y`` and ``w_OLS`` of the first ``k = N - 1`` examples.

    Two feature sets per layer: the hidden state at the last query token (which sees those ``k``
    examples), and the mean of the hidden states over the ``k`` example tokens (a sum such as
    ``X^T Y = sum_i y_i x_i`` is linear in that mean if each token holds its own ``y_i x_i``).
    """
    n_tr, n_te = cfg.probe_train, cfg.probe_test
    b = ICLTask(cfg.d, cfg.n_points, noise_std, seed=cfg.seed + 60_000).sample(n_tr + n_te)
    _, hidden = model.forward_tokens(interleave(b.x, b.y))
    k = cfg.n_points - 1
    xc, yc = b.x[:, :k].double(), b.y[:, :k].double()
    targets = {
        "XtY": (xc.transpose(1, 2) @ yc.unsqueeze(-1)).squeeze(-1),
        "w_ols": ols(xc, yc),
        # control: a target unrelated to the prompt, which no probe should decode
        "control_noise": torch.randn(n_tr + n_te, cfg.d, generator=torch.Generator().manual_seed(3)),
    }
    result: dict[str, list[float]] = {}
    for h in hidden:
        features = {
            "query": h[:, 2 * k].double(),  # the last query token
            "pooled": h[:, 1 : 2 * k : 2].double().mean(1),  # mean over the k example tokens
        }
        for fname, feats in features.items():
            for name, t in targets.items():
                key = f"{name}@{fname}"
                result.setdefault(key, []).append(
                    probe_r2(feats[:n_tr], t[:n_tr], feats[n_tr:], t[n_tr:], cfg.probe_lam)
                )
    return result


def check(cfg: Config) -> None:
    """Fail fast on an unknown mixer, before any file is written."""
    from linearlab.layers import list_mixers

    if cfg.mixer != "builtin" and cfg.mixer not in list_mixers():
        raise ValueError(
            f"mixer: unknown mixer {cfg.mixer!r}; choose 'builtin' or one of: {', '.join(list_mixers())}"
        )


def _train_and_evaluate(
    cfg_dict: dict[str, Any], noise_std: float, init: dict, folder: str
) -> dict[str, Any]:
    """One noise level, in a worker: train from the initial weights ``init``, save, evaluate, probe."""
    cfg = Config(**cfg_dict)
    torch.set_num_threads(1)  # tiny tensors: extra threads only add synchronisation
    model = _model(cfg)
    model.load_state_dict(init)
    run_dir = RunDir.create(NAME, folder)
    losses = _train(cfg, model, noise_std, RunDir.create(NAME, run_dir.path / f"sigma{noise_std:g}"))
    atomic_save_safetensors(run_dir.file(f"model_sigma{noise_std:g}.safetensors"), model.state_dict())
    ev = _evaluate(cfg, model, noise_std)
    ev["probe_r2"] = _probes(cfg, model, noise_std)
    ev["noise_std"] = noise_std
    ev["final_train_loss"] = sum(losses[-50:]) / len(losses[-50:])
    # closest algorithm: smallest mean SPD over k >= 1
    mean_spd = {r: sum(v[1:]) / max(1, len(v) - 1) for r, v in ev["spd"].items()}
    ev["mean_spd"] = mean_spd
    ev["closest"] = min(mean_spd, key=mean_spd.get)
    ev["losses"] = losses
    return ev


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    summary: dict[str, Any] = {"d": cfg.d, "n_points": cfg.n_points, "mixer": cfg.mixer, "runs": []}
    # every model is drawn from the seeded global RNG before any training, in this order, so each
    # noise level starts from the same weights whether the levels run one after the other or side by
    # side (the training loop reseeds itself, and data and evaluation use their own seeds)
    inits = [_model(cfg).state_dict() for _ in cfg.noise_stds]
    jobs = [
        (dataclasses.asdict(cfg), noise_std, init, str(run_dir.path))
        for noise_std, init in zip(cfg.noise_stds, inits)
    ]
    # the models move tiny tensors: one single-threaded worker per noise level beats one job on two
    # threads, whose spin-waiting costs several times the work itself on a shared machine
    workers = min(len(jobs), cfg.workers or default_workers())
    evs = run_jobs(_train_and_evaluate, jobs, workers, desc=NAME, steps=[cfg.steps] * len(jobs))
    curves = []
    for ev in evs:
        losses = ev.pop("losses")
        summary["runs"].append(ev)
        curves.append((ev["noise_std"], ev, losses))
    _plot(run_dir, curves)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, curves: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(curves), 4, figsize=(18, 4 * len(curves)), squeeze=False)
    for row, (noise_std, ev, _losses) in zip(axes, curves):
        ks = list(range(len(ev["mse"]["model"])))
        row[0].plot(ks, ev["mse"]["model"], "ko-", label="transformer")
        for r in REFERENCES:
            row[0].plot(ks, ev["mse"][r], ".--", label=r)
        theory = [(k, v) for k, v in zip(ks, ev["ols_theory"]) if v is not None]
        row[0].plot([k for k, _ in theory], [v for _, v in theory], "x", color="gray", label="OLS theory")
        row[0].set(title=f"sigma={noise_std}: test error / d", xlabel="in-context examples k", yscale="log")
        row[0].legend(fontsize=7)
        for ax, key in ((row[1], "spd"), (row[2], "ilwd")):
            for r in REFERENCES:
                ax.plot(ks[1:], ev[key][r][1:], ".-", label=r)
            ax.set(title=f"sigma={noise_std}: {key.upper()} to each algorithm", xlabel="k", yscale="log")
            ax.legend(fontsize=7)
        layers = list(range(len(ev["probe_r2"]["XtY@query"])))
        for name, vals in ev["probe_r2"].items():
            row[3].plot(layers, vals, "o-", label=name)
        row[3].set(
            title=f"sigma={noise_std}: probe R^2 per layer", xlabel="layer (0 = embedding)", ylim=(-0.1, 1.05)
        )
        row[3].legend(fontsize=7)
    run_dir.save_figure("icl_algorithms.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    lines = [f"icl-algorithms  d={s['d']} points={s['n_points']} mixer={s['mixer']}"]
    for ev in s["runs"]:
        lines.append(
            f"-- sigma={ev['noise_std']}  final train loss {fmt(ev['final_train_loss'])}; "
            f"closest algorithm by mean SPD: {ev['closest']}"
        )
        head = f"{'k':>3s} {'model':>7s} {'OLS th':>7s} " + " ".join(f"{r:>8s}" for r in REFERENCES)
        head += (
            " | SPD "
            + " ".join(f"{r:>8s}" for r in REFERENCES)
            + " | ILWD "
            + " ".join(f"{r:>8s}" for r in REFERENCES)
            + " | lin R2"
        )
        lines.append("   test error / d" + " " * 50 + "(all / d)")
        lines.append(head)
        for k in range(len(ev["mse"]["model"])):
            th = ev["ols_theory"][k]
            row = f"{k:>3d} {fmt(ev['mse']['model'][k], 3):>7s} {fmt(th, 3) if th is not None else '-':>7s} "
            row += " ".join(f"{fmt(ev['mse'][r][k], 3):>8s}" for r in REFERENCES)
            row += " |     " + " ".join(f"{fmt(ev['spd'][r][k], 3):>8s}" for r in REFERENCES)
            row += " |      " + " ".join(f"{fmt(ev['ilwd'][r][k], 3):>8s}" for r in REFERENCES)
            row += f" | {fmt(ev['ilwd_linear_fit_r2'][k], 3)}"
            lines.append(row)
        lines.append("mean SPD (k>=1): " + ", ".join(f"{r} {fmt(v, 3)}" for r, v in ev["mean_spd"].items()))
        for name, vals in ev["probe_r2"].items():
            lines.append(f"probe R^2 {name:>21s} per layer: " + " ".join(fmt(v, 3) for v in vals))
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Mean squared prediction difference (k >= 1) to each reference learner, per noise level."""
    return {
        f"sigma={ev['noise_std']:g} SPD to {name}": value
        for ev in summary.get("runs", [])
        for name, value in ev["mean_spd"].items()
    }


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="transformer ICL vs OLS / ridge / GD: SPD, ILWD and probes (Akyürek et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke, "faithful": _faithful},
    run=run,
    report=report,
    headline=headline,
    check=check,
    resume_may_change=("checkpoint_every", "workers"),
)


declare_paper(
    arxiv="2211.15661",
    short="ICL algorithms",
    title="What learning algorithm is in-context learning? Investigations with linear models",
    authors="Akyürek, Schuurmans, Andreas, Ma, Zhou",
    venue="ICLR 2023",
    area=ICL,
    status="implemented",
    objects=(
        "linearlab.models.icl.ICLTransformer",
        "linearlab.analysis.ols",
        "linearlab.analysis.ridge",
        "linearlab.analysis.gd",
        "linearlab.analysis.LinearProbe",
        "linearlab.analysis.ols_error_by_k",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.models.icl import ICLTransformer\n"
        "pred = ICLTransformer(d=5)(torch.randn(4, 11, 5), torch.randn(4, 11))  # pred[:, i] uses points < i"
    ),
    claim=(
        "Trained in-context learners on linear regression match exact least squares when noiseless and "
        "ridge with lambda = sigma^2 (Bayes-optimal) with noise, by prediction (SPD) and implicit weight "
        "(ILWD) differences; small models behave like GD; X^T Y and w_OLS can be probed from the hidden "
        "states."
    ),
)
