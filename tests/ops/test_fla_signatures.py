"""linearlab's op signatures against fla 0.6's, from the checked-in ``fla_0_6_signatures.json``.

The JSON is written by ``dump_fla_signatures.py`` from the fla-core wheel (fla is never imported).
For every op fla exports, linearlab's op must take fla's parameters with the same names, in the
same order, with the same defaults, all passable by position or keyword (so calls written for fla
bind the same way); linearlab's own extras (``chunk_size`` and the like) may only follow, keyword-
only. fla's ``**kwargs`` is not mirrored: an unknown argument is an error here, never ignored.

The naive references follow the same rule except for the departures listed (and documented) in
``REFERENCE_DEPARTURES``; each listed departure must still exist, so the list cannot go stale.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from linearlab import ops

SIGNATURES = json.loads((Path(__file__).parent / "fla_0_6_signatures.json").read_text())

#: naive references whose signature departs from fla's on purpose, and why
REFERENCE_DEPARTURES = {
    # fla's reference alone takes (beta, g); every form here takes (g, beta), like fla's chunk and
    # recurrent ops, and also takes use_qk_l2norm_in_kernel and cu_seqlens (README "Ops")
    "naive_recurrent_gated_delta_rule": "(q, k, v, g, beta, ...)",
    # fla's reference takes a required g only and defaults output_final_state to True; here it is
    # the ground truth for both g and g_gamma, with chunk_simple_gla's order and defaults
    "naive_recurrent_simple_gla": "(q, k, v, g=None, g_gamma=None, ...)",
}

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _ours(fn) -> tuple[list[list], list[inspect.Parameter]]:
    """``([[name, default repr or None], ...] of the positional parameters, the other parameters)``."""
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in _POSITIONAL]
    rest = [p for p in params if p.kind not in _POSITIONAL]
    pairs = [[p.name, None if p.default is inspect.Parameter.empty else repr(p.default)] for p in positional]
    return pairs, rest


def _mismatch(name: str, fla: dict) -> str | None:
    """Why ``ops.<name>`` does not take fla's parameters as fla does (None if it does)."""
    ours, rest = _ours(getattr(ops, name))
    theirs = fla["params"]
    if ours != theirs:
        return f"{name}: positional parameters\n  linearlab {ours}\n  fla       {theirs}"
    extras = [p for p in rest if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    if extras:
        return f"{name}: extras must be keyword-only, got {[str(p) for p in extras]}"
    kw_only = {p.name: p for p in rest}
    for pname, default in fla["keyword_only"]:
        p = kw_only.get(pname)
        if p is None or repr(p.default) != str(default):
            return f"{name}: fla's keyword-only {pname}={default} is missing or differs: {p}"
    return None


def test_the_checked_in_copy_is_fla_0_6():
    assert SIGNATURES["fla_core_version"] == "0.6.0"
    assert len(SIGNATURES["public"]) == 14 and len(SIGNATURES["reference"]) == 4


@pytest.mark.parametrize("name", sorted(SIGNATURES["public"]))
def test_public_op_takes_flas_parameters(name):
    problem = _mismatch(name, SIGNATURES["public"][name])
    assert problem is None, problem


@pytest.mark.parametrize("name", sorted(SIGNATURES["reference"]))
def test_reference_op_takes_flas_parameters_or_is_a_listed_departure(name):
    problem = _mismatch(name, SIGNATURES["reference"][name])
    if name in REFERENCE_DEPARTURES:
        assert problem is not None, f"{name} now matches fla: remove it from REFERENCE_DEPARTURES"
    else:
        assert problem is None, problem


def test_no_op_swallows_unknown_arguments():
    """fla's ``**kwargs`` silently drops a misspelt option; linearlab's ops raise TypeError."""
    for name in [*SIGNATURES["public"], *SIGNATURES["reference"]]:
        kinds = [p.kind for p in inspect.signature(getattr(ops, name)).parameters.values()]
        assert inspect.Parameter.VAR_KEYWORD not in kinds, name
        assert inspect.Parameter.VAR_POSITIONAL not in kinds, name


def test_a_drifted_signature_is_reported():
    """The check is live: a reordered or re-defaulted copy of fla's signature fails it."""
    fla = SIGNATURES["public"]["chunk_linear_attn"]
    swapped = dict(fla, params=[*fla["params"][:-2], fla["params"][-1], fla["params"][-2]])
    assert "positional parameters" in _mismatch("chunk_linear_attn", swapped)
    redefaulted = dict(
        fla, params=[p if p[0] != "normalize" else ["normalize", "False"] for p in fla["params"]]
    )
    assert "positional parameters" in _mismatch("chunk_linear_attn", redefaulted)
