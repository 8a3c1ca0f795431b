"""Run directories: where a run may start, and resumes that refuse to mix runs."""

import json

import pytest

from linearlab.runs import RunDir


def _start(path, config, resume=False, may_change=()):
    p = RunDir.check_start("demo", config, path, resume, may_change)
    return RunDir.start(p, {"recipe": "demo", "preset": "default", "overrides": [], "config": config}, resume)


def test_config_json_records_versions_commit_and_threads(tmp_path):
    run = _start(tmp_path / "r", {"steps": 3})
    stored = json.loads(run.file("config.json").read_text())
    assert stored["config"] == {"steps": 3} and stored["recipe"] == "demo"
    for key in ("linearlab_version", "torch_version", "python_version", "threads", "git_commit", "created"):
        assert key in stored
    assert stored["threads"] >= 1


def test_existing_runs_and_non_empty_folders_are_refused_without_resume(tmp_path):
    _start(tmp_path / "r", {"steps": 3})
    with pytest.raises(ValueError, match="already holds a run; pass --resume"):
        RunDir.check_start("demo", {"steps": 3}, tmp_path / "r", False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty and holds no run"):
        RunDir.check_start("demo", {"steps": 3}, tmp_path / "other", False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        RunDir.check_start("demo", {}, tmp_path / "file", False)
    # an empty folder is fine, and nothing is created by the check
    (tmp_path / "empty").mkdir()
    assert RunDir.check_start("demo", {}, tmp_path / "empty", False) == tmp_path / "empty"
    assert not (tmp_path / "new").exists() and RunDir.check_start("demo", {}, tmp_path / "new", False)
    assert not (tmp_path / "new").exists()


def test_resume_refuses_a_different_config_missing_runs_and_other_recipes(tmp_path):
    run = _start(tmp_path / "r", {"steps": 3, "model": {"width": 8}, "workers": 1})
    with pytest.raises(ValueError, match=r"model.width: stored 8, now 16; steps: stored 3, now 4"):
        RunDir.check_start("demo", {"steps": 4, "model": {"width": 16}, "workers": 1}, run.path, True)
    # fields that cannot change results may differ, and the change is recorded
    assert RunDir.check_start(
        "demo", {"steps": 3, "model": {"width": 8}, "workers": 2}, run.path, True, ["workers"]
    )
    with pytest.raises(ValueError, match="a resume may change only: workers"):
        RunDir.check_start(
            "demo", {"steps": 5, "model": {"width": 8}, "workers": 2}, run.path, True, ["workers"]
        )
    with pytest.raises(ValueError, match="holds a run of 'demo', not 'other'"):
        RunDir.check_start("other", {"steps": 3}, run.path, True)
    with pytest.raises(ValueError, match="no run to continue"):
        RunDir.check_start("demo", {}, tmp_path / "absent", True)
    with pytest.raises(ValueError, match="give the run directory"):
        RunDir.check_start("demo", {}, None, True)
    run.file("config.json").write_text("{trunc")
    with pytest.raises(ValueError, match="is not valid JSON"):
        RunDir.check_start("demo", {}, run.path, True)


def test_resume_appends_to_the_record_instead_of_overwriting_it(tmp_path):
    run = _start(tmp_path / "r", {"steps": 3})
    created = json.loads(run.file("config.json").read_text())["created"]
    _start(run.path, {"steps": 3}, resume=True)
    stored = json.loads(run.file("config.json").read_text())
    assert stored["created"] == created and len(stored["resumed"]) == 1


def test_cached_json_computes_once_and_reads_back_after_an_interruption(tmp_path):
    run_dir = RunDir(tmp_path)
    calls = []

    def part() -> dict:
        calls.append(1)
        return {"r2": [0.5, 0.25]}

    assert run_dir.cached_json("alignment", part) == {"r2": [0.5, 0.25]}
    # a second run of the same directory (e.g. --resume after a crash) reads the part back
    assert RunDir(tmp_path).cached_json("alignment", part) == {"r2": [0.5, 0.25]} and len(calls) == 1

    def broken() -> dict:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dir.cached_json("other", broken)
    assert not (tmp_path / "other.json").exists()  # nothing half-written is taken for a result
