"""linearlab.analysis: read-only tools over models and closed-form theory to compare them with.

- ``probes``: ridge probes of hidden states, held-out R^2;
- ``icl_learners``: reference in-context learners (OLS, ridge, Bayes ridge, GD) on the same prompts;
- ``icl_theory``: one-step-GD optima, OLS error per context size, Marchenko-Pastur GD rates;
- ``deep_linear_theory``: Saxe et al.'s teacher, mode strengths and closed-form learning dynamics;
- ``linear_scope``: a ReLU / pooling CNN as the affine map A(x)x + b(x) it computes at x;
- ``mode_connectivity``: loss barriers between two networks (whole and per layer) and their quadratic
  prediction; ``lp_ft``: linear probing vs fine-tuning, head norms, the NTK split, calibration;
  ``projection_head``: the spectral contrastive loss and per-feature weights.

The tools beyond the first four modules load on first use (``linearlab.analysis.LinearScope``), so
importing the package stays cheap.
"""

import importlib

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

_LAZY = {
    "LinearScope": "linear_scope",
    "interpolation_barrier": "mode_connectivity",
    "quadratic_form": "mode_connectivity",
    "layer_blocks": "mode_connectivity",
    "spawn_children": "mode_connectivity",
    "ProbedModel": "lp_ft",
    "linear_probe": "lp_ft",
    "finetune": "lp_ft",
    "feature_change": "lp_ft",
    "ntk_split": "lp_ft",
    "expected_calibration_error": "lp_ft",
    "fit_temperature": "lp_ft",
    "spectral_contrastive_loss": "projection_head",
    "feature_pairs": "projection_head",
    "feature_weights": "projection_head",
    "balanced_init_": "projection_head",
    "run_with_cache": "hooks",
    "run_with_hooks": "hooks",
    "hook_names": "hooks",
    "observable_feature_vectors": "observable_propagation",
    "coupling_coefficient": "observable_propagation",
    "TopKSAE": "sae",
    "train_sae": "sae",
    "sae_dark_matter": "sae_dark_matter",
    "readout_geometry": "readout_geometry",
    "refit_rows": "readout_geometry",
    "layer_contributions": "depth_usage",
    "skip_effects": "depth_usage",
    "depth_alignment": "depth_usage",
    "output_signature": "output_signatures",
    "LOSNet": "output_signatures",
    "select_response_method": "response_selection",
    "self_aligned_nll": "response_selection",
    "own_responses": "response_selection",
    "lim_scores": "layer_importance",
    "zd_scores": "layer_importance",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"linearlab.analysis.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'linearlab.analysis' has no attribute {name!r}")
