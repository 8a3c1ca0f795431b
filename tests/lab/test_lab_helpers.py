"""The lab's shared helpers: parallel jobs, tables, mixer variants."""

import pytest

from linearlab.lab.mixer_variants import MIXER_VARIANTS, variant
from linearlab.lab.parallel import run_jobs
from linearlab.lab.tables import fmt, format_table


def test_run_jobs_starts_dear_jobs_first_and_keeps_result_order():
    started = []

    def job(name):
        started.append(name)
        return {"name": name}

    out = run_jobs(job, [("a",), ("b",), ("c",)], workers=1, desc="t", costs=[1.0, 3.0, 2.0])
    assert started == ["b", "c", "a"]
    assert [r["name"] for r in out] == ["a", "b", "c"]


def test_format_table_aligns_columns_and_rounds_floats():
    text = format_table(["mixer", "acc"], [["gla", 0.98765], ["softmax", 1.0]])
    assert text.splitlines() == ["mixer      acc", "-------  -----", "gla      0.988", "softmax  1.000"]
    assert (fmt(float("nan")), fmt(float("inf")), fmt(0.123456)) == ("nan", "inf", "0.1235")


def test_every_mixer_variant_names_a_registered_mixer():
    from linearlab.layers import create_mixer

    for label in MIXER_VARIANTS:
        name, kwargs = variant(label, num_heads=2)
        y, _ = create_mixer(name, d_model=16, **kwargs)(__import__("torch").randn(1, 5, 16))
        assert y.shape == (1, 5, 16), label
    with pytest.raises(KeyError):
        variant("nope")
