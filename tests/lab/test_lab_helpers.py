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


class _RecordingBar:
    """Stands in for tqdm: records every position the bar passes through."""

    seen: list[tuple[int, float]] = []

    def __init__(self, total, **kwargs):
        self.total, self.n = total, 0
        _RecordingBar.seen = []

    def update(self, k):
        import time

        self.n += k
        _RecordingBar.seen.append((self.n, time.time()))

    def close(self):
        pass


def _stepping_job(n_steps: int, pause: float) -> dict:
    import time

    from linearlab.lab.parallel import step_done

    for _ in range(n_steps):
        step_done()
    time.sleep(pause)  # the parent must show these steps before the job ends
    return {"steps": n_steps, "ended": time.time() if pause else 0.0}


def test_run_jobs_counts_steps_while_jobs_run(monkeypatch):
    import linearlab.lab.parallel as parallel

    monkeypatch.setattr(parallel, "tqdm", _RecordingBar)
    # in-process: the bar moves with every reported step, then tops up to the job's full count
    out = parallel.run_jobs(_stepping_job, [(3, 0.0), (2, 0.0)], workers=1, desc="t", steps=[4, 2])
    assert [r["steps"] for r in out] == [3, 2]
    positions = [n for n, _ in _RecordingBar.seen]
    assert positions[:3] == [1, 2, 3] and positions[-1] == 6
    # in worker processes: steps show up while the jobs are still running
    # (both jobs may report all their steps between two polls, so the test asks for a moving bar
    # before the first job ended rather than for an intermediate position)
    out = parallel.run_jobs(_stepping_job, [(3, 2.0), (3, 2.0)], workers=2, desc="t", steps=[3, 3])
    first_end = min(r["ended"] for r in out)
    assert _RecordingBar.seen[-1][0] == 6
    assert any(n > 0 and t < first_end for n, t in _RecordingBar.seen)


def test_step_done_outside_run_jobs_is_a_no_op_and_steps_must_match_jobs():
    from linearlab.lab.parallel import run_jobs, step_done

    step_done()
    step_done(5, None)  # the train loop's on_step(step, model) signature
    with pytest.raises(ValueError, match="steps"):
        run_jobs(_stepping_job, [(1, 0.0)], workers=1, desc="t", steps=[1, 2])
