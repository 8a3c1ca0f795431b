"""Recipe ``moe-temperature``: MLE rates of a softmax Gaussian MoE with a linear vs an activation gate.

Nguyen, Akbarian, Ho (arXiv 2401.13875): with the dense-to-sparse gate ``softmax((beta_1 x +
beta_0) / tau)`` the gate parameters and the temperature are tied by the PDE ``beta_1 d/dbeta_1 +
beta_0 d/dbeta_0 + tau d/dtau = 0`` and maximum likelihood estimates them more slowly than any
polynomial rate; an activation inside the gate, ``softmax(tanh(beta_1 x + beta_0) / tau)``
(:class:`~linearlab.layers.routers.ActivationD2SGate`), restores ``O(n^-1/2)``.

Simulation (1-D, two experts; expert 2's gate is fixed at 0, the usual identifiability
convention): ``y | x ~ sum_i G_i(x) N(a_i x + b_i, nu_i)`` with ``x ~ N(0, 1)``. For each gate and
each ``n`` in a log grid, ``reps`` data sets are drawn from the model with that gate and fitted by
maximum likelihood (scipy L-BFGS-B on the exact negative log-likelihood with autograd gradients,
``restarts`` starts around the truth, best likelihood kept) over all nine parameters
``(beta_1, beta_0, tau, a_1, b_1, a_2, b_2, nu_1, nu_2)``. The error is the sum of absolute
parameter errors (no label switching: the starts are near the truth), split into the gate part
``(beta, tau)`` and the expert part ``(a, b, nu)``, and the error of ``beta / tau`` (all that
the linear gate's likelihood depends on: scaling ``beta`` and ``tau`` together changes nothing, the
extreme form of the PDE, so its raw gate parameters cannot converge); the slope of log median error vs log n is
fitted by least squares. MLE over a simulation needs no gradient-training loop, so it runs
through scipy.

    linearlab run moe-temperature [--smoke] [--set reps=20 --set ns=100,1000,10000]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from linearlab.config import require_at_least_one
from linearlab.lab.tables import fmt, format_table
from linearlab.layers.routers import ActivationD2SGate
from linearlab.recipes import Recipe
from linearlab.runs import RunDir

NAME = "moe-temperature"
GATES = ("identity", "tanh")
PARAMS = ("beta1", "beta0", "tau", "a1", "b1", "a2", "b2", "nu1", "nu2")
KINDS = ("error", "gate_error", "expert_error", "ratio_error")


@dataclass
class Config:
    """``linearlab run moe-temperature``; override with ``--set name=value``."""

    ns: list[int] = field(default_factory=lambda: [100, 316, 1000, 3162, 10000, 31623, 100000])
    reps: int = 12
    restarts: int = 2
    gates: list[str] = field(default_factory=lambda: list(GATES))
    # true parameters (beta1, beta0, tau, a1, b1, a2, b2, nu1, nu2); nu are variances
    truth: list[float] = field(default_factory=lambda: [1.5, 0.5, 0.5, -1.0, 0.5, 1.5, -0.5, 0.3, 0.3])
    init_noise: float = 0.3  # std of the starts around the truth (log scale for tau and nu)
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ns or any(n < 10 for n in self.ns):
            raise ValueError(f"ns: expected sample sizes >= 10, got {self.ns}")
        require_at_least_one(self, "reps", "restarts")
        bad = [g for g in self.gates if g not in GATES]
        if bad or not self.gates:
            raise ValueError(f"gates: expected names from {list(GATES)}, got {self.gates}")
        if len(self.truth) != len(PARAMS) or self.truth[2] <= 0 or min(self.truth[7:]) <= 0:
            raise ValueError(
                f"truth: expected {len(PARAMS)} values {PARAMS} with tau, nu1, nu2 > 0, got {self.truth}"
            )
        if not self.init_noise > 0:
            raise ValueError(f"init_noise: must be > 0, got {self.init_noise}")


def _smoke() -> Config:
    return Config(ns=[200, 2000, 20000], reps=3, restarts=1)


def _gate(activation: str, beta1: torch.Tensor, beta0: torch.Tensor, tau: torch.Tensor) -> ActivationD2SGate:
    """The two-expert gate with expert 2's weight and bias fixed at 0 (float64; values, no grad)."""
    gate = ActivationD2SGate(1, 2, activation=activation, tau=1.0).double()
    with torch.no_grad():
        gate.proj.weight.copy_(torch.stack([beta1, torch.zeros_like(beta1)]).reshape(2, 1))
        gate.proj.bias.copy_(torch.stack([beta0, torch.zeros_like(beta0)]))
        gate.log_tau.copy_(tau.log())
    return gate


