"""linearlab.analysis: read-only tools over models and closed-form theory to compare them with.

- ``probes``: ridge probes of hidden states, held-out R^2;
- ``icl_learners``: reference in-context learners (OLS, ridge, Bayes ridge, GD) on the same prompts;
- ``icl_theory``: one-step-GD optima, OLS error per context size, Marchenko-Pastur GD rates;
- ``deep_linear_theory``: Saxe et al.'s teacher, mode strengths and closed-form learning dynamics.
"""

from linearlab.analysis.deep_linear_theory import (
    deep_half_time,
    half_time,
    half_time_index,
    mode_strengths,
    strength_closed_form,
    teacher,
)
from linearlab.analysis.icl_learners import bayes_ridge, gd, ols, predict, ridge
from linearlab.analysis.icl_theory import (
    marchenko_pastur_gd_rates,
    ols_error_by_k,
    one_step_mse,
    optimal_one_step_lr,
    optimal_one_step_mse,
    optimal_preconditioner,
)
from linearlab.analysis.probes import LinearProbe, probe_r2, r2_score

__all__ = [
    "LinearProbe",
    "bayes_ridge",
    "deep_half_time",
    "gd",
    "half_time",
    "half_time_index",
    "marchenko_pastur_gd_rates",
    "mode_strengths",
    "ols",
    "ols_error_by_k",
    "one_step_mse",
    "optimal_one_step_lr",
    "optimal_one_step_mse",
    "optimal_preconditioner",
    "predict",
    "probe_r2",
    "r2_score",
    "ridge",
    "strength_closed_form",
    "teacher",
]
