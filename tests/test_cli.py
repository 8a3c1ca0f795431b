import json
import subprocess
import sys

from linearlab.cli import main
from linearlab.config import apply_overrides
from linearlab.io import atomic_write_json, read_jsonl


def test_unknown_recipe_names_known_ones(capsys):
    assert main(["run", "no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert "unknown recipe 'no-such-recipe'" in err


def test_unknown_bench(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_report_rejects_missing_dir(tmp_path):
    missing = tmp_path / "absent"
    try:
        main(["report", str(missing)])
    except FileNotFoundError as err:
        assert "absent" in str(err)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "linearlab.cli", "ls", "recipes"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_overrides_nested_dataclass():
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        d_model: int = 8
        lr: float = 1e-3
        flag: bool = False

    @dataclass
    class Outer:
        model: Inner = field(default_factory=Inner)
        name: str = "x"

    cfg = apply_overrides(Outer(), ["model.d_model=128", "model.lr=3e-4", "model.flag=true", "name=y"])
    assert (cfg.model.d_model, cfg.model.lr, cfg.model.flag, cfg.name) == (128, 3e-4, True, "y")
    for bad, msg in (("model.nope=1", "no field 'nope'"), ("model.d_model", "expected key=value")):
        try:
            apply_overrides(Outer(), [bad])
        except ValueError as err:
            assert msg in str(err)
        else:
            raise AssertionError(bad)


def test_atomic_json_and_truncated_jsonl(tmp_path):
    p = atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    assert p.stat().st_mode & 0o044, "written files must be readable by others, like a plain open()"
    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]