def gate_probs(activation: str, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``G(x): [n, 2]`` for parameters ``theta = (beta1, beta0, log tau, ...)`` (differentiable in theta)."""
    zero = torch.zeros((), dtype=theta.dtype)
    gate = _gate(activation, theta[0].detach(), theta[1].detach(), theta[2].detach().exp())
    params = {
        "proj.weight": torch.stack([theta[0], zero]).reshape(2, 1),
        "proj.bias": torch.stack([theta[1], zero]),
        "log_tau": theta[2],
    }
    return torch.func.functional_call(gate, params, (x.unsqueeze(-1),))


def _unconstrained(p: list[float]) -> torch.Tensor:
    """(beta1, beta0, tau, a1, b1, a2, b2, nu1, nu2) -> the same with log tau, log nu."""
    q = list(p)
    q[2], q[7], q[8] = math.log(q[2]), math.log(q[7]), math.log(q[8])
    return torch.tensor(q, dtype=torch.float64)


def _natural(theta: np.ndarray) -> np.ndarray:
    out = theta.copy()
    out[[2, 7, 8]] = np.exp(out[[2, 7, 8]])
    return out


def nll(activation: str, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``y | x`` under the MoE with unconstrained parameters ``theta``."""
    g = gate_probs(activation, theta, x)
    a, b = theta[[3, 5]], theta[[4, 6]]
    var = theta[[7, 8]].exp()
    mean = x.unsqueeze(-1) * a + b
    log_normal = -0.5 * ((y.unsqueeze(-1) - mean) ** 2 / var + var.log() + math.log(2 * math.pi))
    return -torch.logsumexp(g.clamp_min(1e-300).log() + log_normal, -1).mean()


def sample(
    activation: str, truth: list[float], n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` draws ``(x, y)`` from the MoE with the given gate and true parameters."""
    theta = _unconstrained(truth)
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        g = gate_probs(activation, theta, x)
    expert = torch.multinomial(g, 1, generator=generator).squeeze(-1)
    a, b, var = theta[[3, 5]], theta[[4, 6]], theta[[7, 8]].exp()
    noise = torch.randn(n, generator=generator, dtype=torch.float64)
    y = a[expert] * x + b[expert] + var[expert].sqrt() * noise
    return x, y


def fit(activation: str, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor) -> tuple[np.ndarray, float]:
    """MLE by L-BFGS-B from ``start`` (unconstrained); returns (natural parameters, final NLL)."""
    from scipy.optimize import minimize

    def f(v: np.ndarray) -> tuple[float, np.ndarray]:
        theta = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        loss = nll(activation, theta, x, y)
        (grad,) = torch.autograd.grad(loss, theta)
        return float(loss.detach()), grad.numpy()

    res = minimize(f, start.numpy(), jac=True, method="L-BFGS-B", options={"maxiter": 2000, "gtol": 1e-10})
    return _natural(res.x), float(res.fun)


def _job(cfg: Config, activation: str, n: int, rep: int) -> dict[str, Any]:
    seed = cfg.seed * 1_000_003 + GATES.index(activation) * 100_003 + rep * 1009 + n
    g = torch.Generator().manual_seed(seed)
    x, y = sample(activation, cfg.truth, n, g)
    best = None
    for _ in range(cfg.restarts):
        start = _unconstrained(cfg.truth) + cfg.init_noise * torch.randn(
            len(PARAMS), generator=g, dtype=torch.float64
        )
        est, value = fit(activation, x, y, start)
        if best is None or value < best[1]:
            best = (est, value)
    est = best[0]
    err = np.abs(est - np.array(cfg.truth))
    gate_err = float(err[:3].sum())
    # what the linear gate identifies: beta / tau (scaling beta and tau together changes nothing)
    t = np.array(cfg.truth)
    ratio_err = float(abs(est[0] / est[2] - t[0] / t[2]) + abs(est[1] / est[2] - t[1] / t[2]))
    return {
        "gate": activation,
        "n": n,
        "rep": rep,
        "nll": best[1],
        "estimate": est.tolist(),
        "gate_error": gate_err,
        "expert_error": float(err[3:].sum()),
        "ratio_error": ratio_err,
        "error": float(err.sum()),
    }


def slope(ns: list[int], values: list[float]) -> float:
    """Least-squares slope of ``log value`` against ``log n``."""
    lx, ly = np.log(np.asarray(ns, float)), np.log(np.asarray(values, float))
    return float(np.polyfit(lx, ly, 1)[0])


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(1)
    done = {(r["gate"], r["n"], r["rep"]): r for r in run_dir.read_metrics("fits.jsonl")}
    for activation in cfg.gates:
        for n in cfg.ns:
            for rep in range(cfg.reps):
                if (activation, n, rep) not in done:
                    row = _job(cfg, activation, n, rep)
                    run_dir.log_metrics(row, "fits.jsonl")
                    done[(activation, n, rep)] = row
    summary = _summarise(cfg, done)
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _summarise(cfg: Config, done: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"ns": cfg.ns, "reps": cfg.reps, "truth": cfg.truth, "gates": {}}
    for activation in cfg.gates:
        rows = {}
        for kind in KINDS:
            rows[kind] = [
                float(np.median([done[(activation, n, r)][kind] for r in range(cfg.reps)])) for n in cfg.ns
            ]
        out["gates"][activation] = {
            "median": rows,
            "slope": {kind: slope(cfg.ns, vals) for kind, vals in rows.items()},
        }
    return out


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(20, 4.5))
    ns = np.asarray(s["ns"], float)
    for ax, kind in zip(axes, KINDS):
        for gate, res in s["gates"].items():
            label = "linear gate" if gate == "identity" else f"{gate} gate"
            ax.loglog(ns, res["median"][kind], "o-", label=f"{label} (slope {res['slope'][kind]:.2f})")
        ref = s["gates"][next(iter(s["gates"]))]["median"][kind][0]
        ax.loglog(ns, ref * (ns / ns[0]) ** -0.5, "k:", label="n^-1/2")
        ax.set(title=f"median {kind.replace('_', ' ')} vs n", xlabel="n")
        ax.legend(fontsize=8)
    run_dir.save_figure("moe_temperature.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    rows = []
    for gate, res in s["gates"].items():
        label = (
            "linear (softmax((b1 x + b0)/tau))"
            if gate == "identity"
            else f"{gate} (softmax({gate}(b1 x + b0)/tau))"
        )
        paper = "slower than any polynomial (<= 1/log n)" if gate == "identity" else "~ -0.5 (n^-1/2)"
        rows.append(
            [label, fmt(res["slope"]["error"], 3), fmt(res["slope"]["gate_error"], 3),
             fmt(res["slope"]["expert_error"], 3), fmt(res["slope"]["ratio_error"], 3), paper]
        )  # fmt: skip
    lines = [
        f"moe-temperature: slope of log median parameter error vs log n (n = {s['ns'][0]}..{s['ns'][-1]}, "
        f"{s['reps']} reps)",
        format_table(["gate", "all", "gate (b, tau)", "experts (a, b, nu)", "b / tau", "paper"], rows),
    ]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Fitted slopes of the median total, gate and expert errors per gate."""
    out = {}
    for gate, res in summary["gates"].items():
        for kind, value in res["slope"].items():
            out[f"{gate} gate {kind} slope"] = value
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="Gaussian MoE MLE: parameter error vs n, linear tempered gate vs activation gate (Nguyen et al.)",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)
